/**
 * `c8y-tunnel connect "530,…"`: one session for thin-edge's plugin mode
 * (DESIGN.md §1.3). tedge-mapper-c8y runs the command once per request and
 * reports 501, then 503 on exit 0 or 502 with the last stderr line; so this
 * command publishes no status, exits 0 only once both legs are up, and the
 * session must outlive it.
 *
 * Two ways, tried in order:
 * 1. Handoff: when a `c8y-tunnel run` daemon is up (its retained health says
 *    so), the request goes to it over a private MQTT request/response
 *    (`<service>/connect/request/<id>` -> `<service>/connect/result/<id>`);
 *    the daemon serves it like a 530 but answers there instead of reporting
 *    status. The session then lives in the daemon, which a restart of
 *    tedge-mapper-c8y (and its cgroup) does not touch.
 * 2. Detached child: the command starts itself again in a new session
 *    (`detached: true`) with {@linkcode CHILD_ENV} set; the child opens the
 *    tunnel and writes one line on its stdout, `OK` or `FAIL <reason>`, then
 *    keeps the session. The parent relays the child's log lines until then
 *    and exits 0 or 1.
 *
 * The broker is local and already trusted to trigger sessions (anyone who
 * may publish to `c8y/s/ds` can), so the handoff topic adds no new power;
 * the daemon still applies `tunnel.allow` and `tunnel.max_sessions`.
 *
 * @module
 */
import mqtt from "mqtt";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  authHeaders,
  type CloudAuth,
  deviceUrl,
  type OpenCloudLeg,
} from "../cloud/leg.ts";
import type { Config } from "../config/config.ts";
import { cloudLegOpenerFor } from "../cloud/opener.ts";
import { type Logger, logger, shortKey } from "../util/log.ts";
import { MqttLink, noDelay, topicsFor } from "../mqtt/link.ts";
import {
  type OperationStatus,
  parseSmartRest,
  type RemoteAccessRequest,
  shorten,
} from "../protocol/operations.ts";
import { formatTarget, Policy } from "../session/policy.ts";
import { type Dial, dialTcp } from "../session/pump.ts";
import { Tunnel, type TunnelSummary } from "../session/tunnel.ts";

/** Set (to "1") in the environment of the detached child that holds the session. */
export const CHILD_ENV = "C8Y_TUNNEL_CONNECT_CHILD";

/** How long `connect` waits for a running daemon to accept a handed-over request. */
export const HANDOFF_ACCEPT_MS = 2500;
/** A daemon ignores a handed-over request older than this (then `connect` serves it itself). */
export const HANDOFF_EXPIRES_MS = 1500;
/** How long `connect` waits for the daemon's retained health after subscribing. */
const HEALTH_WAIT_MS = 500;
/** Extra time, beyond connect and JWT timeouts, that the parent waits for a result. */
const RESULT_MARGIN_MS = 5000;

// ---------------------------------------------------------------- the line

/** The first 530 of `line` as a request, or the reason it cannot be served. */
export type ConnectRequest =
  | { readonly ok: true; readonly request: RemoteAccessRequest }
  | { readonly ok: false; readonly reason: string };

/** Parses the SmartREST payload given to `connect` (its first 530 record). */
export function parseConnectLine(line: string): ConnectRequest {
  const outcomes = parseSmartRest(line);
  const first = outcomes.find((o) => o.kind !== "ignored") ?? outcomes[0];
  if (first === undefined) {
    return {
      ok: false,
      reason:
        'no request given: expected a SmartREST 530 line "530,<device>,<host>,<port>,<key>"',
    };
  }
  switch (first.kind) {
    case "request":
      return { ok: true, request: first.request };
    case "rejected":
      return { ok: false, reason: first.reason };
    case "ignored":
      return {
        ok: false,
        reason:
          `not a remote access request (${first.reason}): expected "530,<device>,<host>,<port>,<key>"`,
      };
  }
}

/** One line, for stderr and the operation's failure reason. */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, " ").trim() || "remote access failed";
}

// ---------------------------------------------------------------- handoff protocol

