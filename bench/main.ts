/**
 * c8y-tunnel benchmark: throughput, latency, setup time, memory, scale and
 * CPU of the agent against plain TCP, a socat relay and a Node.js `ws`
 * bridge, measured in the same run, interleaved (A B C D A B C D …), on
 * loopback with the `lib/sim` cloud simulator and a real MQTT broker.
 *
 * Usage: deno run -A bench/main.ts [--quick] [--runs N] [--only a,b]
 *        [--broker mosquitto|embedded] [--out FILE]
 *
 * A full run writes bench/RESULTS.md (or `--out`); `--quick` (CI smoke:
 * small sizes, one run, under a minute) writes only with `--out`. The exit
 * code is 1 when a transfer was not verified or a session failed; timings
 * are never asserted.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  type ContenderName,
  CONTENDERS,
  type Running,
  start,
  unavailable,
} from "./contenders.ts";
import {
  type Bench,
  idleMemory,
  latency,
  type Plan,
  type Sample,
  scale,
  setup,
  slowPeers,
  throughput,
} from "./measure.ts";
import {
  type Cloud,
  type CloudKind,
  Operator,
  ROOT,
  type Service,
  startCloud,
  startEmbedded,
  startMosquitto,
  startTarget,
  which,
} from "./rig.ts";
import { fmt, median, mib, table } from "./stats.ts";
import { Pattern } from "./wire.ts";

const MiB = 1024 * 1024;

const FULL: Plan = {
  runs: 5,
  transferBytes: 256 * MiB,
  roundTrips: 5000,
  setups: 20,
  idleSessions: 100,
  slowBytes: 64 * MiB,
  slowRate: 8 * MiB,
  scaleSessions: 200,
  scaleBytes: 1 * MiB,
};

const QUICK: Plan = {
  runs: 1,
  transferBytes: 16 * MiB,
  roundTrips: 500,
  setups: 5,
  idleSessions: 10,
  slowBytes: 4 * MiB,
  slowRate: 8 * MiB,
  scaleSessions: 20,
  scaleBytes: 256 * 1024,
};

type Measure = (bench: Bench, c: Running) => Promise<Sample>;

/**
 * The measurements in the order they run; each is interleaved across
 * contenders per run. All use lib/sim as the cloud except the slow peers,
 * which need a cloud that pushes back (see bench/relay_cloud.ts); for them
 * the tunnel contenders are restarted against that cloud.
 */
const MEASUREMENTS: readonly {
  name: string;
  run: Measure;
  cloud: CloudKind;
  /**
   * Restart the relays before each run, so that a memory figure is not
   * inflated by what an earlier measurement left (V8 does not give back
   * heap it grew).
   */
  fresh?: boolean;
}[] = [
  { name: "idle memory", run: idleMemory, cloud: "sim", fresh: true },
  { name: "setup", run: setup, cloud: "sim" },
  { name: "latency", run: latency, cloud: "sim" },
  { name: "throughput", run: throughput, cloud: "sim", fresh: true },
  { name: "scale", run: scale, cloud: "sim", fresh: true },
  { name: "slow peers", run: slowPeers, cloud: "relay", fresh: true },
];

/** One table row: a metric, its unit conversion and how to show it. */
interface Row {
  readonly key: string;
  readonly label: string;
  readonly show: (v: number) => string;
}

