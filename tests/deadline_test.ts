import assert from "node:assert/strict";
import {
  deadline,
  DeadlineError,
  settlesWithin,
} from "../lib/util/deadline.ts";

Deno.test("deadline() resolves with the promise's value when it comes first", async () => {
  assert.equal(await deadline(Promise.resolve(7), 10_000, "slow"), 7);
});

Deno.test("deadline() passes the promise's rejection on", async () => {
  await assert.rejects(
    deadline(Promise.reject(new RangeError("bad")), 10_000, "slow"),
    RangeError,
  );
});

Deno.test("deadline() rejects with a DeadlineError carrying the message when the time is up", async () => {
  await assert.rejects(
    deadline(new Promise(() => {}), 1, "broker did not answer"),
    (error: Error) =>
      error instanceof DeadlineError &&
      error.message === "broker did not answer",
  );
});

Deno.test("deadline() rejects with the signal's reason on abort", async () => {
  const abort = new AbortController();
  const waiting = deadline(new Promise(() => {}), 10_000, "slow", {
    signal: abort.signal,
  });
  abort.abort(new TypeError("stopped"));
  await assert.rejects(waiting, TypeError);
  await assert.rejects(
    deadline(Promise.resolve(1), 10_000, "slow", { signal: abort.signal }),
    TypeError,
  );
});

Deno.test("settlesWithin() says whether the promise settled in time, never rejecting", async () => {
  assert.equal(await settlesWithin(Promise.resolve(), 10_000), true);
  assert.equal(
    await settlesWithin(Promise.reject(new Error("x")), 10_000),
    true,
  );
  assert.equal(await settlesWithin(new Promise(() => {}), 1), false);
});