/** Topics of the handoff between `connect` and a running daemon. */
export interface HandoffTopics {
  /** The daemon subscribes to this filter (`<service>/connect/request/+`). */
  readonly requestFilter: string;
  requestTopic(id: string): string;
  resultTopic(id: string): string;
  /** The daemon's retained health, which tells `connect` whether one is up. */
  readonly health: string;
}

/** The handoff topics for `config` (`health.service_name` is the root). */
export function handoffTopics(config: Config): HandoffTopics {
  const root = `${config.health.serviceName}/connect`;
  return {
    requestFilter: `${root}/request/+`,
    requestTopic: (id) => `${root}/request/${id}`,
    resultTopic: (id) => `${root}/result/${id}`,
    health: topicsFor(config).health,
  };
}

/** A handed-over request: the 530 line and when it stops being valid (unix ms). */
export interface HandoffRequest {
  readonly line: string;
  readonly expires: number;
}

/** The daemon's answers: accepted at once, then successful or failed. */
export type HandoffReply =
  | { readonly state: "accepted" }
  | { readonly state: "successful" }
  | { readonly state: "failed"; readonly reason: string };

const REQUEST_ID = /^[A-Za-z0-9-]{1,64}$/;

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function parseReply(text: string): HandoffReply | undefined {
  const value = parseJson(text) as Record<string, unknown> | undefined;
  if (typeof value !== "object" || value === null) return undefined;
  if (value.state === "accepted" || value.state === "successful") {
    return { state: value.state };
  }
  if (value.state === "failed") {
    return {
      state: "failed",
      reason: typeof value.reason === "string"
        ? value.reason
        : "remote access failed",
    };
  }
  return undefined;
}

/** Reports one status of a handed-over request (instead of a status line to the cloud). */
export type StatusReport = (status: OperationStatus, reason?: string) => void;

/** What {@linkcode HandoffServer} needs from the daemon. */
export interface HandoffServerDeps {
  readonly topics: HandoffTopics;
  readonly publish: (topic: string, payload: string) => Promise<void>;
  /** Serves a request like one from the cloud, its status going to `report`. */
  readonly serve: (request: RemoteAccessRequest, report: StatusReport) => void;
  readonly log: Logger;
  /** Unix ms; tests may fake it. */
  readonly now?: () => number;
}

/** How many request ids the server remembers to drop MQTT re-deliveries. */
const RECENT_IDS = 256;

/**
 * The daemon's side of the handoff: takes requests that `connect` hands
 * over, serves them through `serve`, and answers on the result topic.
 */
export class HandoffServer {
  readonly topics: HandoffTopics;
  readonly #deps: HandoffServerDeps;
  readonly #recent = new Set<string>();
  readonly #prefix: string;

  constructor(deps: HandoffServerDeps) {
    this.#deps = deps;
    this.topics = deps.topics;
    this.#prefix = deps.topics.requestFilter.slice(0, -1);
  }

  /** True for a topic of a handed-over request. */
  handles(topic: string): boolean {
    return topic.startsWith(this.#prefix);
  }

  /** Handles one request message; malformed, expired or repeated ones are dropped. */
  onMessage(topic: string, payload: string): void {
    const id = topic.slice(this.#prefix.length);
    if (!REQUEST_ID.test(id) || this.#recent.has(id)) return;
    this.#remember(id);
    const body = parseJson(payload) as Partial<HandoffRequest> | undefined;
    if (
      typeof body !== "object" || body === null ||
      typeof body.line !== "string" || typeof body.expires !== "number"
    ) {
      this.#deps.log.warn("dropped a malformed connect handoff: {payload}", {
        payload: shorten(payload, 120),
      });
      return;
    }
    const now = (this.#deps.now ?? Date.now)();
    if (now > body.expires) {
      this.#deps.log.info(
        "dropped a connect handoff that arrived {ms} ms late (connect serves it itself)",
        { ms: now - body.expires },
      );
      return;
    }
    const reply = (answer: HandoffReply) => {
      this.#deps.publish(
        this.topics.resultTopic(id),
        JSON.stringify(answer),
      ).catch((error) =>
        this.#deps.log.warn("could not answer a connect handoff: {error}", {
          error: String(error),
        })
      );
    };
    const report: StatusReport = (status, reason) => {
      if (status === "executing") reply({ state: "accepted" });
      else if (status === "successful") reply({ state: "successful" });
      else {
        reply({ state: "failed", reason: reason ?? "remote access failed" });
      }
    };
    const parsed = parseConnectLine(body.line);
    if (!parsed.ok) {
      report("executing");
      report("failed", parsed.reason);
      return;
    }
    this.#deps.serve(parsed.request, report);
  }

  #remember(id: string): void {
    this.#recent.add(id);
    if (this.#recent.size > RECENT_IDS) {
      const oldest = this.#recent.values().next().value;
      if (oldest !== undefined) this.#recent.delete(oldest);
    }
  }
}

