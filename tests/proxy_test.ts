import assert from "node:assert/strict";
import type { CloudLeg } from "../lib/cloud/websocket.ts";
import { CHUNK_BYTES, pump, type Traffic } from "../lib/session/pump.ts";
import { tcpPair } from "./harness.ts";

/** Resolves once `read()` has returned the same value for `quietTurns` checks in a row. */
async function settled(read: () => number, quietTurns = 20): Promise<number> {
  let last = -1;
  let same = 0;
  while (same < quietTurns) {
    await new Promise((r) => setTimeout(r, 5));
    const now = read();
    same = now === last ? same + 1 : 0;
    last = now;
  }
  return last;
}

function leg(
  readable: ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array>,
): CloudLeg {
  return {
    readable,
    writable,
    protocol: "binary",
    closed: Promise.resolve({ code: 1000, reason: "" }),
    close: () => {},
  };
}

Deno.test("pump() stops pulling from the cloud while the target does not read", async () => {
  const { near: agentSide, far: targetSide } = await tcpPair();
  let pulled = 0;
  const chunk = new Uint8Array(CHUNK_BYTES);
  const readable = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (pulled >= 256 * 1024 * 1024) return controller.close();
      pulled += chunk.length;
      controller.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
  const traffic: Traffic = { fromTarget: 0, toTarget: 0 };
  const abort = new AbortController();
  const done = pump(agentSide, leg(readable, new WritableStream()), {
    signal: abort.signal,
    traffic,
  });
  const stalled = await settled(() => pulled);
  // Kernel socket buffers hold a few MiB; the agent itself holds at most one chunk.
  assert.ok(
    stalled < 32 * 1024 * 1024,
    `pulled ${stalled} bytes into a target that reads nothing`,
  );
  assert.ok(traffic.toTarget <= stalled);
  abort.abort();
  assert.deepEqual(await done, { by: "session" });
  targetSide.close();
});

Deno.test("pump() stops reading the target while the cloud does not accept writes", async () => {
  const { near: agentSide, far: targetSide } = await tcpPair();
  const writes: Uint8Array[] = [];
  const stuck = new WritableStream<Uint8Array>({
    write: (c) => {
      writes.push(c);
      return new Promise(() => {}); // a cloud that never drains
    },
  }, { highWaterMark: 1 });
  const traffic: Traffic = { fromTarget: 0, toTarget: 0 };
  const abort = new AbortController();
  const done = pump(agentSide, leg(new ReadableStream(), stuck), {
    signal: abort.signal,
    traffic,
  });
  const data = new Uint8Array(1024 * 1024);
  let written = 0;
  const writer = (async () => {
    try {
      while (written < 64 * 1024 * 1024) {
        written += await targetSide.write(data);
      }
    } catch { /* closed at the end of the test */ }
  })();
  await settled(() => written);
  assert.ok(
    traffic.fromTarget <= 2 * CHUNK_BYTES,
    `agent read ${traffic.fromTarget} bytes it could not send`,
  );
  assert.ok(written < 64 * 1024 * 1024, "the target was never slowed down");
  abort.abort();
  await done;
  targetSide.close();
  await writer;
});
