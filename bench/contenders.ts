/**
 * The contenders of one benchmark run, each started the way its users start
 * it and measured through the same client and target:
 *
 * - `tcp`: the client talks to the target directly (the physical reference);
 * - `socat`: one TCP relay hop, no WebSocket (`socat TCP-LISTEN,fork TCP`);
 * - `c8y-tunnel`: this agent, `deno run -A main.ts run --config FILE`;
 * - `node-ws`: bench/node-bridge (Node.js, npm `ws` and `mqtt`), the stack
 *   other Cumulocity agents use.
 *
 * Two more for analysis, only when named in `--only`:
 * - `socat2`: two socat relays in a row, what a second hop costs without
 *   WebSocket (the tunnel path has two: the cloud and the agent);
 * - `c8y-b`: a second c8y-tunnel for A/B comparisons in one interleaved run:
 *   the checkout at `BENCH_AGENT_ROOT_B` (default this one, e.g. an older
 *   commit unpacked elsewhere) with the `deno run` flags in
 *   `BENCH_AGENT_FLAGS_B` (default the V8 flags of the binaries).
 *
 * The two tunnel contenders run as daemons for the whole run, each on its
 * own topic prefix, and are reached through the cloud simulator's listener:
 * every client connection there becomes a 530 for the contender measured.
 *
 * @module
 */
import { type Cloud, type Operator, ROOT, stopProcess, which } from "./rig.ts";
import { v8FlagsArg } from "../scripts/compile.ts";

/** A contender, started. */
export interface Running extends AsyncDisposable {
  readonly name: string;
  /** Port a client connects to. */
  readonly port: number;
  /** The relay process whose memory and CPU are measured (null for `tcp`). */
  readonly pid: number | null;
  /** MQTT topic prefix of a tunnel contender (null: no 530 involved). */
  readonly prefix: string | null;
  /** One line on how it was started, for RESULTS.md. */
  readonly command: string;
  /**
   * Plugin mode (c8y-tunnel only): runs `connect "530,…"` with no daemon to
   * take it; resolves with the pid of the detached child holding the session.
   */
  readonly connect?: (line: string) => Promise<number>;
}

/** What a contender needs from the rig. */
export interface RigInfo {
  readonly dir: string;
  readonly brokerPort: number;
  readonly cloud: Cloud;
  readonly operator: Operator;
  readonly targetPort: number;
  readonly maxSessions: number;
}

/** The names, in the order they are measured in each round. */
export const CONTENDERS = [
  "tcp",
  "socat",
  "socat2",
  "c8y-tunnel",
  "c8y-b",
  "node-ws",
] as const;
/** A contender's name. */
export type ContenderName = typeof CONTENDERS[number];
/** The contenders measured when `--only` does not say. */
export const DEFAULT_CONTENDERS: readonly ContenderName[] = [
  "tcp",
  "socat",
  "c8y-tunnel",
  "node-ws",
];

/** Why a contender cannot run here, or null when it can. */
export function unavailable(name: ContenderName): string | null {
  switch (name) {
    case "socat":
    case "socat2":
      return which("socat") === null
        ? "socat is not installed (apt-get install socat)"
        : null;
    case "node-ws":
      if (which("node") === null) return "node is not installed";
      try {
        Deno.statSync(`${ROOT}bench/node-bridge/node_modules/ws/package.json`);
        return null;
      } catch {
        return "bench/node-bridge/node_modules is missing (run: npm ci --prefix bench/node-bridge)";
      }
    default:
      return null;
  }
}

/** Starts contender `name`; resolves once it takes requests. */
export function start(name: ContenderName, rig: RigInfo): Promise<Running> {
  switch (name) {
    case "tcp":
      return Promise.resolve({
        name,
        port: rig.targetPort,
        pid: null,
        prefix: null,
        command: "(none: the client connects to the target)",
        [Symbol.asyncDispose]: () => Promise.resolve(),
      });
    case "socat":
      return startSocat(rig);
    case "socat2":
      return startSocatChain(rig);
    case "c8y-tunnel":
      return startAgent(rig);
    case "c8y-b":
      return startAgent(rig, "b");
    case "node-ws":
      return startNodeBridge(rig);
  }
}

async function waitListening(port: number, child: Deno.ChildProcess) {
  const deadline = performance.now() + 10_000;
  let exited = false;
  child.status.then(() => exited = true);
  while (performance.now() < deadline && !exited) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
  throw new Error(`Cannot start socat: nothing listens on port ${port}`);
}

async function startSocat(rig: RigInfo): Promise<Running> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const args = [
    `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork,nodelay,backlog=512`,
    `TCP:127.0.0.1:${rig.targetPort},nodelay`,
  ];
  const child = new Deno.Command(which("socat")!, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  // The probe connection makes socat fork one child that dials the target
  // and greets: harmless, it ends at once.
  await waitListening(port, child);
  return {
    name: "socat",
    port,
    pid: child.pid,
    prefix: null,
    command: `socat ${args.join(" ")}`,
    [Symbol.asyncDispose]: () => stopProcess(child),
  };
}

