/**
 * `c8y-tunnel connect "530,…"`: one session for thin-edge's plugin mode
 * (DESIGN.md §1.3). tedge-mapper-c8y runs the command once per request and
 * reports 501, then 503 on exit 0 or 502 with the last stderr line; so this
 * command publishes no status, exits 0 only once both legs are up, and the
 * session must outlive it.
 *
 * Two ways, tried in order:
 * 1. Handoff (lib/handoff/): when a `c8y-tunnel run` daemon is up, the
 *    request goes to it over the local broker and the session lives in the
 *    daemon, which a restart of tedge-mapper-c8y (and its cgroup) does not
 *    touch.
 * 2. Detached child: the command starts itself again in a new session
 *    (`detached: true`) with {@linkcode CHILD_ENV} set; the child opens the
 *    tunnel (lib/session/serve.ts, as the daemon does) and writes one line on
 *    its stdout, `OK` or `FAIL <reason>`, then keeps the session. The parent
 *    then exits 0 or 1.
 *
 * What the mapper shows the user: on failure, the last stderr line is the
 * reason, and if stderr has more lines, all of them follow it. So at every
 * log level `connect` writes exactly one line to stderr, the reason, and
 * nothing on success; its log (parent and child) goes to `log.file`, or
 * nowhere; a handed-over session is logged by the daemon (the journal).
 *
 * @module
 */
import { resolve as resolvePath } from "node:path";
import type { OpenCloudLeg } from "../cloud/leg.ts";
import type { Config } from "../config/config.ts";
import { handOff } from "../handoff/client.ts";
import { MqttLink } from "../mqtt/link.ts";
import { parseConnectLine } from "../protocol/operations.ts";
import { formatTarget, Policy } from "../session/policy.ts";
import type { Dial } from "../session/pump.ts";
import { sessionBuilder } from "../session/serve.ts";
import { deadline, DeadlineError } from "../util/deadline.ts";
import { errorMessage } from "../util/errors.ts";
import {
  dropLines,
  fileLineWriter,
  type Logger,
  logger,
  setupLogging,
  shortKey,
} from "../util/log.ts";
import {
  type CliArgs,
  type CliHost,
  configFrom,
  type ExitCode,
} from "./host.ts";
import { type SelfCommand, selfCommand } from "./self.ts";

/** Set (to "1") in the environment of the detached child that holds the session. */
export const CHILD_ENV = "C8Y_TUNNEL_CONNECT_CHILD";

/** Extra time, beyond connect and JWT timeouts, that the parent waits for a result. */
const RESULT_MARGIN_MS = 5000;

/** Longest reason in UTF-8 bytes: the mapper cuts at 500 bytes, and a cut inside a character makes it fail. */
const REASON_MAX_BYTES = 480;

/** One line, for stderr and the operation's failure reason; at most {@linkcode REASON_MAX_BYTES}, cut between characters. */
export function oneLine(text: string): string {
  const line = text.replace(/[\r\n]+/g, " ").trim() || "remote access failed";
  let bytes = 0;
  let out = "";
  for (const ch of line) {
    bytes += new TextEncoder().encode(ch).length;
    if (bytes > REASON_MAX_BYTES) return `${out.trimEnd()}...`;
    out += ch;
  }
  return out;
}

/**
 * The `connect` command: the parent hands over or starts the session; in
 * the detached child ({@linkcode CHILD_ENV} set) it holds the session.
 */
export async function connectCommand(
  args: CliArgs,
  host: CliHost,
): Promise<ExitCode> {
  const line = args.rest[0];
  if (line === undefined) {
    host.stderr(
      'connect needs the request as its argument: c8y-tunnel connect "530,<device>,<host>,<port>,<key>"\n',
    );
    return 1;
  }
  // The mapper that runs us says which connection the request came from.
  let config: Config;
  try {
    config = await configFrom(args.config, host, { profileFromEnv: true });
  } catch (error) {
    // One line: the mapper shows the last stderr line as the reason.
    host.stderr(`${oneLine(errorMessage(error))}\n`);
    return 1;
  }
  // Never stderr: it is the failure reason that the mapper reports.
  setupLogging({
    ...config.log,
    write: config.log.file === "" ? dropLines : fileLineWriter(config.log.file),
  });
  if (host.env(CHILD_ENV) === "1") {
    return await runConnectChild(config, line, {
      shutdownRequested: host.shutdownRequested,
    });
  }
  return await runConnect(config, line, {
    childArgs: [
      "connect",
      ...(args.config !== undefined
        ? ["--config", resolvePath(args.config)]
        : []),
      line,
    ],
    stdout: host.stdout,
    stderr: host.stderr,
  });
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
        errorMessage(error)
      }`,
    );
  }
  // The child logs to log.file; its stderr carries only what escapes that
  // (a crash). Keep the end of it for the reason, never pass it on.
  const stderrReader = child.stderr.getReader();
  let childStderr = "";
  const relay = (async () => {
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await stderrReader.read();
        if (done) return;
        childStderr = (childStderr + decoder.decode(value, { stream: true }))
          .slice(-2048);
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
  const result = await deadline(
    verdict.catch(() => null),
    resultTimeoutMs,
    "no verdict",
  ).catch((error) => {
    if (error instanceof DeadlineError) return "timeout" as const;
    throw error;
  });

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
  const last = childStderr.trim().split("\n").at(-1)?.trim();
  return fail(
    `the session process ended (exit code ${status.code}) before the tunnel was up${
      last ? `: ${last}` : ""
    }`,
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
  const tunnel = sessionBuilder(config, {
    jwt: (signal) =>
      link
        ? link.requestJwt(signal)
        : Promise.reject(new Error("Cannot get a JWT: c8y.auth is not jwt")),
    log,
    ...(options.dial ? { dial: options.dial } : {}),
    ...(options.openCloudLeg ? { openCloudLeg: options.openCloudLeg } : {}),
  })(request);
  const result = await tunnel.open();
  await link?.close();
  if (!result.ok) {
    verdict(`${CHILD_FAIL}${oneLine(result.reason)}`);
    await tunnel.finished;
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
  await tunnel.finished;
  return 0;
}
