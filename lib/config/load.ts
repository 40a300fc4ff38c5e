/**
 * The one pipeline that turns our TOML file, thin-edge's files and the
 * defaults into one validated, frozen {@link Config} (DESIGN.md §1.3, §2).
 * The assembly is pure and asks for each file it needs in turn (it is a
 * generator); {@link parseConfig} answers from texts already read and
 * {@link loadConfig} from the file system. This is the only code that reads
 * the environment or files for settings.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { ConfigError, fail, show } from "./_messages.ts";
import { commonName, parseCredentials } from "./credentials.ts";
import {
  DEFAULT_TEDGE_CONFIG_PATH,
  DEFAULTS,
  type Key,
  KEYS,
  readOwnFile,
  type Setting,
  type Settings,
  type Values,
} from "./schema.ts";
import { profileChoice, readTedgeFile, type TedgeSettings } from "./tedge.ts";
import type { AuthMethod, Config, Credentials } from "./types.ts";

/** Where loadConfig() reads files and the environment from; defaults are Deno's. */
export interface LoadConfigOptions {
  /** Config file path from `--config`; wins over env C8Y_TUNNEL_CONFIG. */
  readonly path?: string;
  readonly env?: (name: string) => string | undefined;
  readonly readTextFile?: (path: string) => Promise<string>;
}

/** Texts already read, for parseConfig(); null = the file does not exist. */
export interface ConfigInput {
  /** Path of our config file (for messages). */
  readonly file: string | null;
  readonly text: string | null;
  readonly tedgeFile: string | null;
  readonly tedgeText: string | null;
  /** Basic credentials file; null/absent = it does not exist. */
  readonly credentialsText?: string | null;
  /** PEM of the device certificate, whose CN is the fallback device id. */
  readonly deviceCertText?: string | null;
}

/** Our config file when neither `--config` nor C8Y_TUNNEL_CONFIG names one. */
export const DEFAULT_CONFIG_PATH = "/etc/c8y-tunnel/config.toml";
/** Environment variable naming our config file. */
export const CONFIG_PATH_ENV = "C8Y_TUNNEL_CONFIG";

/** Everything known before the credentials file and device certificate are read. */
interface Draft {
  readonly file: string;
  readonly configFile: string | null;
  readonly tedgeFile: string | null;
  readonly tedgePath: string;
  readonly settings: Settings;
  readonly auth: Setting<AuthMethod | "auto">;
  readonly credentialsPath: string;
  /** Device certificate to read for the CN when no device id is set, else null. */
  readonly certPath: string | null;
  readonly certDefaultPath: string;
  /** The tedge.toml profile in use, as tedge.toml spells it; "" = default. */
  readonly profile: string;
}

/** Ours over tedge.toml over defaults. */
function merge(
  file: string,
  configFile: string | null,
  ours: Settings,
  tedgePath: string,
  tedgeFile: string | null,
  tedge: TedgeSettings,
): Draft {
  const settings: Settings = new Map();
  for (const key of KEYS) {
    const setting = ours.get(key) ?? tedge.settings.get(key) ??
      (Object.hasOwn(DEFAULTS, key)
        ? { value: DEFAULTS[key as keyof typeof DEFAULTS], from: "default" }
        : undefined);
    if (setting) settings.set(key, setting);
  }
  const auth = (ours.get("c8y.auth") as Setting<AuthMethod> | undefined) ??
    tedge.auth ?? { value: DEFAULTS["c8y.auth"], from: "default" };
  if (
    tedge.profile !== "" &&
    settings.get("mqtt.topic_prefix")?.from === "default"
  ) {
    // thin-edge would use "c8y" too, the default connection's topics: the
    // requests of another tenant. tedge connect refuses such a profile.
    const name = tedge.profile;
    throw new ConfigError(
      `${tedgePath}: key c8y.profiles.${name}.bridge.topic_prefix is not set, so profile ${name} would share the topic prefix "c8y" of the default connection: set it (sudo tedge config set c8y.bridge.topic_prefix c8y-${name} --profile ${name}), or set topic_prefix under [mqtt] in ${file}`,
    );
  }
  const certDefaultPath = join(
    dirname(tedgePath),
    "device-certs",
    "tedge-certificate.pem",
  );
  return {
    file,
    configFile,
    tedgeFile,
    tedgePath,
    settings,
    auth,
    credentialsPath: settings.get("c8y.credentials_path")?.value as string,
    certPath: settings.has("c8y.device_id")
      ? null
      : tedge.certPath ?? certDefaultPath,
    certDefaultPath,
    profile: tedge.profile,
  };
}

