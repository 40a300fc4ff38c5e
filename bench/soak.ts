/**
 * Soak (issue 11): sessions opened and closed continuously through the agent
 * (random sizes and endings: upload, download, echo, idle then close, client
 * abort mid-download), with a trickle of hostile MQTT payloads beside them
 * (bench/flood.ts's mix, 5 a second). The agent runs as its own process;
 * RSS, RssAnon (private), RssFile (file-backed: pages of the deno
 * executable), PSS and fds are sampled every 10 s; fds are also
 * checked at every moment no session is open. Verdict "after warm-up
 * nothing grows": RSS and RssAnon after the first 2 minutes stay within
 * 8 MiB (max - min), and fds are back at the baseline whenever no session
 * is open.
 *
 * Usage: deno run -A bench/soak.ts MINUTES [--out FILE]
 * (also `deno task bench --soak MINUTES`). Manual, not run in CI. The exit
 * code is 1 when the verdict fails or a transfer was not verified.
 *
 * @module
 */
import mqtt from "mqtt";
import {
  DEVICE_ID,
  hostileMessages,
  procSample,
  Random,
  RawPublisher,
  startAgent,
  startRig,
} from "./flood.ts";
import { memory } from "./proc.ts";
import { fmt, mib, table } from "./stats.ts";
import {
  type ClientConn,
  download,
  echoVerified,
  encodeHeader,
  idle,
  openClient,
  Pattern,
  sessionId,
  upload,
} from "./wire.ts";

const MiB = 1024 * 1024;
/** Largest transfer of one soak session. */
const MAX_BYTES = 8 * MiB;
/** Sessions open at once at most. */
const CONCURRENCY = 6;
/** After this long with no session open, fds must be back at the baseline. */
const FD_GRACE_MS = 5000;

/** Options of {@linkcode runSoak}. */
export interface SoakOptions {
  readonly minutes: number;
  /** Seconds between samples (default 10). */
  readonly sampleSeconds?: number;
  /** Warm-up excluded from the verdict, seconds (default 120). */
  readonly warmupSeconds?: number;
}

/** One sample of the agent. */
export interface SoakSample {
  readonly seconds: number;
  readonly rss: number;
  readonly anon: number;
  /** RssFile: file-backed pages (mostly the deno executable's code), bytes. */
  readonly file: number;
  readonly pss: number;
  readonly fds: number;
  readonly sessions: number;
}

/** What a soak measured. */
export interface SoakResult {
  readonly samples: SoakSample[];
  readonly baseFds: number;
  /** Moments with no session open, and how many of them had fds above the baseline after the grace time. */
  readonly idleChecks: number;
  readonly idleLeaks: number;
  readonly worstIdleFds: number;
  readonly sessions: number;
  readonly verified: number;
  readonly failed: number;
  readonly errors: string[];
  readonly hostile: number;
  readonly warmupSeconds: number;
}

/** One session with a random size and ending; true when its data was verified (or it had none to verify). */
async function oneSession(
  port: number,
  target: { report(id: number): Promise<{ bytes: number; sha256: string }> },
  pattern: Pattern,
  random: Random,
): Promise<boolean> {
  const signal = AbortSignal.timeout(60_000);
  const client: ClientConn = await openClient(port, { signal });
  const size = Math.floor(random.next() ** 3 * MAX_BYTES) + 1;
  switch (random.int(0, 4)) {
    case 0:
      return (await upload(client, target as never, pattern, size)).verified;
    case 1:
      return (await download(client, pattern, size)).verified;
    case 2:
      return await echoVerified(client, pattern, Math.min(size, MiB));
    case 3: {
      await idle(client);
      await new Promise((resolve) => setTimeout(resolve, random.int(0, 2000)));
      client.conn.close();
      return true;
    }
    default: {
      // The client gives up in the middle of a download.
      const conn = client.conn;
      await conn.write(
        encodeHeader({ op: "download", id: sessionId(), size, rate: 0 }),
      );
      const buffer = new Uint8Array(65536);
      const stop = random.int(0, Math.min(size, 4 * MiB));
      let read = 0;
      while (read < stop) {
        const n = await conn.read(buffer);
        if (n === null) break;
        read += n;
      }
      conn.close();
      return true;
    }
  }
}

