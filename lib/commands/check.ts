/**
 * `c8y-tunnel check`: validates the config and tries what a session needs,
 * one line per item with OK or FAIL and a hint (DESIGN.md §2): config file,
 * tedge.toml, broker, credentials (a JWT from the thin-edge bridge, or the
 * basic credentials file), cloud reachability (an HTTPS `HEAD` through the
 * configured proxy and CAs), each `tunnel.allow` entry, and the thin-edge
 * operation file. Each probe has a short timeout; no secret is ever printed.
 *
 * @module
 */
import {
  type Config,
  ConfigError,
  DEFAULT_CONFIG_PATH,
  loadConfig,
} from "../config/config.ts";
import {
  type CloudHttpOptions,
  cloudHttpOptions,
  createCloudHttpClient,
} from "../cloud/opener.ts";
import { classifyError } from "../cloud/leg.ts";
import { brokerName } from "../mqtt/broker.ts";
import { jwtExpiry } from "../mqtt/jwt.ts";
import { MqttOnce, type ServiceHealth } from "../mqtt/once.ts";
import { errorMessage } from "../util/errors.ts";
import { splitWords } from "../util/shell_words.ts";
import type { CliArgs, CliHost, ExitCode } from "./host.ts";
import {
  declaredChildren,
  inspectOperationFile,
  type OperationFileState,
} from "./operation_file.ts";
import type { AllowRule } from "../config/config.ts";
import { describeOrigins } from "../config/origins.ts";

/** One checked item. */
export interface CheckLine {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
  /** What to do about it (always given for a failure). */
  readonly hint?: string;
}

/** Options of {@linkcode runCheck}. */
export interface CheckOptions {
  /** `--config` path, as for `loadConfig`. */
  readonly path?: string;
  readonly env?: (name: string) => string | undefined;
  /** Timeout of each network probe in ms (default 5000; the JWT waits at most c8y.jwt_timeout). */
  readonly probeTimeoutMs?: number;
}

/** The whole report; `ok` only when every line is OK. */
export interface CheckReport {
  readonly lines: readonly CheckLine[];
  readonly ok: boolean;
}

/** `OK   name: detail` or `FAIL name: detail (hint: ...)`, one line. */
export function formatCheckLine(line: CheckLine): string {
  const hint = line.hint ? ` (hint: ${line.hint})` : "";
  return `${line.ok ? "OK  " : "FAIL"} ${line.name}: ${
    line.detail.replace(/\s*\n\s*/g, "; ")
  }${hint}`;
}

/** The error's message and its cause's (fetch hides the reason in the cause). */
function message(error: unknown): string {
  const cause = error instanceof Error && error.cause instanceof Error
    ? `: ${error.cause.message}`
    : "";
  return `${errorMessage(error)}${cause}`;
}

const okLine = (name: string, detail: string, hint?: string): CheckLine =>
  hint ? { name, ok: true, detail, hint } : { name, ok: true, detail };
const failLine = (name: string, detail: string, hint: string): CheckLine => ({
  name,
  ok: false,
  detail,
  hint,
});

/**
 * Runs every check and returns the lines in a fixed order. A config that does
 * not load is the only line then, since everything else depends on it.
 */
export async function runCheck(
  options: CheckOptions = {},
): Promise<CheckReport> {
  const probeMs = options.probeTimeoutMs ?? 5000;
  let config: Config;
  try {
    config = await loadConfig({
      ...(options.path !== undefined ? { path: options.path } : {}),
      ...(options.env ? { env: options.env } : {}),
    });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    const line = failLine(
      "config",
      error.message,
      "fix the named file and key (see docs/config.md)",
    );
    return { lines: [line], ok: false };
  }
  const lines: CheckLine[] = [configLine(config), tedgeLine(config)];
  const [broker, cloud, operationFile] = await Promise.all([
    probeBroker(config, probeMs),
    probeCloud(config, probeMs),
    inspectOperationFile(config),
  ]);
  lines.push(broker.line, broker.auth, cloud);
  lines.push(...allowLines(config));
  lines.push(await operationFileLine(operationFile, broker.daemon));
  lines.push(childrenLine(await declaredChildren(config), broker.daemon));
  return { lines, ok: lines.every((line) => line.ok) };
}

