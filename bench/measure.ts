/**
 * One measurement of one contender: each function opens its sessions
 * through the contender, moves and verifies the bytes, and returns named
 * numbers (bytes, seconds, milliseconds). Failures (an unverified transfer,
 * a 502, a timeout) are returned as `problems`, not thrown.
 *
 * @module
 */
import type { Running } from "./contenders.ts";
import {
  children,
  cpuSeconds,
  memory,
  peakRss,
  resetPeak,
  rss,
  sampleMax,
  treeMemory,
  treeRss,
} from "./proc.ts";
import { type Operator, until } from "./rig.ts";
import { percentile } from "./stats.ts";
import {
  type ClientConn,
  download,
  echoVerified,
  idle,
  openClient,
  type Pattern,
  pingPong,
  type Target,
  upload,
} from "./wire.ts";

/** Sizes and counts of one benchmark mode. */
export interface Plan {
  readonly runs: number;
  readonly transferBytes: number;
  readonly roundTrips: number;
  readonly setups: number;
  readonly idleSessions: number;
  readonly slowBytes: number;
  readonly slowRate: number;
  readonly scaleSessions: number;
  readonly scaleBytes: number;
  /** Requests in a burst, each published as soon as the previous one's first byte came through. */
  readonly burstRequests: number;
}

/** What every measurement needs. */
export interface Bench {
  readonly plan: Plan;
  readonly pattern: Pattern;
  readonly target: Target;
  readonly operator: Operator;
  /** The cloud simulator's process (its memory is shown for slow consumers). */
  readonly cloudPid: number | null;
}

/** Named results of one measurement, and what went wrong. */
export interface Sample {
  readonly values: Record<string, number>;
  readonly problems: string[];
}

const MiB = 1024 * 1024;

/** Opens one client session through the contender (routing its 530 when it is a tunnel). */
export function session(
  bench: Bench,
  c: Running,
  signal?: AbortSignal,
): Promise<ClientConn> {
  if (c.prefix !== null) {
    bench.operator.route = { prefix: c.prefix, targetPort: bench.target.port };
  }
  return openClient(c.port, signal ? { signal } : {});
}

/** Waits until the relay has no per-connection children left (socat) and the target no connections. */
async function settle(bench: Bench, c: Running): Promise<void> {
  await until(
    () =>
      bench.target.open === 0 &&
      (c.pid === null || children(c.pid).length === 0),
    `${c.name}: sessions to end`,
    15_000,
  ).catch(() => {});
}

/** Watches the relay's memory: peak (exact VmHWM where resettable, else sampled) over a baseline. */
function memoryWatch(pid: number | null, intervalMs = 10) {
  if (pid === null) return { stop: () => ({ base: NaN, peak: NaN }) };
  const base = rss(pid);
  const exact = resetPeak(pid);
  const sampler = sampleMax(() => treeRss(pid), intervalMs);
  return {
    stop() {
      let peak = sampler.stop();
      if (exact) peak = Math.max(peak, peakRss(pid));
      return { base, peak };
    },
  };
}

/** 256 MiB up and down at full speed: throughput, peak RSS, CPU, close lag. */
export async function throughput(bench: Bench, c: Running): Promise<Sample> {
  const size = bench.plan.transferBytes;
  const values: Record<string, number> = {};
  const problems: string[] = [];
  const cpu0 = c.pid !== null ? cpuSeconds(c.pid) : NaN;
  const cloudCpu0 = c.prefix !== null && bench.cloudPid !== null
    ? cpuSeconds(bench.cloudPid)
    : NaN;
  let peak = 0;

  let watch = memoryWatch(c.pid);
  const up = await upload(
    await session(bench, c),
    bench.target,
    bench.pattern,
    size,
  );
  await settle(bench, c);
  peak = Math.max(peak, watch.stop().peak);
  if (!up.verified) {
    problems.push(`upload of ${size} B not verified (got ${up.bytes} B)`);
  }
  values.upMiBs = size / MiB / up.seconds;

  watch = memoryWatch(c.pid);
  const down = await download(await session(bench, c), bench.pattern, size);
  await settle(bench, c);
  peak = Math.max(peak, watch.stop().peak);
  if (!down.verified) {
    problems.push(`download of ${size} B not verified (got ${down.bytes} B)`);
  }
  values.downMiBs = size / MiB / down.seconds;
  values.closeLagMs = down.closeLagMs;

  if (c.pid !== null) {
    values.peakRss = peak;
    values.cpuPerGiB = (cpuSeconds(c.pid) - cpu0) / ((2 * size) / 1024 ** 3);
  }
  if (Number.isFinite(cloudCpu0)) {
    values.cloudCpuPerGiB = (cpuSeconds(bench.cloudPid!) - cloudCpu0) /
      ((2 * size) / 1024 ** 3);
  }
  return { values, problems };
}