/** The handoff's outcome as `connect` sees it. */
export type HandoffOutcome =
  | { readonly kind: "successful" }
  | { readonly kind: "failed"; readonly reason: string }
  /** No daemon took the request: serve it here. */
  | { readonly kind: "unavailable"; readonly why: string };

/**
 * Hands `line` to a running daemon: connects to the broker (its own client
 * id), looks at the daemon's retained health, publishes the request, and
 * waits for the daemon to accept it and then for the result. Resolves
 * `unavailable` when there is no broker, no daemon up, or no acceptance in
 * time; never rejects.
 */
export async function handOff(
  config: Config,
  line: string,
  options: { readonly resultTimeoutMs: number; readonly log: Logger },
): Promise<HandoffOutcome> {
  const topics = handoffTopics(config);
  const id = crypto.randomUUID();
  let client: mqtt.MqttClient;
  try {
    client = await withTimeout(
      mqtt.connectAsync({
        host: config.mqtt.host,
        port: config.mqtt.port,
        protocol: "mqtt",
        clientId: `${config.mqtt.clientId}-connect-${id.slice(0, 8)}`,
        clean: true,
        connectTimeout: 2000,
        reconnectPeriod: 0,
      }),
      2500,
      "broker did not answer",
    );
  } catch (error) {
    return {
      kind: "unavailable",
      why: `broker ${config.mqtt.host}:${config.mqtt.port}: ${
        error instanceof Error ? error.message : String(error)
      }`,
    };
  }
  noDelay(client);
  client.on("error", () => {});
  const health = Promise.withResolvers<string>();
  const replies: HandoffReply[] = [];
  let wake = () => {};
  client.on("message", (topic, payload) => {
    const text = new TextDecoder().decode(payload);
    if (topic === topics.health) health.resolve(text);
    else if (topic === topics.resultTopic(id)) {
      const reply = parseReply(text);
      if (reply) {
        replies.push(reply);
        wake();
      }
    }
  });
  try {
    await client.subscribeAsync([topics.health, topics.resultTopic(id)], {
      qos: 1,
    });
    const state = await withTimeout(health.promise, HEALTH_WAIT_MS, "")
      .then((text) => (parseJson(text) as { status?: unknown })?.status)
      .catch(() => undefined);
    if (state !== "up") {
      return {
        kind: "unavailable",
        why: `no c8y-tunnel daemon is up (health on ${topics.health}: ${
          state === undefined ? "none" : String(state)
        })`,
      };
    }
    const request: HandoffRequest = {
      line,
      expires: Date.now() + HANDOFF_EXPIRES_MS,
    };
    await client.publishAsync(
      topics.requestTopic(id),
      JSON.stringify(request),
      { qos: 1 },
    );
    const next = (ms: number) =>
      new Promise<HandoffReply | undefined>((resolve) => {
        const timer = setTimeout(() => {
          wake = () => {};
          resolve(replies.shift());
        }, ms);
        // Replies may arrive together (one read from the broker): a waiter
        // takes exactly one, and the rest stay for the next waiter.
        const take = () => {
          const reply = replies.shift();
          if (reply === undefined) return;
          wake = () => {};
          clearTimeout(timer);
          resolve(reply);
        };
        wake = take;
        take();
      });
    const first = await next(HANDOFF_ACCEPT_MS);
    if (first === undefined) {
      return {
        kind: "unavailable",
        why: `the daemon did not accept the request within ${
          HANDOFF_ACCEPT_MS / 1000
        } s`,
      };
    }
    options.log.debug("daemon accepted the request");
    const final = first.state === "accepted"
      ? await next(options.resultTimeoutMs)
      : first;
    if (final === undefined) {
      return {
        kind: "failed",
        reason: `the c8y-tunnel daemon gave no result within ${
          options.resultTimeoutMs / 1000
        } s`,
      };
    }
    return final.state === "failed"
      ? { kind: "failed", reason: final.reason }
      : { kind: "successful" };
  } catch (error) {
    return {
      kind: "unavailable",
      why: `handoff failed: ${
        error instanceof Error ? error.message : String(error)
      }`,
    };
  } finally {
    wake = () => {};
    await client.endAsync(true).catch(() => {});
  }
}