const ROWS: readonly Row[] = [
  {
    key: "upMiBs",
    label: "throughput up (client -> target), MiB/s",
    show: (v) => fmt(v, 0),
  },
  {
    key: "downMiBs",
    label: "throughput down (target -> client), MiB/s",
    show: (v) => fmt(v, 0),
  },
  {
    key: "rttP50Ms",
    label: "round trip 64 B, median, ms",
    show: (v) => fmt(v, 3),
  },
  {
    key: "rttP99Ms",
    label: "round trip 64 B, p99, ms",
    show: (v) => fmt(v, 3),
  },
  {
    key: "setupStatusMs",
    label: "setup 530 -> 503, ms",
    show: (v) => fmt(v, 1),
  },
  {
    key: "setupFirstByteMs",
    label: "setup 530 -> first byte, ms",
    show: (v) => fmt(v, 1),
  },
  {
    key: "connectFirstByteMs",
    label: "client connect -> first byte, ms",
    show: (v) => fmt(v, 1),
  },
  {
    key: "closeLagMs",
    label: "close seen after last byte, ms",
    show: (v) => fmt(v, 2),
  },
  { key: "idleRss", label: "RSS idle, MiB", show: (v) => fmt(mib(v), 1) },
  {
    key: "perSessionRss",
    label: "RSS per idle session, KiB",
    show: (v) => fmt(v / 1024, 0),
  },
  {
    key: "peakRss",
    label: "peak RSS moving the transfers, MiB",
    show: (v) => fmt(mib(v), 1),
  },
  {
    key: "slowConsumerGrowth",
    label: "slow consumer: RSS growth, MiB",
    show: (v) => fmt(mib(v), 1),
  },
  {
    key: "slowConsumerCloudGrowth",
    label: "slow consumer: cloud RSS growth, MiB",
    show: (v) => fmt(mib(v), 1),
  },
  {
    key: "slowTargetGrowth",
    label: "slow target: RSS growth, MiB",
    show: (v) => fmt(mib(v), 1),
  },
  {
    key: "scaleSeconds",
    label: "concurrent sessions: time, s",
    show: (v) => fmt(v, 2),
  },
  {
    key: "scaleVerified",
    label: "concurrent sessions: verified",
    show: (v) => fmt(v, 0),
  },
  {
    key: "scalePeakRss",
    label: "concurrent sessions: peak RSS, MiB",
    show: (v) => fmt(mib(v), 1),
  },
  {
    key: "cpuPerGiB",
    label: "CPU user+sys per GiB moved, s",
    show: (v) => fmt(v, 2),
  },
  {
    key: "cloudCpuPerGiB",
    label: "cloud sim CPU per GiB moved, s",
    show: (v) => fmt(v, 2),
  },
];

class Results {
  readonly #values = new Map<string, number[]>();
  readonly problems: string[] = [];

  add(contender: ContenderName, sample: Sample): void {
    for (const [key, value] of Object.entries(sample.values)) {
      const id = `${contender}/${key}`;
      const list = this.#values.get(id) ?? [];
      list.push(value);
      this.#values.set(id, list);
    }
    for (const problem of sample.problems) {
      this.problems.push(`${contender}: ${problem}`);
    }
  }

  /** Median over the runs. */
  get(contender: ContenderName, key: string): number {
    return median(this.#values.get(`${contender}/${key}`) ?? []);
  }

  /** Every run's value, for the spread column. */
  all(contender: ContenderName, key: string): number[] {
    return this.#values.get(`${contender}/${key}`) ?? [];
  }
}

function usage(): string {
  return `Usage: deno run -A bench/main.ts [options]
  --quick           small sizes, one run (CI smoke, < 1 min); no file written
  --runs N          runs per measurement (default 3; quick 1)
  --only a,b        contenders: ${CONTENDERS.join(", ")} (default: all)
  --measure a,b     measurements: ${
    MEASUREMENTS.map((m) => m.name.replace(" ", "-")).join(", ")
  } (default: all)
  --broker NAME     mosquitto | embedded (default: mosquitto when installed)
  --out FILE        write the report there (full run default: bench/RESULTS.md)
`;
}

async function version(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(
      out.stdout.length ? out.stdout : out.stderr,
    );
    return text.split("\n")[0]!.trim();
  } catch {
    return "not installed";
  }
}

