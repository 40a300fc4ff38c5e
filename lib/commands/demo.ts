/**
 * `c8y-tunnel demo`: the whole remote-access path in one process, without a
 * config file or a tenant. An embedded MQTT broker, the local remote-access
 * simulator (the "cloud"), a small built-in HTTP target and the agent; one
 * client-side TCP listener per demo target, like Cumulocity's local proxy:
 * each connection to it becomes a 530 request and one tunnel session. The
 * cloud's view of each session (530, 501, 503/502) is printed as it happens;
 * the agent's own log lines (info level) go to stderr.
 *
 * @module
 */
import mqtt from "mqtt";
import { Agent } from "../daemon/agent.ts";
import { parseConfig } from "../config/config.ts";
import { setupLogging, shortKey } from "../util/log.ts";
import { topicsFor } from "../mqtt/topics.ts";
import { parseCsv } from "../protocol/csv.ts";
import { OPERATION_NAME } from "../protocol/operations.ts";
import { deadline } from "../util/deadline.ts";
import { errorMessage } from "../util/errors.ts";
import { stopWithinDeadline } from "./host.ts";
import { startBroker } from "../sim/broker.ts";
import {
  type ClientListener,
  RemoteAccessSim,
  smartRest530,
} from "../sim/cloud.ts";

/** External id of the demo's device (what the 530 lines carry). */
export const DEMO_DEVICE_ID = "demo-device";
/** Default client-side port for the SSH target (`ssh -p 2222 127.0.0.1`). */
export const DEFAULT_SSH_PORT = 2222;
/** Default client-side port for the HTTP target (`curl http://127.0.0.1:8080/`). */
export const DEFAULT_HTTP_PORT = 8080;

const LOOPBACK = "127.0.0.1";
/** How long start-up may wait for the agent's subscriptions. */
const READY_TIMEOUT_MS = 10_000;

/** Options of {@linkcode runDemo}. */
export interface DemoOptions {
  /** Client-side port for the SSH target. Default 2222 (a free port if taken); 0 = any free port. */
  readonly sshPort?: number;
  /** Client-side port for the HTTP target. Default 8080 (a free port if taken); 0 = any free port. */
  readonly httpPort?: number;
  /** Port of the SSH target on 127.0.0.1. Default 22; tests point it elsewhere. */
  readonly sshTargetPort?: number;
  /** The demo stops when this settles (Ctrl-C / SIGTERM in the CLI). */
  readonly shutdown: Promise<unknown>;
  /** Banner and session lifecycle lines. */
  readonly stdout: (text: string) => void;
  /** The agent's log lines and the demo's own warnings. */
  readonly stderr: (text: string) => void;
}

/** One demo target: where the agent connects and where the user connects. */
interface Target {
  readonly name: "http" | "ssh";
  readonly host: string;
  readonly port: number;
}

/** A session as the cloud sees it, for the lifecycle display. */
interface Watched {
  readonly key: string;
  readonly target: string;
}

/**
 * Correlates status lines with sessions the way Cumulocity does for
 * SmartREST statuses sent by name (they carry no key): 501 moves the oldest
 * requested session to executing, 503/502 ends the oldest executing one.
 */
class Lifecycle {
  readonly #print: (line: string) => void;
  readonly #requested: Watched[] = [];
  readonly #executing: Watched[] = [];

  constructor(print: (line: string) => void) {
    this.#print = print;
  }

  requested(session: Watched, listener: string): void {
    this.#requested.push(session);
    this.#line(
      session,
      `530 request for ${session.target} (client connected to ${listener})`,
    );
  }

  /** Handles one status payload (`<prefix>/s/us`). */
  status(payload: string): void {
    for (const fields of parseCsv(payload)) {
      if (fields[1] !== OPERATION_NAME) continue;
      switch (fields[0]) {
        case "501": {
          const session = this.#requested.shift();
          if (session) this.#executing.push(session);
          this.#line(session, "501 executing: the agent took the request");
          break;
        }
        case "503":
          this.#line(
            this.#takeExecuting(),
            "503 connected: both legs are up, bytes flow",
          );
          break;
        case "502":
          this.#line(
            this.#takeExecuting(),
            `502 failed: ${fields[2] ?? "(no reason given)"}`,
          );
          break;
      }
    }
  }

  #takeExecuting(): Watched | undefined {
    return this.#executing.shift() ?? this.#requested.shift();
  }

  #line(session: Watched | undefined, text: string): void {
    const label = session ? shortKey(session.key) : "?";
    this.#print(`[session ${label}] ${text}\n`);
  }
}

/** The built-in HTTP target: a friendly page proving the path works. */
function startHttpTarget(): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    { hostname: LOOPBACK, port: 0, onListen() {} },
    (request) => {
      const url = new URL(request.url);
      const body = [
        "Hello from the c8y-tunnel demo target!",
        "",
        "This page came through the tunnel:",
        "  your client -> local listener (like Cumulocity's local proxy)",
        "  -> remote-access simulator (the cloud) -> WebSocket",
        "  -> c8y-tunnel agent -> TCP -> this server.",
        "",
        `You asked for: ${request.method} ${url.pathname}`,
        "",
      ].join("\n");
      return new Response(body, {
        headers: { "content-type": "text/plain; charset=utf-8" },
      });
    },
  );
}