function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  message: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------- detached child

/** A command line that runs this program again: the binary itself, or `deno run` with main.ts. */
export interface SelfCommand {
  readonly command: string;
  readonly args: readonly string[];
}

const PERMISSIONS = [
  "read",
  "write",
  "net",
  "env",
  "run",
  "sys",
  "ffi",
  "import",
] as const;

/** `--allow-*` flags for the permissions this process holds unscoped (`-A` when it holds all). */
export function permissionFlags(): string[] {
  const granted: string[] = [];
  for (const name of PERMISSIONS) {
    try {
      const status = Deno.permissions.querySync(
        { name } as Deno.PermissionDescriptor,
      );
      if (status.state === "granted") granted.push(name);
    } catch {
      // A permission this runtime does not know.
    }
  }
  return granted.length === PERMISSIONS.length
    ? ["--allow-all"]
    : granted.map((name) => `--allow-${name}`);
}

/** Nearest deno.json(c) at or above `dir`, or null. */
function findDenoConfig(dir: string): string | null {
  let current = dir;
  for (;;) {
    for (const name of ["deno.json", "deno.jsonc"]) {
      const path = join(current, name);
      try {
        if (Deno.statSync(path).isFile) return path;
      } catch {
        // Not here.
      }
    }
    const parent = dirname(current);
    if (parent === current) return null;
    current = parent;
  }
}

/**
 * How to start this program again with `args`: a compiled binary runs
 * itself; under `deno run` (the executable is `deno`), the main module is run
 * again with the permissions this process holds and its deno.json, with
 * `--no-prompt` so that a missing permission fails instead of waiting.
 */
export function selfCommand(args: readonly string[]): SelfCommand {
  const exe = Deno.execPath();
  if (!/^deno(\.exe)?$/i.test(basename(exe))) {
    return { command: exe, args: [...args] };
  }
  const main = fileURLToPath(Deno.mainModule);
  const original = originalRunFlags(main);
  if (original !== null) {
    return {
      command: exe,
      args: [
        ...original,
        ...(original.includes("--no-prompt") ? [] : ["--no-prompt"]),
        main,
        ...args,
      ],
    };
  }
  const config = findDenoConfig(dirname(main));
  return {
    command: exe,
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      ...permissionFlags(),
      ...(config ? ["--config", config] : []),
      main,
      ...args,
    ],
  };
}

/**
 * `run` and the flags this `deno run` was started with, from
 * /proc/self/cmdline (Linux), so that scoped permissions and other flags
 * carry over exactly; null when that cannot be read or understood.
 */
function originalRunFlags(main: string): string[] | null {
  let argv: string[];
  try {
    argv = Deno.readTextFileSync("/proc/self/cmdline").split("\0");
  } catch {
    return null;
  }
  if (argv.at(-1) === "") argv.pop();
  if (argv[1] !== "run") return null;
  const at = argv.findIndex((arg, i) => {
    if (i < 2 || arg.startsWith("-")) return false;
    try {
      return (arg.startsWith("file:") ? fileURLToPath(arg) : resolve(arg)) ===
        main;
    } catch {
      return false;
    }
  });
  return at < 0 ? null : argv.slice(1, at);
}

/** The child's one-line verdict on its stdout. */
export const CHILD_OK = "OK";
/** Prefix of the child's failure line: `FAIL <reason>`. */
export const CHILD_FAIL = "FAIL ";

