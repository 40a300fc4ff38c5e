import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import fc from "fast-check";
import { Inbox, type InboxItem } from "../lib/mqtt/inbox.ts";
import type { InboundMessage } from "../lib/mqtt/size_guard.ts";

/** A message whose payload is `bytes` bytes, each `fill`. */
function message(bytes: number, fill: number, packetId = 0): InboundMessage {
  return {
    topic: `t/${packetId}`,
    payload: new Uint8Array(bytes).fill(fill & 0xff),
    qos: packetId > 0 ? 1 : 0,
    packetId,
  };
}

/** An inbox that records what it hands over (payloads copied out: views are valid only during the call). */
function recording(
  capacityBytes: number,
  sliceMs?: number,
  shed: {
    overloadBytes?: number;
    overloadItems?: number;
    shedOverBytes?: number;
  } = {},
) {
  const handled: { kind: string; topic: string; payload: number[] }[] = [];
  const errors: unknown[] = [];
  let handledAll = Promise.withResolvers<void>();
  let expected = 0;
  const inbox = new Inbox({
    capacityBytes,
    ...(sliceMs === undefined ? {} : { sliceMs }),
    ...shed,
    handle: (item: InboxItem) => {
      handled.push({
        kind: item.kind,
        topic: item.message.topic,
        payload: item.kind === "message" ? [...item.message.payload] : [],
      });
      if (handled.length === expected) handledAll.resolve();
    },
    onError: (error) => errors.push(error),
  });
  return {
    inbox,
    handled,
    errors,
    /** Resolves once `count` items in all were handled. */
    until(count: number): Promise<void> {
      expected = count;
      handledAll = Promise.withResolvers<void>();
      if (handled.length >= count) handledAll.resolve();
      return handledAll.promise;
    },
  };
}

Deno.test("Inbox: hands messages and oversized reports over in order, each payload a copy made when it was put", async () => {
  const { inbox, handled, until } = recording(1024);
  const read = new Uint8Array(8).fill(1);
  inbox.put({ topic: "a", payload: read, qos: 0, packetId: 0 });
  read.fill(9); // the read buffer is reused at once
  inbox.putOversized({ topic: "big", bytes: 1 << 20, qos: 1, packetId: 7 });
  inbox.put(message(3, 2, 8));
  assert.equal(inbox.size, 3);
  inbox.kick();
  await until(3);
  assert.deepEqual(handled, [
    { kind: "message", topic: "a", payload: [1, 1, 1, 1, 1, 1, 1, 1] },
    { kind: "oversized", topic: "big", payload: [] },
    { kind: "message", topic: "t/8", payload: [2, 2, 2] },
  ]);
  assert.equal(inbox.size, 0);
});