function configLine(config: Config): CheckLine {
  return config.configFile !== null
    ? okLine("config file", `${config.configFile} is valid`)
    : okLine(
      "config file",
      `${DEFAULT_CONFIG_PATH} not found: using tedge.toml and built-in defaults`,
      "copy install/config.toml there to set tunnel.allow and the rest",
    );
}

function tedgeLine(config: Config): CheckLine {
  const origins = describeOrigins(config);
  return config.tedgeConfigFile !== null
    ? okLine("tedge.toml", `${config.tedgeConfigFile} read; ${origins}`)
    : okLine(
      "tedge.toml",
      `${config.tedge.configPath} not found: thin-edge settings not used; ${origins}`,
      "install thin-edge, or set tedge.config_path to its tedge.toml",
    );
}

/** The daemon's health as seen on the broker: undefined = broker not reached. */
type DaemonHealth = ServiceHealth | undefined;

/** What to change when the broker refused or could not be reached. */
function brokerHint(error: string): string {
  if (/not authori[sz]ed|bad user ?name or password/i.test(error)) {
    return "the broker refused the login: check mqtt.username and mqtt.password_file (or mqtt.client.auth.username/password_file in tedge.toml)";
  }
  if (/certificate|self.signed|handshake|tls|ssl/i.test(error)) {
    return "TLS to the broker failed: check mqtt.ca_file/ca_dir (the broker's CA) and mqtt.cert_file/key_file (or mqtt.client.auth.* in tedge.toml)";
  }
  return "is mosquitto running? set mqtt.host and mqtt.port (or mqtt.client.host/port in tedge.toml)";
}

async function probeBroker(
  config: Config,
  probeMs: number,
): Promise<{ line: CheckLine; auth: CheckLine; daemon: DaemonHealth }> {
  const broker = brokerName(config);
  let client: MqttOnce;
  try {
    client = await MqttOnce.connect(config, {
      purpose: "check",
      timeoutMs: probeMs,
    });
  } catch (error) {
    const text = message(error);
    const line = failLine(
      "broker",
      `cannot connect to ${broker}: ${text}`,
      brokerHint(text),
    );
    return { line, auth: authWithoutBroker(config), daemon: undefined };
  }
  await using _ = client;
  const { topics } = client;
  try {
    await client.subscribe(
      config.c8y.auth === "jwt"
        ? [topics.health, topics.jwtResponse]
        : [topics.health],
    );
  } catch (error) {
    const line = failLine(
      "broker",
      `${broker} accepted the connection but not the subscription: ${
        message(error)
      }`,
      "is the broker overloaded, or does its ACL deny this client those topics?",
    );
    return { line, auth: authWithoutBroker(config), daemon: undefined };
  }
  const line = okLine("broker", `${broker} accepted the connection`);
  const auth = config.c8y.auth === "jwt"
    ? await probeJwt(config, client, probeMs)
    : credentialsLine(config);
  const daemon = await client.health(500);
  return { line, auth, daemon };
}

/** The JWT (or credentials) line when the broker cannot be asked. */
function authWithoutBroker(config: Config): CheckLine {
  return config.c8y.auth === "jwt"
    ? failLine(
      "JWT",
      "cannot ask for one: the broker is not reachable",
      "fix the broker first",
    )
    : credentialsLine(config);
}

async function probeJwt(
  config: Config,
  client: MqttOnce,
  probeMs: number,
): Promise<CheckLine> {
  const { topics } = client;
  try {
    const jwt = await client.jwt(Math.min(probeMs, config.c8y.jwtTimeoutMs));
    const exp = jwtExpiry(jwt);
    const left = exp === null
      ? "no expiry in the token"
      : `valid for ${Math.round((exp - Date.now() / 1000) / 60)} more min`;
    return okLine("JWT", `obtained from the thin-edge bridge (${left})`);
  } catch (error) {
    return failLine(
      "JWT",
      `cannot get one from the thin-edge bridge: ${message(error)}`,
      `is tedge-mapper-c8y running and connected (tedge connect c8y)? It answers ${topics.jwtRequest} on ${topics.jwtResponse}; or set c8y.auth`,
    );
  }
}