function cpuModel(): string {
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    return /^model name\s*:\s*(.*)$/m.exec(info)?.[1] ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** Target checks for c8y-tunnel: [what, value, limit text, met]. */
function targets(r: Results): string[][] {
  const us = "c8y-tunnel" as const;
  const rows: string[][] = [];
  const check = (
    what: string,
    value: string,
    limit: string,
    ok: boolean | null,
  ) =>
    rows.push([
      what,
      value,
      limit,
      ok === null ? "n/a" : ok ? "met" : "MISSED",
    ]);
  const ratio = (a: number, b: number) => a / b;
  for (const dir of ["up", "down"] as const) {
    const ours = r.get(us, `${dir}MiBs`);
    const socat = r.get("socat", `${dir}MiBs`);
    const node = r.get("node-ws", `${dir}MiBs`);
    const vsSocat = ratio(ours, socat);
    check(
      `throughput ${dir} vs socat`,
      `${fmt(vsSocat)}x (${fmt(ours, 0)} / ${fmt(socat, 0)} MiB/s)`,
      ">= 0.75x",
      Number.isFinite(vsSocat) ? vsSocat >= 0.75 : null,
    );
    check(
      `throughput ${dir} vs node-ws`,
      `${fmt(ratio(ours, node))}x (${fmt(ours, 0)} / ${fmt(node, 0)} MiB/s)`,
      "> 1x",
      Number.isFinite(node) ? ours > node : null,
    );
  }
  const tcp50 = r.get("tcp", "rttP50Ms");
  const tcp99 = r.get("tcp", "rttP99Ms");
  const p50 = r.get(us, "rttP50Ms");
  const p99 = r.get(us, "rttP99Ms");
  check(
    "round trip median vs tcp",
    `${fmt(p50 / tcp50)}x (${fmt(p50, 3)} / ${fmt(tcp50, 3)} ms)`,
    "<= 1.6x",
    Number.isFinite(p50 / tcp50) ? p50 / tcp50 <= 1.6 : null,
  );
  check(
    "round trip p99 vs tcp",
    `${fmt(p99 / tcp99)}x (${fmt(p99, 3)} / ${fmt(tcp99, 3)} ms)`,
    "<= 2.5x",
    Number.isFinite(p99 / tcp99) ? p99 / tcp99 <= 2.5 : null,
  );
  const limit = (
    what: string,
    key: string,
    max: number,
    unit: "ms" | "MiB" | "KiB",
  ) => {
    const raw = r.get(us, key);
    const v = unit === "MiB" ? mib(raw) : unit === "KiB" ? raw / 1024 : raw;
    check(
      what,
      `${fmt(v, 1)} ${unit}`,
      `<= ${max} ${unit}`,
      Number.isFinite(v) ? v <= max : null,
    );
  };
  limit("setup 530 -> first byte (median)", "setupFirstByteMs", 10, "ms");
  limit("RSS idle", "idleRss", 48, "MiB");
  limit("RSS per idle session", "perSessionRss", 256, "KiB");
  limit("peak RSS while moving the transfers", "peakRss", 64, "MiB");
  limit("slow consumer: RSS growth", "slowConsumerGrowth", 8, "MiB");
  limit("slow target: RSS growth", "slowTargetGrowth", 8, "MiB");
  const verified = r.all(us, "scaleVerified");
  const sessions = r.all(us, "scaleVerified").length;
  check(
    "concurrent sessions: all verified",
    verified.map((v) => fmt(v, 0)).join(", ") || "—",
    "all",
    sessions === 0
      ? null
      : r.problems.every((p) => !p.startsWith(`${us}: scale`)),
  );
  limit("concurrent sessions: peak RSS", "scalePeakRss", 160, "MiB");
  limit("close seen after the last byte", "closeLagMs", 20, "ms");
  return rows;
}

function report(
  r: Results,
  names: readonly ContenderName[],
  plan: Plan,
  notes: string[],
): string {
  const header = ["metric (median of runs)", ...names];
  const rows = ROWS.filter((row) =>
    names.some((n) => Number.isFinite(r.get(n, row.key)))
  )
    .map((
      row,
    ) => [row.label, ...names.map((n) => row.show(r.get(n, row.key)))]);
  const ratioRows = (["upMiBs", "downMiBs"] as const).map((key) => [
    `${key === "upMiBs" ? "up" : "down"} vs tcp`,
    ...names.map((n) => `${fmt(r.get(n, key) / r.get("tcp", key))}x`),
  ]);
  const spread = (["upMiBs", "downMiBs", "rttP50Ms"] as const).map((key) => [
    `${key} per run`,
    ...names.map((n) =>
      r.all(n, key).map((v) => fmt(v, key === "rttP50Ms" ? 3 : 0)).join(" / ")
    ),
  ]);
  return [
    `Sizes: transfers ${
      mib(plan.transferBytes)
    } MiB each way; ${plan.roundTrips} round trips; ` +
    `${plan.setups} setups; ${plan.idleSessions} idle sessions; slow peers ${
      mib(plan.slowBytes)
    } MiB at ` +
    `${mib(plan.slowRate)} MiB/s; ${plan.scaleSessions} concurrent sessions x ${
      plan.scaleBytes / 1024
    } KiB ` +
    `both ways; ${plan.runs} run(s), interleaved.`,
    "",
    table(header, rows),
    "",
    table(["ratio", ...names], ratioRows),
    "",
    table(["spread", ...names], spread),
    "",
    "Targets (c8y-tunnel, same run):",
    "",
    table(["target", "measured", "limit", "result"], targets(r)),
    "",
    ...(r.problems.length
      ? ["Problems:", "", ...r.problems.map((p) => `- ${p}`), ""]
      : []),
    ...(notes.length ? ["Notes:", "", ...notes.map((n) => `- ${n}`), ""] : []),
  ].join("\n");
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      runs: { type: "string" },
      only: { type: "string" },
      measure: { type: "string" },
      broker: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(usage());
    return 0;
  }
  const base = values.quick ? QUICK : FULL;
  const runs = values.runs !== undefined ? Number(values.runs) : base.runs;
  if (!Number.isInteger(runs) || runs < 1 || runs > 20) {
    console.error(
      `--runs ${values.runs} is invalid: expected a whole number from 1 to 20`,
    );
    return 2;
  }
  const plan: Plan = { ...base, runs };
  const wanted = values.only?.split(",").map((s) => s.trim()) ??
    [...CONTENDERS];
  for (const name of wanted) {
    if (!(CONTENDERS as readonly string[]).includes(name)) {
      console.error(
        `--only ${name} is unknown: expected some of ${CONTENDERS.join(", ")}`,
      );
      return 2;
    }
  }
  const measureNames = MEASUREMENTS.map((m) => m.name.replace(" ", "-"));
  const measures = values.measure?.split(",").map((s) => s.trim()) ??
    measureNames;
  for (const name of measures) {
    if (!measureNames.includes(name)) {
      console.error(
        `--measure ${name} is unknown: expected some of ${
          measureNames.join(", ")
        }`,
      );
      return 2;
    }
  }
  const notes: string[] = [];
  const names: ContenderName[] = [];
  for (const name of CONTENDERS.filter((n) => wanted.includes(n))) {
    const why = unavailable(name);
    if (why === null) names.push(name);
    else {
      notes.push(`${name} skipped: ${why}`);
      console.error(`bench: ${name} skipped: ${why}`);
    }
  }
  const brokerKind = values.broker ??
    (which("mosquitto") ? "mosquitto" : "embedded");
  if (brokerKind !== "mosquitto" && brokerKind !== "embedded") {
    console.error(
      `--broker ${brokerKind} is invalid: expected mosquitto or embedded`,
    );
    return 2;
  }
  const started = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-bench-" });
  const stack = new AsyncDisposableStack();
  // Ctrl-C or SIGTERM: stop every process the bench started, then exit.
  const interrupted = async () => {
    console.error("bench: interrupted, stopping what it started");
    await stack.disposeAsync().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    Deno.exit(130);
  };
  for (const name of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(name, interrupted);
  }
  const results = new Results();
  const running: Running[] = [];
  let cloud: Cloud | undefined;
  let broker: Service;
  const clouds: string[] = [];
  try {
    const pattern = new Pattern(
      Math.max(plan.transferBytes, plan.slowBytes, plan.scaleBytes),
    );
    const target = stack.use(
      await startTarget(
        Math.max(plan.transferBytes, plan.slowBytes, plan.scaleBytes),
      ),
    );
    broker = stack.use(
      brokerKind === "mosquitto"
        ? await startMosquitto(dir)
        : await startEmbedded(),
    );
    const operator = stack.use(await Operator.connect(broker.port));
    const selected = MEASUREMENTS.filter((m) =>
      measures.includes(m.name.replace(" ", "-"))
    );
    let current: CloudKind | null = null;
    /** Stops the contenders `which` selects and starts them again (same rig). */
    const restart = async (which: (c: Running) => boolean) => {
      for (const c of running.splice(0)) {
        if (which(c)) await c[Symbol.asyncDispose]();
        else running.push(c);
      }
      for (const name of names) {
        if (running.some((c) => c.name === name)) continue;
        const c = await start(name, {
          dir,
          brokerPort: broker.port,
          cloud: cloud!,
          operator,
          targetPort: target.port,
          maxSessions: plan.scaleSessions + 50,
        });
        stack.use(c);
        running.push(c);
      }
      running.sort((a, b) =>
        names.indexOf(a.name as ContenderName) -
        names.indexOf(b.name as ContenderName)
      );
    };
    for (const measurement of selected) {
      if (measurement.cloud !== current) {
        // (Re)start the cloud and the contenders that talk to it.
        current = measurement.cloud;
        cloud = stack.use(await startCloud(current));
        cloud.onKey = (key) => operator.request(key);
        clouds.push(cloud.description);
        const kind = current;
        await restart((c) => c.prefix !== null || kind === "sim");
      }
      const bench: Bench = {
        plan,
        pattern,
        target,
        operator,
        cloudPid: cloud?.pid ?? null,
      };
      for (let run = 1; run <= plan.runs; run++) {
        if (measurement.fresh) {
          // A daemon at rest: just started, settled for a second.
          await restart((c) => c.pid !== null);
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
        for (const c of running) {
          const t0 = performance.now();
          try {
            results.add(
              c.name as ContenderName,
              await measurement.run(bench, c),
            );
          } catch (error) {
            results.problems.push(
              `${c.name}: ${measurement.name} failed: ${String(error)}`,
            );
          }
          console.error(
            `bench: ${measurement.name} run ${run} ${c.name}: ${
              ((performance.now() - t0) / 1000).toFixed(1)
            } s`,
          );
        }
      }
    }
  } finally {
    await stack.disposeAsync();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const seconds = (performance.now() - started) / 1000;
  const command = `deno run -A bench/main.ts${
    Deno.args.length ? " " + Deno.args.join(" ") : ""
  }`;
  notes.push(
    `broker: ${broker!.description}; clouds: ${clouds.join(", then ")}`,
  );
  const body = report(results, names, plan, notes);
  console.log(body);
  console.log(`\nbench finished in ${seconds.toFixed(0)} s`);
  const out = values.out ??
    (values.quick ? undefined : `${ROOT}bench/RESULTS.md`);
  if (out !== undefined) {
    const machine = [
      `- machine: ${navigator.hardwareConcurrency} cores, ${cpuModel()}, Linux ${Deno.osRelease()}`,
      `- deno ${Deno.version.deno} (v8 ${Deno.version.v8}); ${await version(
        "node",
        ["--version"],
      )} ` +
      `(ws ${await nodePackageVersion("ws")}, mqtt ${await nodePackageVersion(
        "mqtt",
      )}); ` +
      `${await version("socat", ["-V"]).then(() => socatVersion())}`,
      ...running.map((c) => `- ${c.name}: \`${c.command}\``),
    ];
    await Deno.writeTextFile(
      out,
      [
        "# Benchmark results",
        "",
        `Produced by \`${command}\` (what \`deno task bench\` runs) on ${
          new Date().toISOString().slice(0, 10)
        }, in ${
          seconds.toFixed(0)
        } s. See docs/bench.md for what each number means.`,
        "",
        ...machine,
        "",
        body,
      ].join("\n"),
    );
    // Keep the file as `deno fmt` wants it (CI checks formatting).
    await new Deno.Command(Deno.execPath(), {
      args: ["fmt", "--quiet", out],
      stdout: "null",
      stderr: "null",
    }).output().catch(() => {});
    console.log(`wrote ${out}`);
  }
  return results.problems.length > 0 ? 1 : 0;
}

async function nodePackageVersion(name: string): Promise<string> {
  try {
    const text = await Deno.readTextFile(
      `${ROOT}bench/node-bridge/node_modules/${name}/package.json`,
    );
    return (JSON.parse(text) as { version: string }).version;
  } catch {
    return "not installed";
  }
}

async function socatVersion(): Promise<string> {
  const line = await version("socat", ["-V"]);
  const out = await new Deno.Command("socat", { args: ["-V"], stdout: "piped" })
    .output()
    .catch(() => null);
  const text = out ? new TextDecoder().decode(out.stdout) : line;
  return /socat version ([\d.]+)/.exec(text)?.[0] ?? line;
}

if (import.meta.main) Deno.exit(await main());