Deno.test("Inbox: any mix of sizes, put while earlier ones are still being handled, comes out whole and in order (ring wrap, heap copies)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          bytes: fc.integer({ min: 0, max: 300 }),
          // Event loop turns before the next put: with slices of 0 ms the
          // inbox hands one message over per turn.
          turns: fc.integer({ min: 0, max: 3 }),
        }),
        { minLength: 1, maxLength: 60 },
      ),
      fc.integer({ min: 64, max: 700 }),
      async (steps, capacity) => {
        const { inbox, handled, until } = recording(capacity, 0, {
          overloadBytes: Infinity,
          overloadItems: Infinity,
        });
        steps.forEach((step, i) => inbox.put(message(step.bytes, i, i)));
        // Puts and handling interleaved: the same steps again, now while
        // the first ones are in the ring.
        let put = steps.length;
        inbox.kick();
        for (const step of steps) {
          inbox.put(message(step.bytes, put, put));
          put++;
          inbox.kick();
          for (let t = 0; t < step.turns; t++) {
            await new Promise((r) => setImmediate(r));
          }
        }
        await until(put);
        assert.equal(handled.length, put);
        handled.forEach((item, i) => {
          assert.equal(item.topic, `t/${i}`);
          assert.deepEqual(
            item.payload,
            new Array(steps[i % steps.length]!.bytes).fill(i & 0xff),
          );
        });
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("Inbox: full past its capacity; room() resolves once handling brought it to half", async () => {
  const { inbox, until } = recording(100, undefined, {
    overloadBytes: Infinity,
    overloadItems: Infinity,
  });
  for (let i = 0; i < 4; i++) inbox.put(message(30, i));
  assert.equal(inbox.full, true);
  const room = inbox.room();
  let roomy = false;
  room.then(() => roomy = true);
  await Promise.resolve();
  assert.equal(roomy, false, "no room before anything is handled");
  inbox.kick();
  await until(4);
  await room;
  assert.equal(inbox.full, false);
  assert.equal(
    await Promise.race([inbox.room().then(() => "at once")]),
    "at once",
  );
});

Deno.test("Inbox: handling a long queue gives the event loop turns before it is done", async () => {
  const ran: number[] = [];
  const inbox = new Inbox({
    capacityBytes: 1 << 20,
    sliceMs: 0.5,
    handle: () => {
      // About 0.05 ms of work per message: 400 of them span many slices.
      const until = performance.now() + 0.05;
      while (performance.now() < until) { /* busy */ }
      ran.push(0);
    },
    onError: (error) => {
      throw error;
    },
  });
  for (let i = 0; i < 400; i++) inbox.put(message(10, i));
  let turnAt = -1;
  setImmediate(() => turnAt = ran.length);
  inbox.kick();
  assert.ok(ran.length < 400, "handling runs in slices, not all at once");
  while (ran.length < 400) await new Promise((r) => setImmediate(r));
  assert.ok(
    turnAt >= 0 && turnAt < 400,
    `the event loop had a turn after ${turnAt} of 400 messages`,
  );
});

Deno.test("Inbox: close() releases a waiting reader and takes nothing more, but what is queued is still handed over", async () => {
  const { inbox, handled, until } = recording(10, undefined, {
    overloadBytes: Infinity,
    overloadItems: Infinity,
  });
  inbox.put(message(20, 1));
  inbox.put(message(20, 2));
  const room = inbox.room();
  inbox.close();
  await room;
  inbox.put(message(20, 3));
  inbox.putOversized({ topic: "late", bytes: 1 << 20, qos: 0, packetId: 0 });
  await until(2);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(handled.map((h) => h.payload[0]), [1, 2]);
  assert.equal(inbox.size, 0);
  assert.equal(inbox.full, false);
});

Deno.test("Inbox: a throwing handler is reported once, and the inbox runs again on the next kick", async () => {
  const errors: unknown[] = [];
  const seen: string[] = [];
  const failed = Promise.withResolvers<void>();
  const inbox = new Inbox({
    capacityBytes: 1024,
    handle: (item) => {
      seen.push(item.message.topic);
      if (item.message.topic === "t/1") throw new Error("handler broke");
    },
    onError: (error) => {
      errors.push(error);
      failed.resolve();
    },
  });
  inbox.put(message(1, 0, 1));
  inbox.put(message(1, 0, 2));
  inbox.kick();
  await failed.promise;
  assert.deepEqual(errors.map(String), ["Error: handler broke"]);
  inbox.kick();
  while (seen.length < 2) await new Promise((r) => setImmediate(r));
  assert.deepEqual(seen, ["t/1", "t/2"]);
});

Deno.test("Inbox: under overload a message over the shedding size is reported in its place, not queued; small ones still are", async () => {
  const { inbox, handled, until } = recording(1000, undefined, {
    overloadBytes: 100,
    overloadItems: Infinity,
    shedOverBytes: 40,
  });
  inbox.put(message(50, 1, 1)); // not overloaded yet: queued
  inbox.put(message(60, 2, 2)); // 50 queued: still below 100
  inbox.put(message(41, 3, 3)); // 110 queued: shed
  inbox.put(message(40, 4, 4)); // small enough: queued
  inbox.put(message(400, 5, 5)); // shed
  assert.equal(inbox.size, 5);
  inbox.kick();
  await until(5);
  assert.deepEqual(
    handled.map((h) => [h.kind, h.topic, h.payload.length]),
    [
      ["message", "t/1", 50],
      ["message", "t/2", 60],
      ["shed", "t/3", 0],
      ["message", "t/4", 40],
      ["shed", "t/5", 0],
    ],
  );
  // Once handled, nothing is overloaded: a large message is queued again.
  inbox.put(message(400, 6, 6));
  inbox.kick();
  await until(6);
  assert.deepEqual(handled.at(-1)?.kind, "message");
});

Deno.test("Inbox: by default, overload starts at 64 messages or 64 KiB waiting, and sheds what is over 16 KiB", async () => {
  const big = recording(1 << 30);
  // 64 KiB waiting: overloaded; 16 KiB is kept, 16 KiB + 1 is shed.
  big.inbox.put(message(64 * 1024, 1, 1));
  big.inbox.put(message(16 * 1024, 2, 2));
  big.inbox.put(message(16 * 1024 + 1, 3, 3));
  big.inbox.kick();
  await big.until(3);
  assert.deepEqual(big.handled.map((h) => h.kind), [
    "message",
    "message",
    "shed",
  ]);
  assert.deepEqual(
    big.handled.map((h) => h.payload.length),
    [64 * 1024, 16 * 1024, 0],
  );
  const many = recording(1 << 30);
  for (let i = 0; i < 64; i++) many.inbox.put(message(1, i));
  many.inbox.put(message(16 * 1024 + 1, 64, 64));
  many.inbox.kick();
  await many.until(65);
  assert.deepEqual(many.handled.at(-1)?.kind, "shed");
  assert.equal(many.handled.filter((h) => h.kind === "shed").length, 1);
});