/** Options of {@linkcode runConnect}. */
export interface ConnectOptions {
  /** Arguments that make a child run this same request (`connect [--config F] line`). */
  readonly childArgs: readonly string[];
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Try a running daemon first (default true). */
  readonly handoff?: boolean;
  /** How to start the child; tests may replace it. */
  readonly selfCommand?: (args: readonly string[]) => SelfCommand;
  /** Environment of the child (default: this process's plus {@linkcode CHILD_ENV}). */
  readonly childEnv?: Record<string, string>;
  readonly log?: Logger;
}

/**
 * The parent side of `connect`: validates the request, hands it to a running
 * daemon or starts a detached child, and returns 0 once the tunnel is up or 1
 * with the reason as the last stderr line.
 */
export async function runConnect(
  config: Config,
  line: string,
  options: ConnectOptions,
): Promise<0 | 1> {
  const log = options.log ?? logger("connect");
  const fail = (reason: string): 1 => {
    options.stderr(`${oneLine(reason)}\n`);
    return 1;
  };
  const parsed = parseConnectLine(line);
  if (!parsed.ok) return fail(parsed.reason);
  const { request } = parsed;
  const target = formatTarget(request.host, request.port);
  const policy = new Policy(config.tunnel.allow, config.tunnel.maxSessions);
  if (!policy.allows(request.host, request.port)) {
    return fail(`target ${target} is not in tunnel.allow`);
  }
  const resultTimeoutMs = config.tunnel.connectTimeoutMs +
    config.c8y.jwtTimeoutMs + RESULT_MARGIN_MS;

  if (options.handoff ?? true) {
    const outcome = await handOff(config, line, { resultTimeoutMs, log });
    switch (outcome.kind) {
      case "successful":
        options.stdout(
          `connected to ${target} (session ${
            shortKey(request.key)
          } handed to the c8y-tunnel daemon)\n`,
        );
        return 0;
      case "failed":
        return fail(outcome.reason);
      case "unavailable":
        log.debug("serving the request itself: {why}", { why: outcome.why });
    }
  }
  return await spawnChild(options, resultTimeoutMs, target, request.key, fail);
}