/** Resolves auth, credentials and device id, checks required keys, freezes. */
function finish(
  draft: Draft,
  credentialsText: string | null,
  certText: string | null,
): Config {
  const { settings, file } = draft;
  const get = <K extends Key>(key: K) =>
    settings.get(key)?.value as Values[K] | undefined;
  const issues: string[] = [];

  let deviceId = get("c8y.device_id");
  if (deviceId === undefined && draft.certPath !== null && certText !== null) {
    deviceId = commonName(draft.certPath, certText);
  }
  const table = draft.profile === "" ? "c8y" : `c8y.profiles.${draft.profile}`;
  const option = draft.profile === "" ? "" : ` --profile ${draft.profile}`;
  if (deviceId === undefined) {
    issues.push(
      `c8y.device_id is not set: set device_id under [c8y] in ${file}, or device.id in ${draft.tedgePath}, or install the device certificate ${
        draft.certPath ?? draft.certDefaultPath
      } (its CN is the device id; tedge key device.cert_path)`,
    );
  }
  const url = get("c8y.url");
  if (url === undefined) {
    issues.push(
      `c8y.url is not set: set url under [c8y] in ${file} (e.g. url = "https://example.cumulocity.com"), or ${table}.url in ${draft.tedgePath} (tedge config set c8y.url <host>${option})`,
    );
  }
  fail(issues);

  const auth: AuthMethod = draft.auth.value === "auto"
    ? (credentialsText === null ? "jwt" : "basic")
    : draft.auth.value;
  let credentials: Credentials | null = null;
  if (auth === "basic") {
    if (credentialsText === null) {
      throw new ConfigError(
        `${draft.credentialsPath}: credentials file does not exist, but auth is basic (${draft.auth.from}): create it with [c8y] username = "<tenant>/<user>" and password = "...", or set c8y.credentials_path`,
      );
    }
    credentials = parseCredentials(draft.credentialsPath, credentialsText);
  }

  const config: Config = {
    configFile: draft.configFile,
    tedgeConfigFile: draft.tedgeFile,
    mqtt: {
      host: get("mqtt.host")!,
      port: get("mqtt.port")!,
      topicPrefix: get("mqtt.topic_prefix")!,
      clientId: get("mqtt.client_id")!,
      maxPayloadBytes: get("mqtt.max_payload")!,
    },
    c8y: {
      url: url!,
      deviceId: deviceId!,
      auth,
      credentialsPath: draft.credentialsPath,
      credentials,
      rootCertPath: get("c8y.root_cert_path")!,
      jwtTimeoutMs: get("c8y.jwt_timeout")!,
      profile: draft.profile,
    },
    tunnel: {
      allow: get("tunnel.allow")!,
      maxSessions: get("tunnel.max_sessions")!,
      connectTimeoutMs: get("tunnel.connect_timeout")!,
      idleTimeoutMs: get("tunnel.idle_timeout")!,
      maxDurationMs: get("tunnel.max_duration")!,
    },
    log: { level: get("log.level")!, format: get("log.format")! },
    proxy: {
      address: get("proxy.address")!,
      username: get("proxy.username")!,
      password: get("proxy.password")!,
    },
    health: {
      topicRoot: get("health.topic_root")!,
      serviceName: get("health.service_name")!,
    },
    tedge: { configPath: draft.tedgePath, configDir: dirname(draft.tedgePath) },
  };
  return deepFreeze(config);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/**
 * A file the assembly needs next, by what it is for; answered with the
 * file's text, or null when it does not exist.
 */
interface FileRequest {
  readonly role: "tedge" | "credentials" | "cert";
  readonly path: string;
  /** The key of our file that named this path; such a file must exist. */
  readonly namedBy?: { readonly file: string; readonly key: Key };
}
type Assembly = Generator<FileRequest, Config, string | null>;

/** Where the assembly starts: our file (already located) and its text. */
interface Start {
  readonly file: string;
  readonly text: string | null;
  /** tedge.toml's path when our file does not set tedge.config_path. */
  readonly tedgePath: string;
}

/** Ours, then tedge.toml, then credentials and certificate as needed, then finish(). */
function* assemble(start: Start): Assembly {
  const { file, text } = start;
  const ours = readOwnFile(file, text);
  const named = ours.get("tedge.config_path")?.value as string | undefined;
  const tedgePath = named ?? start.tedgePath;
  const tedgeText = yield {
    role: "tedge",
    path: tedgePath,
    ...(named === undefined
      ? {}
      : { namedBy: { file, key: "tedge.config_path" as const } }),
  };
  const draft = merge(
    file,
    text === null ? null : file,
    ours,
    tedgePath,
    tedgeText === null ? null : tedgePath,
    readTedgeFile(tedgePath, tedgeText, profileChoice(file, ours)),
  );
  const credentialsText =
    draft.auth.value === "jwt" || draft.auth.value === "none"
      ? null
      : yield { role: "credentials", path: draft.credentialsPath };
  const certText = draft.certPath === null
    ? null
    : yield { role: "cert", path: draft.certPath };
  return finish(draft, credentialsText, certText);
}

// ---------------------------------------------------------------- public API

/**
 * Builds a Config from texts already read (pure; used by tests and `check`).
 * A null text means that file does not exist. With auth "auto" from
 * tedge.toml, a given credentialsText selects basic, else jwt.
 * @throws {ConfigError} naming file, key, value and expectation.
 */
export function parseConfig(input: ConfigInput): Config {
  const steps = assemble({
    file: input.file ?? DEFAULT_CONFIG_PATH,
    text: input.text,
    tedgePath: input.tedgeFile ?? DEFAULT_TEDGE_CONFIG_PATH,
  });
  const answers: { readonly [R in FileRequest["role"]]: string | null } = {
    tedge: input.tedgeText,
    credentials: input.credentialsText ?? null,
    cert: input.deviceCertText ?? null,
  };
  let step = steps.next();
  while (!step.done) step = steps.next(answers[step.value.role]);
  return step.value;
}

/**
 * Loads the config file (`options.path`, else env C8Y_TUNNEL_CONFIG, else
 * DEFAULT_CONFIG_PATH), tedge.toml, the credentials file (auth basic/auto)
 * and the device certificate (when no device id is set). A missing default
 * file is fine; a missing file that was asked for is an error.
 * @throws {ConfigError} naming file, key, value and expectation.
 */
export async function loadConfig(
  options: LoadConfigOptions = {},
): Promise<Config> {
  const env = options.env ?? ((name: string) => Deno.env.get(name));
  const read = options.readTextFile ??
    ((path: string) => Deno.readTextFile(path));
  const fromEnv = env(CONFIG_PATH_ENV);
  const [file, askedBy] = options.path !== undefined
    ? [options.path, "--config"]
    : fromEnv !== undefined && fromEnv !== ""
    ? [fromEnv, `environment variable ${CONFIG_PATH_ENV}`]
    : [DEFAULT_CONFIG_PATH, null];
  if (file.trim() === "") {
    throw new ConfigError(
      `the config file path given by ${askedBy} is empty: give a file path`,
    );
  }
  const text = await readOptional(read, file);
  if (text === null && askedBy !== null) {
    throw new ConfigError(
      `${file}: config file does not exist (given by ${askedBy}): create it or correct the path`,
    );
  }
  const steps = assemble({
    file,
    text,
    tedgePath: DEFAULT_TEDGE_CONFIG_PATH,
  });
  let step = steps.next();
  while (!step.done) {
    const { path, namedBy } = step.value;
    const answer = await readOptional(read, path);
    if (answer === null && namedBy !== undefined) {
      throw new ConfigError(
        `${namedBy.file}: key ${namedBy.key} = ${
          show(path)
        } is invalid: expected an existing tedge.toml (remove the key if thin-edge is not installed)`,
      );
    }
    step = steps.next(answer);
  }
  return step.value;
}

/** File text, or null when it does not exist; other failures are ConfigErrors. */
async function readOptional(
  read: (path: string) => Promise<string>,
  path: string,
): Promise<string | null> {
  try {
    return await read(path);
  } catch (error) {
    if (
      error instanceof Deno.errors.NotFound ||
      (error as { code?: unknown } | null)?.code === "ENOENT"
    ) return null;
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError(`${path}: cannot read file: ${reason}`);
  }
}