/** Two socat relays in a row (client -> second -> first -> target). */
async function startSocatChain(rig: RigInfo): Promise<Running> {
  const first = await startSocat(rig);
  const second = await startSocat({ ...rig, targetPort: first.port });
  return {
    ...second,
    name: "socat2",
    command: `${second.command}, then ${first.command}`,
    [Symbol.asyncDispose]: async () => {
      await second[Symbol.asyncDispose]();
      await first[Symbol.asyncDispose]();
    },
  };
}

/** The agent's config for the bench: `prefix` and `service` keep daemon and plugin runs apart. */
function agentConfig(rig: RigInfo, prefix: string, service: string): string {
  return `[mqtt]
host = "127.0.0.1"
port = ${rig.brokerPort}
topic_prefix = "${prefix}"
client_id = "${service}-bench"

[health]
service_name = "${service}"

[c8y]
url = "${rig.cloud.url}"
device_id = "bench-device"
auth = "none"

[tunnel]
allow = ["127.0.0.1:${rig.targetPort}"]
max_sessions = ${rig.maxSessions}
connect_timeout = 10
idle_timeout = 0

[log]
level = "warn"
`;
}

/** Starts the agent; `variant` "b" is the second one of an A/B comparison. */
async function startAgent(rig: RigInfo, variant?: "b"): Promise<Running> {
  const suffix = variant ? `-${variant}` : "";
  const prefix = `c8y-agent${suffix}`;
  const service = `c8y-tunnel${suffix}`;
  const config = `${rig.dir}/${service}.toml`;
  await Deno.writeTextFile(config, agentConfig(rig, prefix, service));
  // Plugin mode: another prefix and service name, so no daemon takes its requests.
  const pluginConfig = `${rig.dir}/c8y-tunnel-plugin.toml`;
  await Deno.writeTextFile(
    pluginConfig,
    agentConfig(rig, "c8y-plugin", "c8y-tunnel-plugin"),
  );
  // As users start it: with the V8 flags of the binaries and the start
  // task. BENCH_AGENT_FLAGS replaces them with other `deno run` flags for
  // experiments (e.g. other V8 flags; "" for none).
  const extra = (Deno.env.get(`BENCH_AGENT_FLAGS${variant ? "_B" : ""}`) ??
    v8FlagsArg()).split(" ").filter(Boolean);
  const root =
    (variant && Deno.env.get("BENCH_AGENT_ROOT_B")?.replace(/\/?$/, "/")) ||
    ROOT;
  const runtime = ["run", "-A", ...extra, `${root}main.ts`];
  const args = [...runtime, "run", "--config", config];
  const ready = rig.operator.waitFor(
    (topic, payload) =>
      topic === `te/device/main/service/${service}/status/health` &&
      payload.includes('"up"'),
    `health up of ${service}`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  await ready;
  return {
    name: variant ? "c8y-b" : "c8y-tunnel",
    port: rig.cloud.port,
    pid: child.pid,
    prefix,
    command: `deno ${args.join(" ").replace(ROOT, "")}`.replace(
      rig.dir,
      "$TMP",
    ),
    connect: (line) => pluginSession(runtime, pluginConfig, line),
    [Symbol.asyncDispose]: () => stopProcess(child, 6000),
  };
}

/** Runs `connect --config FILE "530,…"`; resolves with the pid of the child it leaves. */
async function pluginSession(
  runtime: readonly string[],
  config: string,
  line: string,
): Promise<number> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...runtime, "connect", "--config", config, line],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  const pid = /in process (\d+)/.exec(decoder.decode(out.stdout));
  if (!out.success || pid === null) {
    const last = decoder.decode(out.stderr).trim().split("\n").at(-1);
    throw new Error(
      `connect exited with ${out.code} and no session process: ${last}`,
    );
  }
  return Number(pid[1]);
}

async function startNodeBridge(rig: RigInfo): Promise<Running> {
  const prefix = "c8y-node";
  const args = [
    `${ROOT}bench/node-bridge/bridge.mjs`,
    "--broker",
    `mqtt://127.0.0.1:${rig.brokerPort}`,
    "--url",
    rig.cloud.url,
    "--prefix",
    prefix,
  ];
  const ready = rig.operator.waitFor(
    (topic, payload) =>
      topic === "te/device/main/service/node-bridge/status/health" &&
      payload.includes('"up"'),
    "health up of the node bridge",
  );
  const child = new Deno.Command(which("node")!, {
    args,
    cwd: `${ROOT}bench/node-bridge`,
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  await ready;
  return {
    name: "node-ws",
    port: rig.cloud.port,
    pid: child.pid,
    prefix,
    command: `node ${args.join(" ").replace(ROOT, "")}`,
    [Symbol.asyncDispose]: () => stopProcess(child),
  };
}