/** Sequential 64-byte round trips: median and p99 in milliseconds. */
export async function latency(bench: Bench, c: Running): Promise<Sample> {
  const times = await pingPong(
    await session(bench, c),
    bench.plan.roundTrips,
    64,
  );
  await settle(bench, c);
  return {
    values: {
      rttP50Ms: percentile(times, 0.5),
      rttP99Ms: percentile(times, 0.99),
    },
    problems: [],
  };
}

/**
 * Session setup, one session at a time: 530 published -> 503 received, and
 * 530 -> first byte (the target's greeting) at the client; for every
 * contender also client connect -> first byte.
 */
export async function setup(bench: Bench, c: Running): Promise<Sample> {
  const status: number[] = [];
  const firstByte: number[] = [];
  const connectFirst: number[] = [];
  const problems: string[] = [];
  for (let i = 0; i < bench.plan.setups; i++) {
    const prefix = c.prefix;
    const reported = prefix === null ? null : bench.operator.waitFor(
      (topic, payload) =>
        topic === `${prefix}/s/us` && /^50[23],/.test(payload),
      `503 from ${c.name}`,
    );
    reported?.catch(() => {});
    const client = await session(bench, c, AbortSignal.timeout(15_000));
    connectFirst.push(client.greetedAt - client.connectedAt);
    client.conn.close();
    if (reported !== null) {
      const seen = await reported;
      const published = bench.operator.lastPublished!.at;
      if (!seen.payload.startsWith("503")) {
        problems.push(`setup got ${seen.payload}`);
      }
      status.push(seen.at - published);
      firstByte.push(client.greetedAt - published);
      if (Deno.env.get("BENCH_DEBUG")) {
        console.error(
          `setup ${i}: 503 ${(seen.at - published).toFixed(1)} first ${
            (client.greetedAt - published).toFixed(1)
          }`,
        );
      }
    }
    await settle(bench, c);
  }
  return {
    values: {
      setupStatusMs: percentile(status, 0.5),
      setupFirstByteMs: percentile(firstByte, 0.5),
      connectFirstByteMs: percentile(connectFirst, 0.5),
    },
    problems,
  };
}

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Opens `count` idle sessions, one after another. */
async function openIdle(
  bench: Bench,
  c: Running,
  count: number,
): Promise<ClientConn[]> {
  const clients: ClientConn[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const client = await session(bench, c, AbortSignal.timeout(15_000));
      clients.push(client);
      await idle(client);
    }
    await until(
      () => bench.target.open >= count,
      "idle sessions at the target",
    );
    return clients;
  } catch (error) {
    closeAll(clients);
    throw error;
  }
}

function closeAll(clients: readonly ClientConn[]): void {
  for (const client of clients) {
    try {
      client.conn.close();
    } catch {
      // already closed
    }
  }
}

/**
 * RSS of the relay at rest (the driver starts it afresh before this), then
 * the cost of each idle open session: after a warm-up batch (so that code
 * compiled on first use is not counted per session), RSS with
 * `idleSessions` open sessions over RSS before them.
 */
export async function idleMemory(bench: Bench, c: Running): Promise<Sample> {
  if (c.pid === null) return { values: {}, problems: [] };
  await settle(bench, c);
  const atRest = treeMemory(c.pid);
  closeAll(await openIdle(bench, c, Math.min(10, bench.plan.idleSessions)));
  await settle(bench, c);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const base = treeRss(c.pid);
  const clients = await openIdle(bench, c, bench.plan.idleSessions);
  try {
    // Let the relay finish its per-session work before reading its memory.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const loaded = treeRss(c.pid);
    return {
      values: {
        idleRss: atRest.rss,
        idleAnon: atRest.anon,
        idlePss: atRest.pss,
        perSessionRss: (loaded - base) / bench.plan.idleSessions,
      },
      problems: [],
    };
  } finally {
    closeAll(clients);
    await settle(bench, c);
  }
}

/**
 * A download to a client reading at `slowRate`, then an upload to a target
 * reading at `slowRate`: RSS growth of the relay over its RSS before.
 */
