/**
 * Tests of the one pump path against in-memory fakes of both legs
 * (tests/fake_cloud.ts), so every step is driven by the test: backpressure
 * is checked as an invariant at each call instead of by timing.
 *
 * @module
 */
import assert from "node:assert/strict";
import { CloudProtocolError } from "../lib/cloud/leg.ts";
import { pump, type Traffic } from "../lib/session/pump.ts";
import { FakeCloudLeg, FakeTarget } from "./fake_cloud.ts";
import { pseudoRandomBytes, tcpPair } from "./harness.ts";

function run(target: FakeTarget, cloud: FakeCloudLeg, signal?: AbortSignal) {
  const traffic: Traffic = { fromTarget: 0, toTarget: 0 };
  const end = pump(target, cloud, {
    signal: signal ?? new AbortController().signal,
    traffic,
  });
  return { end, traffic };
}

Deno.test("pump() does not receive from the cloud while a write to the target is pending (slow target)", async () => {
  const target = new FakeTarget();
  const cloud = new FakeCloudLeg();
  cloud.onCall = (what) => {
    if (what === "receive") {
      assert.ok(!target.writePending, "received while the target lagged");
    }
  };
  const data = pseudoRandomBytes(40 * 1024, 3);
  target.holdWrites();
  for (let at = 0; at < data.length; at += 1024) {
    cloud.push(data.subarray(at, at + 1024));
  }
  const { end, traffic } = run(target, cloud);
  // Each chunk: the pump writes it, the write hangs, nothing more is taken.
  for (let i = 1; i <= 40; i++) {
    await new Promise<void>((resolve) => {
      target.onCall = (what) => {
        if (what === "write") resolve();
      };
    });
    assert.equal(cloud.receives, i);
    assert.equal(traffic.toTarget, i * 1024);
    target.releaseWrites();
    target.holdWrites();
  }
  target.releaseWrites();
  cloud.end(1000);
  assert.deepEqual(await end, { by: "cloud", code: 1000 });
  assert.deepEqual(target.writtenBytes(), data);
  assert.ok(target.closed);
});

Deno.test("pump() does not read the target while a send to the cloud is pending (slow cloud)", async () => {
  const target = new FakeTarget();
  const cloud = new FakeCloudLeg();
  target.onCall = (what) => {
    if (what === "read") {
      assert.ok(!cloud.sendPending, "read the target while the cloud lagged");
    }
  };
  cloud.holdSends();
  const data = pseudoRandomBytes(300 * 1024, 4);
  target.push(data);
  target.end();
  const { end, traffic } = run(target, cloud);
  let sent = 0;
  while (sent < data.length) {
    const chunk = Math.min(64 * 1024, data.length - sent);
    await cloud.sentAtLeast(sent + chunk);
    sent += chunk;
    // One frame in flight: the target was read exactly once per frame.
    assert.equal(target.reads, cloud.sent.length);
    assert.equal(traffic.fromTarget, sent);
    cloud.releaseSends();
    cloud.holdSends();
  }
  cloud.releaseSends();
  assert.deepEqual(await end, { by: "target" });
  assert.deepEqual(cloud.sentBytes(), data);
  assert.equal(cloud.closeReason, "target closed");
});

Deno.test("pump() ends when the target closes, after what it read reached the cloud", async () => {
  const target = new FakeTarget();
  const cloud = new FakeCloudLeg();
  target.push(new TextEncoder().encode("last words"));
  target.end();
  const { end, traffic } = run(target, cloud);
  assert.deepEqual(await end, { by: "target" });
  assert.equal(new TextDecoder().decode(cloud.sentBytes()), "last words");
  assert.equal(traffic.fromTarget, 10);
  assert.equal(cloud.closeReason, "target closed");
  assert.ok(target.closed);
});

Deno.test("pump() ends when the cloud closes, after what it sent reached the target", async () => {
  const target = new FakeTarget();
  const cloud = new FakeCloudLeg();
  cloud.push(new TextEncoder().encode("bye "));
  cloud.push("a text message is dropped");
  cloud.push(new TextEncoder().encode("now"));
  cloud.end(4001);
  let texts = 0;
  const traffic: Traffic = { fromTarget: 0, toTarget: 0 };
  const end = await pump(target, cloud, {
    signal: new AbortController().signal,
    traffic,
    onTextFrame: () => texts++,
  });
  assert.deepEqual(end, { by: "cloud", code: 4001 });
  assert.equal(new TextDecoder().decode(target.writtenBytes()), "bye now");
  assert.equal(texts, 1);
  assert.equal(traffic.toTarget, 7);
  assert.ok(target.closed);
});

Deno.test("pump() ends with the cloud's protocol error and closes the target", async () => {
  const target = new FakeTarget();
  const cloud = new FakeCloudLeg();
  const error = new CloudProtocolError("masked frame", 1002);
  cloud.push(new Uint8Array([1, 2, 3]));
  cloud.fail(error);
  const { end } = run(target, cloud);
  assert.deepEqual(await end, { by: "cloud", error });
  assert.deepEqual([...target.writtenBytes()], [1, 2, 3]);
  await target.whenClosed();
  assert.equal(cloud.closeReason, "session closed by the device");
});

Deno.test("pump() ends when the target write fails, and closes the cloud", async () => {
  const target = new FakeTarget();
  const cloud = new FakeCloudLeg();
  target.close(); // writes now fail
  cloud.push(new Uint8Array([9]));
  const { end } = run(target, cloud);
  const result = await end;
  assert.equal(result.by, "target");
  assert.ok(
    "error" in result && result.error instanceof Deno.errors.BadResource,
  );
  assert.equal(cloud.closeReason, "target closed");
});

Deno.test("pump() ends on the session signal and closes both legs", async () => {
  const target = new FakeTarget();
  const cloud = new FakeCloudLeg();
  const abort = new AbortController();
  const { end } = run(target, cloud, abort.signal);
  abort.abort("shutdown");
  assert.deepEqual(await end, { by: "session" });
  assert.ok(target.closed);
  assert.equal(cloud.closeReason, "session closed by the device");
});

Deno.test("pump() moves bytes both ways over a real TCP connection", async () => {
  const { near, far } = await tcpPair();
  const cloud = new FakeCloudLeg();
  const up = pseudoRandomBytes(1024 * 1024, 5);
  const down = pseudoRandomBytes(1024 * 1024, 6);
  for (let at = 0; at < down.length; at += 50_000) {
    cloud.push(down.subarray(at, at + 50_000));
  }
  const traffic: Traffic = { fromTarget: 0, toTarget: 0 };
  const end = pump(near, cloud, {
    signal: new AbortController().signal,
    traffic,
  });
  const received = new Uint8Array(down.length);
  let got = 0;
  const reading = (async () => {
    while (got < down.length) {
      const n = await far.read(received.subarray(got));
      if (n === null) break;
      got += n;
    }
  })();
  let put = 0;
  while (put < up.length) put += await far.write(up.subarray(put));
  await reading;
  await cloud.sentAtLeast(up.length);
  far.close();
  assert.deepEqual(await end, { by: "target" });
  assert.deepEqual(received, down);
  assert.deepEqual(cloud.sentBytes(), up);
  assert.deepEqual(traffic, { fromTarget: up.length, toTarget: down.length });
});