/** Runs the soak for `options.minutes`. */
export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const sampleMs = (options.sampleSeconds ?? 10) * 1000;
  const warmupSeconds = options.warmupSeconds ?? 120;
  const endAt = performance.now() + options.minutes * 60_000;
  await using rig = await startRig();
  await using agent = await startAgent(rig, "soak");
  const operator = await mqtt.connectAsync(
    `mqtt://127.0.0.1:${rig.broker.port}`,
    { clientId: `soak-operator-${crypto.randomUUID().slice(0, 8)}` },
  );
  await using attacker = await RawPublisher.connect(rig.broker.port);
  const pattern = new Pattern(rig.patternBytes);
  const random = new Random(7);
  let running = true;
  // Every client connection at the cloud gets its 530.
  rig.cloud.onKey = (key) => {
    operator.publishAsync(
      "c8y/s/ds",
      `530,${DEVICE_ID},127.0.0.1,${rig.targetPort},${key}`,
      { qos: 1 },
    ).catch(() => {});
  };
  // The hostile trickle: 5 payloads a second.
  const trickling = (async () => {
    const messages = hostileMessages(1e9, 11);
    while (running) {
      const message = messages.next().value;
      if (message) await attacker.publish(message.topic, message.payload);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  })();

  // Baseline fds: after one session, with none open.
  await oneSession(rig.cloud.port, rig.target, pattern, random);
  const waitFds = async (base: number) => {
    const deadline = performance.now() + FD_GRACE_MS;
    let fds = procSample(agent.pid).fds;
    while (fds > base && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      fds = procSample(agent.pid).fds;
    }
    return fds;
  };
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const baseFds = procSample(agent.pid).fds;

  const started = performance.now();
  let open = 0;
  const samples: SoakSample[] = [];
  const take = () => {
    try {
      const s = procSample(agent.pid);
      samples.push({
        seconds: (performance.now() - started) / 1000,
        rss: s.rss,
        anon: s.anon,
        file: s.file,
        pss: memory(agent.pid).pss,
        fds: s.fds,
        sessions: open,
      });
    } catch {
      // gone
    }
  };
  take();
  const sampler = setInterval(take, sampleMs);
  let sessions = 0;
  let verified = 0;
  let failed = 0;
  let idleChecks = 0;
  let idleLeaks = 0;
  let worstIdleFds = baseFds;
  const errors: string[] = [];
  try {
    while (performance.now() < endAt) {
      const count = random.int(1, CONCURRENCY);
      open = count;
      const results = await Promise.allSettled(
        Array.from(
          { length: count },
          () => oneSession(rig.cloud.port, rig.target, pattern, random),
        ),
      );
      open = 0;
      for (const r of results) {
        sessions++;
        if (r.status === "fulfilled" && r.value) verified++;
        else {
          failed++;
          if (errors.length < 5) {
            errors.push(
              r.status === "rejected" ? String(r.reason) : "not verified",
            );
          }
        }
      }
      // No session open now: the agent must let go of every socket.
      if (rig.target.open === 0) {
        idleChecks++;
        const fds = await waitFds(baseFds);
        worstIdleFds = Math.max(worstIdleFds, fds);
        if (fds > baseFds) idleLeaks++;
      }
    }
  } finally {
    clearInterval(sampler);
    take();
    running = false;
    await trickling;
    await operator.endAsync(true);
  }
  return {
    samples,
    baseFds,
    idleChecks,
    idleLeaks,
    worstIdleFds,
    sessions,
    verified,
    failed,
    errors,
    hostile: attacker.count,
    warmupSeconds,
  };
}

/** Max - min of `key` over the samples after warm-up. */
function spread(
  result: SoakResult,
  key: "rss" | "anon" | "file" | "pss",
): number {
  const after = result.samples.filter((s) => s.seconds >= result.warmupSeconds);
  if (after.length === 0) return NaN;
  const values = after.map((s) => s[key]);
  return Math.max(...values) - Math.min(...values);
}