async function spawnChild(
  options: ConnectOptions,
  resultTimeoutMs: number,
  target: string,
  key: string,
  fail: (reason: string) => 1,
): Promise<0 | 1> {
  const self = (options.selfCommand ?? selfCommand)(options.childArgs);
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(self.command, {
      args: [...self.args],
      env: options.childEnv ?? { [CHILD_ENV]: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      detached: true,
    }).spawn();
  } catch (error) {
    return fail(
      `cannot start the session process ${self.command}: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }
  // Relay the child's log lines until it has decided.
  const stderrReader = child.stderr.getReader();
  const relay = (async () => {
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await stderrReader.read();
        if (done) return;
        options.stderr(decoder.decode(value, { stream: true }));
      }
    } catch {
      // Cancelled once the child decided.
    }
  })();
  const stdoutReader = child.stdout.getReader();
  const verdict = (async (): Promise<string | null> => {
    const decoder = new TextDecoder();
    let text = "";
    for (;;) {
      const { value, done } = await stdoutReader.read();
      if (done) return text === "" ? null : text;
      text += decoder.decode(value, { stream: true });
      const newline = text.indexOf("\n");
      if (newline >= 0) return text.slice(0, newline);
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), resultTimeoutMs);
  });
  const result = await Promise.race([verdict.catch(() => null), timeout]);
  clearTimeout(timer);

  if (result === CHILD_OK) {
    await stdoutReader.cancel().catch(() => {});
    await stderrReader.cancel().catch(() => {});
    await relay;
    child.unref();
    options.stdout(
      `connected to ${target} (session ${
        shortKey(key)
      } in process ${child.pid})\n`,
    );
    return 0;
  }
  if (result === "timeout") {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
  await stdoutReader.cancel().catch(() => {});
  const status = await child.status;
  await relay;
  if (result === "timeout") {
    return fail(
      `the session process gave no result within ${resultTimeoutMs / 1000} s`,
    );
  }
  if (result !== null && result.startsWith(CHILD_FAIL)) {
    return fail(result.slice(CHILD_FAIL.length));
  }
  return fail(
    `the session process ended (exit code ${status.code}) before the tunnel was up`,
  );
}

/** Options of {@linkcode runConnectChild}. */
export interface ConnectChildOptions {
  /** Writes the verdict line; closes stdout after it (default: Deno.stdout). */
  readonly verdict?: (line: string) => void;
  /** Resolves on SIGTERM/SIGINT: the session is closed. */
  readonly shutdownRequested?: Promise<unknown>;
  readonly dial?: Dial;
  readonly openCloudLeg?: OpenCloudLeg;
  readonly log?: Logger;
}

function writeVerdict(line: string): void {
  try {
    Deno.stdout.writeSync(new TextEncoder().encode(`${line}\n`));
    Deno.stdout.close();
  } catch {
    // The parent is gone; nothing is waiting for the verdict.
  }
}

/**
 * The detached child of `connect`: opens the session, writes its verdict
 * (`OK` or `FAIL <reason>`), drops the broker connection (only the JWT
 * needed it), and returns once the session has ended. Publishes no status.
 */
export async function runConnectChild(
  config: Config,
  line: string,
  options: ConnectChildOptions = {},
): Promise<0 | 1> {
  const log = options.log ?? logger("connect");
  const verdict = options.verdict ?? writeVerdict;
  const parsed = parseConnectLine(line);
  if (!parsed.ok) {
    verdict(`${CHILD_FAIL}${oneLine(parsed.reason)}`);
    return 1;
  }
  const { request } = parsed;
  const policy = new Policy(config.tunnel.allow, config.tunnel.maxSessions);
  const admission = policy.admit(request.host, request.port, 0);
  if (!admission.ok) {
    verdict(`${CHILD_FAIL}${oneLine(admission.reason)}`);
    return 1;
  }
  const link = config.c8y.auth === "jwt"
    ? MqttLink.connect({
      config,
      log: logger("mqtt"),
      onMessage: () => {},
      health: false,
      operations: false,
      clientId: `${config.mqtt.clientId}-connect-${Deno.pid}`,
    })
    : null;
  const auth = async (signal: AbortSignal): Promise<CloudAuth> => {
    switch (config.c8y.auth) {
      case "jwt":
        return { kind: "jwt", token: await link!.requestJwt(signal) };
      case "basic":
        if (!config.c8y.credentials) {
          throw new Error("Cannot use basic auth: no credentials loaded");
        }
        return { kind: "basic", ...config.c8y.credentials };
      case "none":
        return { kind: "none" };
    }
  };
  const openCloudLeg = options.openCloudLeg ?? cloudLegOpenerFor(config);
  const url = deviceUrl(config.c8y.url, request.key);
  const tunnel = new Tunnel(request, {
    dial: options.dial ?? dialTcp,
    openCloud: async (signal) =>
      await openCloudLeg(url, {
        headers: authHeaders(await auth(signal)),
        signal,
      }),
    log,
  }, {
    connectTimeoutMs: config.tunnel.connectTimeoutMs,
    idleTimeoutMs: config.tunnel.idleTimeoutMs,
    maxDurationMs: config.tunnel.maxDurationMs,
  });
  const result = await tunnel.open();
  await link?.close();
  if (!result.ok) {
    verdict(`${CHILD_FAIL}${oneLine(result.reason)}`);
    return 1;
  }
  verdict(CHILD_OK);
  log.info("session {key} to {target} open (detached, pid {pid})", {
    key: shortKey(request.key),
    target: formatTarget(request.host, request.port),
    pid: Deno.pid,
  });
  const stop = options.shutdownRequested?.then(() =>
    tunnel.close("agent shutting down")
  );
  stop?.catch(() => {});
  const summary: TunnelSummary = await tunnel.finished;
  log.info("session {key} to {target} ended after {seconds} s ({reason})", {
    key: shortKey(summary.key),
    target: summary.target,
    seconds: (summary.durationMs / 1000).toFixed(1),
    reason: summary.reason,
  });
  return 0;
}