function credentialsLine(config: Config): CheckLine {
  if (config.c8y.auth === "basic") {
    return okLine(
      "credentials",
      `${config.c8y.credentialsPath} read (user name and password set)`,
    );
  }
  return okLine(
    "credentials",
    "c8y.auth = none: the cloud leg sends no credentials",
    "only the local simulator accepts that; use jwt or basic with Cumulocity",
  );
}

async function probeCloud(config: Config, probeMs: number): Promise<CheckLine> {
  const url = `${config.c8y.httpUrl}/service/remoteaccess/health`;
  let http: CloudHttpOptions | null;
  try {
    http = await cloudHttpOptions(config);
  } catch (error) {
    return failLine(
      "cloud",
      message(error),
      "fix c8y.root_cert_path (a PEM file or a directory of them)",
    );
  }
  const via = http?.proxy ? ` through proxy ${http.proxy.url}` : "";
  const client = http ? createCloudHttpClient(http) : undefined;
  try {
    const response = await fetch(url, {
      method: "HEAD",
      signal: AbortSignal.timeout(probeMs),
      ...(client ? { client } : {}),
    });
    await response.body?.cancel();
    return okLine(
      "cloud",
      `${config.c8y.httpUrl} reachable${via} (HEAD /service/remoteaccess/health: HTTP ${response.status})`,
    );
  } catch (error) {
    const text = error instanceof DOMException && error.name === "TimeoutError"
      ? `no answer within ${probeMs / 1000} s`
      : message(error);
    const kind = classifyError(error);
    const hint = kind.kind === "certificate"
      ? "the server's certificate is not trusted: set c8y.root_cert_path to its CA (PEM)"
      : kind.kind === "status" && (kind.status === 407 || kind.status === 401)
      ? "check proxy.address, proxy.username and proxy.password"
      : http?.proxy
      ? "check proxy.address and that the proxy may reach the cloud"
      : "check c8y.url, DNS and the network (or set proxy.address)";
    return failLine(
      "cloud",
      `cannot reach ${config.c8y.httpUrl}${via}: ${text}`,
      hint,
    );
  } finally {
    client?.close();
  }
}

function describeRule(rule: AllowRule): string {
  const text = rule.text.slice(0, rule.text.lastIndexOf(":"))
    .replace(/^\[|\]$/g, "");
  const single = rule.host.kind === "cidr" &&
    rule.host.bits === (rule.host.family === 4 ? 32 : 128);
  const host = rule.host.kind === "any"
    ? "any host"
    : rule.host.kind === "name"
    ? `host ${rule.host.name}`
    : single
    ? `host ${text.replace(/\/\d+$/, "")}`
    : `addresses in ${text}`;
  return `${host}, ${rule.port === "*" ? "any port" : `port ${rule.port}`}`;
}

function allowLines(config: Config): CheckLine[] {
  if (config.tunnel.allow.length === 0) {
    return [
      failLine(
        "tunnel.allow",
        "is empty: every request will be refused",
        'add the targets to reach, e.g. allow = ["127.0.0.1:22"]',
      ),
    ];
  }
  return config.tunnel.allow.map((rule, i) => {
    const name = `tunnel.allow[${i}] ${JSON.stringify(rule.text)}`;
    const wide = rule.host.kind === "any" && rule.port === "*";
    return okLine(
      name,
      describeRule(rule),
      wide
        ? "this lets the cloud reach anything the device can: narrow it"
        : undefined,
    );
  });
}