export async function slowPeers(bench: Bench, c: Running): Promise<Sample> {
  const { slowBytes, slowRate } = bench.plan;
  const values: Record<string, number> = {};
  const problems: string[] = [];
  if (c.pid === null) return { values, problems };

  let watch = memoryWatch(c.pid);
  const cloud = memoryWatch(c.prefix !== null ? bench.cloudPid : null);
  const down = await download(
    await session(bench, c),
    bench.pattern,
    slowBytes,
    slowRate,
  );
  await settle(bench, c);
  let mem = watch.stop();
  const cloudMem = cloud.stop();
  if (!down.verified) {
    problems.push(`slow download not verified (got ${down.bytes} B)`);
  }
  values.slowConsumerGrowth = mem.peak - mem.base;
  values.slowConsumerCloudGrowth = cloudMem.peak - cloudMem.base;

  watch = memoryWatch(c.pid);
  const up = await upload(
    await session(bench, c),
    bench.target,
    bench.pattern,
    slowBytes,
    slowRate,
  );
  await settle(bench, c);
  mem = watch.stop();
  if (!up.verified) {
    problems.push(`slow upload not verified (got ${up.bytes} B)`);
  }
  values.slowTargetGrowth = mem.peak - mem.base;
  return { values, problems };
}

/** `scaleSessions` concurrent sessions, each echoing `scaleBytes` both ways. */
export async function scale(bench: Bench, c: Running): Promise<Sample> {
  const { scaleSessions, scaleBytes } = bench.plan;
  const problems: string[] = [];
  // socat forks one process per session: reading a thousand /proc files
  // every 10 ms would load the machine it measures.
  const watch = memoryWatch(c.pid, scaleSessions > 200 ? 100 : 10);
  const statusesBefore = bench.operator.statuses.length;
  const signal = AbortSignal.timeout(300_000);
  const start = performance.now();
  const results = await Promise.allSettled(
    Array.from({ length: scaleSessions }, async () => {
      const client = await session(bench, c, signal);
      return echoVerified(client, bench.pattern, scaleBytes);
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  await settle(bench, c);
  const mem = watch.stop();
  const verified =
    results.filter((r) => r.status === "fulfilled" && r.value).length;
  const failed = bench.operator.statuses.slice(statusesBefore)
    .filter((s) => s.prefix === c.prefix && s.payload.startsWith("502")).length;
  if (verified < scaleSessions) {
    const errors = results.filter((r) => r.status === "rejected")
      .map((r) => String((r as PromiseRejectedResult).reason)).slice(0, 3);
    problems.push(
      `scale: ${verified}/${scaleSessions} verified, ${failed} x 502${
        errors.length ? `; e.g. ${errors.join("; ")}` : ""
      }`,
    );
  }
  const values: Record<string, number> = {
    scaleSeconds: seconds,
    scaleVerified: verified,
    scaleFailedStatus: failed,
  };
  if (c.pid !== null) values.scalePeakRss = mem.peak;
  return { values, problems };
}

/**
 * A burst: `burstRequests` sessions, each requested as soon as the previous
 * one's first byte came through (a user opening several sessions, or a
 * script), all kept open until the end: 530 -> first byte, median and max.
 * Run on a broker with its default configuration (Nagle on), where a
 * request that follows a status publish closely can wait for a delayed ACK.
 */
export async function burst(bench: Bench, c: Running): Promise<Sample> {
  if (c.prefix === null) return { values: {}, problems: [] };
  const times: number[] = [];
  const clients: ClientConn[] = [];
  try {
    for (let i = 0; i < bench.plan.burstRequests; i++) {
      const client = await session(bench, c, AbortSignal.timeout(15_000));
      clients.push(client);
      times.push(client.greetedAt - bench.operator.lastPublished!.at);
    }
  } finally {
    closeAll(clients);
    await settle(bench, c);
  }
  if (Deno.env.get("BENCH_DEBUG")) {
    console.error(`burst: ${times.map((t) => t.toFixed(1)).join(" ")} ms`);
  }
  return {
    values: {
      burstFirstByteMs: percentile(times, 0.5),
      burstMaxMs: Math.max(...times),
    },
    problems: [],
  };
}

/**
 * Plugin mode without a daemon: `c8y-tunnel connect "530,…"` for one
 * session, which leaves a detached child holding it; that child's RSS,
 * private memory and PSS while the session is open and idle.
 */
export async function plugin(bench: Bench, c: Running): Promise<Sample> {
  if (c.connect === undefined) return { values: {}, problems: [] };
  const connect = c.connect;
  let child: Promise<number> | undefined;
  bench.operator.divert = (line) => {
    child = connect(line);
    child.catch(() => {});
  };
  let client: ClientConn | undefined;
  let pid: number | undefined;
  try {
    client = await session(bench, c, AbortSignal.timeout(30_000));
    await idle(client);
    pid = await child!;
    // Let the child finish its set-up work before reading its memory.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const m = memory(pid);
    return {
      values: { pluginRss: m.rss, pluginAnon: m.anon, pluginPss: m.pss },
      problems: [],
    };
  } finally {
    bench.operator.divert = null;
    if (client) closeAll([client]);
    await settle(bench, c);
    if (pid !== undefined) {
      await until(() => !alive(pid!), `session process ${pid} to end`)
        .catch(() => {});
    }
  }
}