/** True when something accepts TCP connections on host:port right now. */
async function answers(host: string, port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: host, port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

function agentToml(
  brokerPort: number,
  simUrl: string,
  targets: readonly Target[],
): string {
  const allow = targets.map((t) => JSON.stringify(`${t.host}:${t.port}`));
  return `
[mqtt]
host = "${LOOPBACK}"
port = ${brokerPort}
client_id = "c8y-tunnel-demo-agent"
[c8y]
url = "${simUrl}"
device_id = "${DEMO_DEVICE_ID}"
auth = "none"
[tunnel]
allow = [${allow.join(", ")}]
connect_timeout = 10
[log]
level = "info"
`;
}

/**
 * Runs the demo until `options.shutdown` settles, then stops everything
 * (agent, listeners, simulator, HTTP target, broker) and resolves. Prints a
 * first stdout line `demo ready: http=127.0.0.1:PORT ssh=127.0.0.1:PORT`
 * once connections are accepted. Rejects if start-up fails (nothing is left
 * running then), e.g. when an explicitly given port is taken.
 */
export async function runDemo(options: DemoOptions): Promise<void> {
  await using stack = new AsyncDisposableStack();
  const { stdout, stderr } = options;
  setupLogging({ level: "info", format: "text", write: stderr });

  const broker = await startBroker({ hostname: LOOPBACK });
  stack.defer(() => broker.close());
  const sim = await RemoteAccessSim.start({ hostname: LOOPBACK });
  stack.defer(() => sim.close());
  const httpServer = startHttpTarget();
  stack.defer(() => httpServer.shutdown());

  const targets = {
    http: { name: "http", host: LOOPBACK, port: httpServer.addr.port },
    ssh: { name: "ssh", host: LOOPBACK, port: options.sshTargetPort ?? 22 },
  } as const satisfies Record<string, Target>;
  const sshAnswers = await answers(targets.ssh.host, targets.ssh.port);

  const lifecycle = new Lifecycle(stdout);
  const client = await mqtt.connectAsync(broker.url, {
    clientId: "c8y-tunnel-demo-cloud",
    reconnectPeriod: 0,
  });
  stack.defer(() => client.endAsync());
  client.on("message", (_topic, payload) => {
    lifecycle.status(new TextDecoder().decode(payload));
  });
  const config = parseConfig({
    file: "(demo built-in config)",
    text: agentToml(broker.port, sim.url, [targets.http, targets.ssh]),
    tedgeFile: null,
    tedgeText: null,
  });
  const topics = topicsFor(config);
  await client.subscribeAsync(topics.statusOut(DEMO_DEVICE_ID), { qos: 1 });
  const agent = new Agent(config);
  stack.defer(() => agent.close());
  await deadline(
    agent.ready,
    READY_TIMEOUT_MS,
    `Cannot start the demo: the agent did not subscribe on the embedded broker ${broker.url} within ${
      READY_TIMEOUT_MS / 1000
    } s`,
  );

  const notes: string[] = [];
  const listen = (
    target: Target,
    asked: number | undefined,
    fallback: number,
    flag: string,
  ): ClientListener => {
    const onRequest = async (key: string) => {
      const address = `${LOOPBACK}:${listener.port}`;
      lifecycle.requested(
        { key, target: `${target.host}:${target.port}` },
        address,
      );
      await client.publishAsync(
        topics.smartRestIn,
        smartRest530(DEMO_DEVICE_ID, target.host, target.port, key),
        { qos: 1 },
      );
    };
    const onError = (error: unknown, key: string) => {
      stderr(
        `[session ${shortKey(key)}] could not publish the 530 request: ${
          errorMessage(error)
        }\n`,
      );
    };
    const open = (port: number) =>
      sim.listen({ hostname: LOOPBACK, port, onRequest, onError });
    let listener: ClientListener;
    if (asked !== undefined) {
      try {
        listener = open(asked);
      } catch (error) {
        throw new Error(
          `${errorMessage(error)}: choose another ${flag} (0 = any free port)`,
          { cause: error },
        );
      }
    } else {
      try {
        listener = open(fallback);
      } catch {
        listener = open(0);
        notes.push(
          `port ${fallback} is not available, so the ${target.name} listener took ${LOOPBACK}:${listener.port} (choose one with ${flag})`,
        );
      }
    }
    stack.defer(() => listener.close());
    return listener;
  };
  const httpListener = listen(
    targets.http,
    options.httpPort,
    DEFAULT_HTTP_PORT,
    "--http-port",
  );
  const sshListener = listen(
    targets.ssh,
    options.sshPort,
    DEFAULT_SSH_PORT,
    "--ssh-port",
  );

  stdout(banner({
    brokerUrl: broker.url,
    simUrl: sim.url,
    httpPort: httpListener.port,
    sshPort: sshListener.port,
    httpTarget: targets.http,
    sshTarget: targets.ssh,
    sshAnswers,
    notes,
  }));

  await options.shutdown.catch(() => {});
  stdout("stopping: closing sessions, listeners, simulator and broker\n");
  // The agent goes first, so sessions end as "agent shutting down" (close
  // frame, TCP close, health down); `await using` then closes the rest in
  // reverse order of creation: listeners, MQTT client, HTTP target,
  // simulator, broker.
  await agent.close();
}

function banner(facts: {
  brokerUrl: string;
  simUrl: string;
  httpPort: number;
  sshPort: number;
  httpTarget: Target;
  sshTarget: Target;
  sshAnswers: boolean;
  notes: readonly string[];
}): string {
  const ssh = `${facts.sshTarget.host}:${facts.sshTarget.port}`;
  const sshState = facts.sshAnswers
    ? `an SSH server answered on ${ssh} at start-up`
    : `nothing answered on ${ssh} at start-up: a session will fail with 502, which shows how failures are reported`;
  const sshPortFlag = facts.sshPort === 22 ? "" : `-p ${facts.sshPort} `;
  return [
    `demo ready: http=${LOOPBACK}:${facts.httpPort} ssh=${LOOPBACK}:${facts.sshPort}`,
    "",
    "c8y-tunnel demo: everything runs in this process, no config, no tenant:",
    `  embedded MQTT broker         ${facts.brokerUrl}`,
    `  remote-access simulator      ${facts.simUrl}   (stands in for Cumulocity)`,
    `  agent                        device "${DEMO_DEVICE_ID}", tunnel.allow = ${facts.httpTarget.host}:${facts.httpTarget.port}, ${ssh}`,
    "Each connection to a port below becomes one 530 request and one session,",
    "like Cumulocity's local proxy (go-c8y-cli `c8y remoteaccess server`).",
    ...facts.notes.map((note) => `Note: ${note}.`),
    "",
    `HTTP (built-in page at ${facts.httpTarget.host}:${facts.httpTarget.port}):`,
    `  curl http://${LOOPBACK}:${facts.httpPort}/`,
    `SSH (to ${ssh}; ${sshState}):`,
    `  ssh ${sshPortFlag}${LOOPBACK}`,
    "",
    "Sessions appear below as the cloud sees them; the agent logs on stderr.",
    "Press Ctrl-C to stop.",
    "",
    "",
  ].join("\n");
}

/** Flags of `c8y-tunnel demo` as parsed from the command line (strings). */
export interface DemoFlags {
  readonly sshPort?: string | undefined;
  readonly httpPort?: string | undefined;
}

/** What `demo` needs from main.ts (a subset of the CLI host). */
export interface DemoHost {
  /** Resolves on SIGINT / SIGTERM. */
  readonly shutdownRequested: Promise<unknown>;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

/**
 * Parses a `--ssh-port` / `--http-port` value: undefined when not given.
 * @throws {RangeError} naming the flag, the value and what is expected.
 */
export function parsePortFlag(
  flag: string,
  value: string | undefined,
): number | undefined {
  if (value === undefined) return undefined;
  const port = /^\d{1,5}$/.test(value.trim()) ? Number(value) : NaN;
  if (!(port >= 0 && port <= 65535)) {
    throw new RangeError(
      `${flag} ${
        JSON.stringify(value)
      } is invalid: expected a port number from 0 to 65535 (0 = any free port)`,
    );
  }
  return port;
}

/**
 * The `demo` command: parses its flags, runs {@linkcode runDemo} until the
 * host asks to stop, and returns the exit code (0 after a stop, even when the
 * clean stop took longer than 4.5 s; 1 when start-up failed; 2 for a bad flag).
 */
export async function demoCommand(
  flags: DemoFlags,
  host: DemoHost,
): Promise<0 | 1 | 2> {
  let ports: { sshPort?: number; httpPort?: number };
  try {
    const sshPort = parsePortFlag("--ssh-port", flags.sshPort);
    const httpPort = parsePortFlag("--http-port", flags.httpPort);
    ports = {
      ...(sshPort !== undefined ? { sshPort } : {}),
      ...(httpPort !== undefined ? { httpPort } : {}),
    };
  } catch (error) {
    host.stderr(`c8y-tunnel demo: ${errorMessage(error)}\n`);
    return 2;
  }
  const stopped = runDemo({
    ...ports,
    shutdown: host.shutdownRequested,
    stdout: host.stdout,
    stderr: host.stderr,
  });
  try {
    const first = await Promise.race([
      stopped.then(() => "stopped" as const),
      host.shutdownRequested.then(() => "signal" as const),
    ]);
    if (first === "signal") {
      await stopWithinDeadline(stopped, host, "c8y-tunnel demo: stopping");
    }
    return 0;
  } catch (error) {
    host.stderr(`c8y-tunnel demo: ${errorMessage(error)}\n`);
    return 1;
  }
}