/** The child devices that declare remote access (operations/c8y/<id>/), which only the daemon serves. */
function childrenLine(
  children: readonly string[],
  daemon: DaemonHealth,
): CheckLine {
  const name = "child devices";
  if (children.length === 0) {
    return okLine(
      name,
      "none declare remote access",
      "`c8y-tunnel init --child <external id>` declares it for a child device",
    );
  }
  const list = `remote access declared for ${children.join(", ")}`;
  return daemon?.status === "down" || daemon?.status === "none"
    ? failLine(
      name,
      `${list}, but no c8y-tunnel daemon is up: their requests go unanswered`,
      "start `c8y-tunnel run` (systemctl enable --now c8y-tunnel): tedge-mapper-c8y never runs a command for a child",
    )
    : okLine(
      name,
      daemon === undefined
        ? `${list}; the c8y-tunnel daemon serves them (its state is unknown: broker not reachable)`
        : `${list}; served by the c8y-tunnel daemon`,
    );
}

async function operationFileLine(
  state: OperationFileState,
  daemon: DaemonHealth,
): Promise<CheckLine> {
  const name = "operation file";
  const daemonText = daemon === undefined
    ? "daemon state unknown (broker not reachable)"
    : daemon.status === "up"
    ? `c8y-tunnel daemon is up${daemon.pid ? ` (pid ${daemon.pid})` : ""}`
    : "no c8y-tunnel daemon is up";
  switch (state.kind) {
    case "none":
      return failLine(
        name,
        `${state.path} does not exist: Cumulocity will not offer remote access for this device`,
        "run `c8y-tunnel init` (plugin mode) or `c8y-tunnel init --daemon` (with `c8y-tunnel run`)",
      );
    case "invalid":
      return failLine(
        name,
        `${state.path}: ${state.reason}`,
        "run `c8y-tunnel init` (or `init --daemon`) to write it again",
      );
    case "foreign":
      return state.thinEdgePlugin
        ? failLine(
          name,
          `${state.path} runs thin-edge's own plugin (${
            JSON.stringify(state.command)
          }), not c8y-tunnel: it reports refused targets and failed sessions as successful`,
          "remove or disable thin-edge's plugin first (apt remove c8y-remote-access-plugin), then run `c8y-tunnel init`; a tedge upgrade that reinstalls the plugin writes its file back",
        )
        : failLine(
          name,
          `${state.path} runs ${JSON.stringify(state.command)}, not c8y-tunnel`,
          "run `c8y-tunnel init` to take it over if c8y-tunnel should answer remote access requests",
        );
    case "daemon":
      return daemon?.status === "up"
        ? okLine(name, `daemon mode (no [exec]); ${daemonText}`)
        : failLine(
          name,
          `daemon mode (no [exec]) but ${daemonText}: requests go unanswered`,
          "start `c8y-tunnel run` (systemctl enable --now c8y-tunnel), or switch to plugin mode with `c8y-tunnel init`",
        );
    case "plugin": {
      // The mapper splits the command shell-style: so do we.
      let program = "";
      try {
        program = splitWords(state.command)[0] ?? "";
      } catch {
        // Unbalanced quotes: the mapper cannot run it either.
      }
      const exists = await Deno.stat(program).then(
        (s) => s.isFile,
        () => false,
      );
      if (!exists) {
        return failLine(
          name,
          `plugin mode, but its command ${program} does not exist`,
          "run `c8y-tunnel init` again from the installed binary",
        );
      }
      return okLine(
        name,
        `plugin mode: tedge-mapper-c8y runs "${state.command}"; ${daemonText}${
          daemon?.status === "up" ? " and takes the requests" : ""
        }`,
      );
    }
  }
}

/** `check`: one OK/FAIL line per item; exit 0 only when all are OK. */
export async function checkCommand(
  args: CliArgs,
  host: CliHost,
): Promise<ExitCode> {
  const report = await runCheck({
    ...(args.config !== undefined ? { path: args.config } : {}),
    env: host.env,
  });
  for (const line of report.lines) host.stdout(`${formatCheckLine(line)}\n`);
  return report.ok ? 0 : 1;
}