/** True when the soak's verdict holds: nothing grows after warm-up. */
export function soakPassed(result: SoakResult): boolean {
  return spread(result, "rss") <= 8 * MiB &&
    spread(result, "anon") <= 8 * MiB && result.idleLeaks === 0 &&
    result.failed === 0;
}

/** The soak's report (Markdown). */
export function soakReport(result: SoakResult, minutes: number): string {
  const everyMinute = result.samples.filter((s, i) =>
    i === 0 || i === result.samples.length - 1 ||
    Math.floor(s.seconds / 60) !==
      Math.floor((result.samples[i - 1]?.seconds ?? 0) / 60)
  );
  const rssSpread = spread(result, "rss");
  const anonSpread = spread(result, "anon");
  const rows = [
    [
      `RSS after ${result.warmupSeconds} s, max - min`,
      `${fmt(mib(rssSpread), 1)} MiB`,
      "<= 8 MiB",
      rssSpread <= 8 * MiB ? "met" : "MISSED",
    ],
    [
      `RssAnon after ${result.warmupSeconds} s, max - min`,
      `${fmt(mib(anonSpread), 1)} MiB`,
      "<= 8 MiB",
      anonSpread <= 8 * MiB ? "met" : "MISSED",
    ],
    [
      `RssFile after ${result.warmupSeconds} s, max - min`,
      `${fmt(mib(spread(result, "file")), 1)} MiB`,
      "(report)",
      "—",
    ],
    [
      "fds back to baseline with no session open",
      `${
        result.idleChecks - result.idleLeaks
      }/${result.idleChecks} (worst ${result.worstIdleFds}, base ${result.baseFds})`,
      "all",
      result.idleLeaks === 0 ? "met" : "MISSED",
    ],
    [
      "sessions verified",
      `${result.verified}/${result.sessions}`,
      "all",
      result.failed === 0 ? "met" : "MISSED",
    ],
  ];
  return [
    `Soak: ${minutes} min; ${result.sessions} sessions (random sizes up to ${
      mib(MAX_BYTES)
    } MiB, up to ${CONCURRENCY} at once, upload/download/echo/idle/abort); ${result.hostile} hostile payloads beside them; samples every 10 s.`,
    "",
    table(
      [
        "t, s",
        "RSS, MiB",
        "RssAnon, MiB",
        "RssFile, MiB",
        "PSS, MiB",
        "fds",
        "sessions open",
      ],
      everyMinute.map((s) => [
        fmt(s.seconds, 0),
        fmt(mib(s.rss), 1),
        fmt(mib(s.anon), 1),
        fmt(mib(s.file), 1),
        fmt(mib(s.pss), 1),
        String(s.fds),
        String(s.sessions),
      ]),
    ),
    "",
    table([
      "verdict: after warm-up nothing grows",
      "measured",
      "limit",
      "result",
    ], rows),
    "",
    ...result.errors.map((e) => `- ${e}`),
  ].join("\n");
}

/** `deno run -A bench/soak.ts MINUTES` / `deno task bench --soak MINUTES`; returns the exit code. */
export async function soakMain(args: string[]): Promise<number> {
  const at = args.indexOf("--soak");
  const text = at >= 0 ? args[at + 1] : args.find((a) => !a.startsWith("--"));
  const minutes = Number(text);
  if (!Number.isFinite(minutes) || minutes <= 0 || minutes > 24 * 60) {
    console.error(
      `--soak ${text} is invalid: expected the minutes to run (e.g. --soak 20)`,
    );
    return 2;
  }
  const outAt = args.indexOf("--out");
  const out = outAt >= 0 ? args[outAt + 1] : undefined;
  const warmupSeconds = Math.min(120, minutes * 60 / 4);
  const result = await runSoak({ minutes, warmupSeconds });
  const body = soakReport(result, minutes);
  console.log(body);
  if (out) await Deno.writeTextFile(out, body + "\n");
  return soakPassed(result) ? 0 : 1;
}

if (import.meta.main) Deno.exit(await soakMain(Deno.args));
