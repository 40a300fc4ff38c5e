import assert from "node:assert/strict";
import { logger } from "../lib/util/log.ts";
import { tcpPair } from "./harness.ts";
import { FakeCloudLeg } from "./fake_cloud.ts";
import {
  type Clock,
  type TimerId,
  Tunnel,
  type TunnelLimits,
} from "../lib/session/tunnel.ts";

/** A clock that only moves when told to. */
class ManualClock implements Clock {
  #now = 0;
  #next = 1;
  #timers = new Map<number, { at: number; fn: () => void }>();
  now(): number {
    return this.#now;
  }
  setTimeout(fn: () => void, ms: number): TimerId {
    const id = this.#next++;
    this.#timers.set(id, { at: this.#now + ms, fn });
    return id as unknown as TimerId;
  }
  clearTimeout(id: TimerId): void {
    this.#timers.delete(id as unknown as number);
  }
  get pending(): number {
    return this.#timers.size;
  }
  /** Moves time forward, firing due timers in order (and ones they set). */
  async advance(ms: number): Promise<void> {
    const end = this.#now + ms;
    while (true) {
      const due = [...this.#timers.entries()].filter(([, t]) => t.at <= end)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.#now = due[1].at;
      due[1].fn();
      await new Promise((r) => setTimeout(r, 0));
    }
    this.#now = end;
    await new Promise((r) => setTimeout(r, 0));
  }
}

const limits: TunnelLimits = {
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 0,
  maxDurationMs: 0,
};
const target = { key: "k-123456789", host: "127.0.0.1", port: 22 };
const log = logger("test");

/** A tunnel whose legs are a real TCP pair and a fake cloud; not opened yet. */
async function tunnelOnPair(overrides: Partial<TunnelLimits> = {}) {
  const clock = new ManualClock();
  const { near: tunnelSide, far: testSide } = await tcpPair();
  const cloud = new FakeCloudLeg();
  const tunnel = new Tunnel(target, {
    dial: () => Promise.resolve(tunnelSide),
    openCloud: () => Promise.resolve(cloud),
    log,
    clock,
  }, { ...limits, ...overrides });
  return { clock, testSide, cloud, tunnel };
}

/** Never settles until its signal aborts (then rejects with the reason). */
function pendingUntilAborted<T>(signal: AbortSignal): Promise<T> {
  return new Promise((_, reject) => {
    signal.addEventListener("abort", () => reject(signal.reason), {
      once: true,
    });
  });
}

Deno.test("Tunnel.open() moves requested -> connecting -> open and close() ends it closed", async () => {
  const { clock, testSide, cloud, tunnel } = await tunnelOnPair();
  assert.equal(tunnel.state.name as string, "requested");
  const opening = tunnel.open();
  assert.equal(tunnel.state.name as string, "connecting");
  assert.deepEqual(await opening, { ok: true });
  assert.equal(tunnel.state.name as string, "open");
  const summary = await tunnel.close("test done");
  assert.equal(summary.state, "closed");
  assert.equal(summary.reason, "test done");
  assert.equal(tunnel.state.name as string, "closed");
  assert.equal(cloud.closeReason, "session closed by the device");
  assert.equal(await testSide.read(new Uint8Array(1)), null);
  testSide.close();
  assert.equal(clock.pending, 0);
});

Deno.test("Tunnel.open() fails after connect_timeout naming the leg still connecting", async () => {
  const clock = new ManualClock();
  let cloudSignal: AbortSignal | undefined;
  const cloud = new FakeCloudLeg();
  const tunnel = new Tunnel(target, {
    dial: (_h, _p, signal) => pendingUntilAborted(signal),
    openCloud: (signal) => {
      cloudSignal = signal;
      return Promise.resolve(cloud);
    },
    log,
    clock,
  }, { ...limits, connectTimeoutMs: 5000 });
  const opening = tunnel.open();
  await clock.advance(4999);
  assert.equal(tunnel.state.name as string, "connecting");
  await clock.advance(1);
  const result = await opening;
  assert.deepEqual(result, {
    ok: false,
    reason:
      "connect timeout: target 127.0.0.1:22 did not connect within 5 s (tunnel.connect_timeout)",
  });
  assert.equal(tunnel.state.name as string, "failed");
  assert.equal(
    cloud.closeReason,
    "target unreachable",
    "the cloud leg that did open is closed",
  );
  assert.ok(cloudSignal?.aborted);
  assert.equal((await tunnel.finished).state, "failed");
});

Deno.test("Tunnel.open() aborts the cloud attempt at once when the target refuses", async () => {
  const clock = new ManualClock();
  let cloudSignal: AbortSignal | undefined;
  const tunnel = new Tunnel(target, {
    dial: () => Promise.reject(new Deno.errors.ConnectionRefused("refused")),
    openCloud: (signal) => {
      cloudSignal = signal;
      return pendingUntilAborted(signal);
    },
    log,
    clock,
  }, limits);
  const result = await tunnel.open();
  assert.deepEqual(result, {
    ok: false,
    reason: "cannot connect to target 127.0.0.1:22: connection refused",
  });
  assert.ok(cloudSignal?.aborted);
  assert.equal(clock.pending, 0);
});

Deno.test("Tunnel closes an open session after idle_timeout without traffic, not before", async () => {
  const { clock, testSide, cloud, tunnel } = await tunnelOnPair({
    idleTimeoutMs: 60_000,
  });
  await tunnel.open();
  // Traffic every 40 s keeps it open well past one idle period.
  for (let i = 0; i < 4; i++) {
    await clock.advance(40_000);
    cloud.push(new Uint8Array([i]));
    const got = new Uint8Array(1);
    assert.equal(await testSide.read(got), 1);
    assert.equal(tunnel.state.name as string, "open");
  }
  await clock.advance(59_000);
  assert.equal(tunnel.state.name as string, "open");
  await clock.advance(20_000);
  const summary = await tunnel.finished;
  assert.equal(summary.reason, "idle for 60 s (tunnel.idle_timeout)");
  assert.equal(summary.toTarget, 4);
  testSide.close();
});

Deno.test("Tunnel closes an open session at max_duration", async () => {
  const { clock, testSide, cloud, tunnel } = await tunnelOnPair({
    maxDurationMs: 3_600_000,
  });
  await tunnel.open();
  await clock.advance(3_599_999);
  assert.equal(tunnel.state.name as string, "open");
  await clock.advance(1);
  const summary = await tunnel.finished;
  assert.equal(summary.state, "closed");
  assert.equal(
    summary.reason,
    "max duration of 3600 s reached (tunnel.max_duration)",
  );
  assert.equal(cloud.closeReason, "session closed by the device");
  testSide.close();
});

Deno.test("Tunnel ends when the target closes, after its bytes reached the cloud", async () => {
  const { testSide, cloud, tunnel } = await tunnelOnPair();
  await tunnel.open();
  await testSide.write(new TextEncoder().encode("last words"));
  testSide.close();
  const summary = await tunnel.finished;
  assert.equal(summary.reason, "target closed");
  assert.equal(summary.fromTarget, 10);
  assert.equal(new TextDecoder().decode(cloud.sentBytes()), "last words");
  assert.equal(cloud.closeReason, "target closed");
});

Deno.test("Tunnel.close() before open() fails the session without connecting", async () => {
  let dialed = false;
  const tunnel = new Tunnel(target, {
    dial: () => {
      dialed = true;
      return Promise.reject(new Error("unused"));
    },
    openCloud: () => Promise.reject(new Error("unused")),
    log,
    clock: new ManualClock(),
  }, limits);
  const summary = await tunnel.close("shutdown");
  assert.equal(summary.state, "failed");
  assert.equal((await tunnel.open()).ok, false);
  assert.equal(dialed, false);
});
