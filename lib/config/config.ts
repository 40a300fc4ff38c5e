/**
 * Configuration: our TOML file, then thin-edge's tedge.toml for what ours
 * leaves unset, then built-in defaults, merged into one validated, frozen
 * {@link Config} (DESIGN.md §1.3, §2). This is the only module that reads the
 * environment or files for settings.
 *
 * @module
 */
import { X509Certificate } from "node:crypto";
import { dirname, join } from "node:path";
import { parse as parseToml, TomlError } from "smol-toml";
import { parseAllowEntry } from "../session/policy.ts";

/** How the cloud leg authenticates: a JWT fetched over MQTT, HTTP Basic, or nothing (local tests). */
export type AuthMethod = "jwt" | "basic" | "none";
/** Lowest level of log records that are written. */
export type LogLevel = "debug" | "info" | "warn" | "error";
/** Log line format: human-readable text or one JSON object per line. */
export type LogFormat = "text" | "json";

/** Basic-auth credentials; `username` is "<tenant>/<user>" as given in the file. */
export interface Credentials {
  readonly username: string;
  readonly password: string;
}

/** The validated, read-only settings of the agent. Durations are in ms. */
export interface Config {
  /** Path of our config file that was read; null when the default one did not exist. */
  readonly configFile: string | null;
  /** Path of the tedge.toml that was read, or null. */
  readonly tedgeConfigFile: string | null;
  readonly mqtt: {
    readonly host: string;
    readonly port: number;
    readonly topicPrefix: string;
    readonly clientId: string;
    /**
     * Largest MQTT packet payload accepted from the broker, in bytes (key
     * mqtt.max_payload). Cumulocity never sends one above 16 KiB.
     */
    readonly maxPayloadBytes: number;
  };
  readonly c8y: {
    /** Scheme + host[:port], no trailing slash, e.g. "https://t1.cumulocity.com". */
    readonly url: string;
    readonly deviceId: string;
    readonly auth: AuthMethod;
    readonly credentialsPath: string;
    /** Read from credentialsPath when auth = "basic", else null. */
    readonly credentials: Credentials | null;
    /** Extra CA certificates (PEM file or directory); "" = none. */
    readonly rootCertPath: string;
    /** How long to wait for `71,<jwt>` (key c8y.jwt_timeout, seconds). */
    readonly jwtTimeoutMs: number;
    /**
     * thin-edge cloud profile whose `[c8y.profiles.<name>]` table of
     * tedge.toml supplied the fallbacks, spelt as tedge.toml spells it;
     * "" = the default `[c8y]` table.
     */
    readonly profile: string;
  };
  readonly tunnel: {
    /** Raw entries, each accepted by parseAllowEntry(). */
    readonly allow: readonly string[];
    readonly maxSessions: number;
    readonly connectTimeoutMs: number;
    /** 0 = never. */
    readonly idleTimeoutMs: number;
    /** 0 = unlimited. */
    readonly maxDurationMs: number;
  };
  readonly log: { readonly level: LogLevel; readonly format: LogFormat };
  /** HTTP CONNECT proxy for the cloud leg; address "" = none, else "http(s)://host[:port]". */
  readonly proxy: {
    readonly address: string;
    readonly username: string;
    readonly password: string;
  };
  readonly health: { readonly topicRoot: string; readonly serviceName: string };
  /** tedge.toml location; configDir is its directory (holds operations/c8y/...). */
  readonly tedge: { readonly configPath: string; readonly configDir: string };
}

/** Thrown for any bad configuration; the message names file, key, value and expectation. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

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
/** thin-edge's config file unless tedge.config_path says otherwise. */
export const DEFAULT_TEDGE_CONFIG_PATH = "/etc/tedge/tedge.toml";
/** Environment variable naming our config file. */
export const CONFIG_PATH_ENV = "C8Y_TUNNEL_CONFIG";

/** setTimeout() fires at once above 2^31-1 ms, so no duration may exceed this. */
const MAX_SECONDS = 2_147_483;

// ---------------------------------------------------------------- checks

type Checked<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly expected: string; readonly hide?: true };
type Check<T> = (raw: unknown) => Checked<T>;

const ok = <T>(value: T): Checked<T> => ({ ok: true, value });
const bad = (expected: string, hide?: true): Checked<never> =>
  hide ? { ok: false, expected, hide } : { ok: false, expected };

const anyString: Check<string> = (raw) =>
  typeof raw === "string" ? ok(raw) : bad("a string");

const nonEmpty: Check<string> = (raw) =>
  typeof raw === "string" && raw.trim() !== ""
    ? ok(raw)
    : bad("a non-empty string");

// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

const word: Check<string> = (raw) =>
  typeof raw === "string" && raw.trim() !== "" && !CONTROL.test(raw)
    ? ok(raw)
    : bad("a non-empty string without control characters");

function oneOf<T extends string>(values: readonly T[]): Check<T> {
  return (raw) =>
    (values as readonly unknown[]).includes(raw)
      ? ok(raw as T)
      : bad(`one of ${values.join(", ")}`);
}

function integer(min: number, max: number, expected: string): Check<number> {
  return (raw) =>
    typeof raw === "number" && Number.isInteger(raw) && raw >= min &&
      raw <= max
      ? ok(raw)
      : bad(expected);
}

/** Seconds in the file, milliseconds out. */
function seconds(zero: string | null): Check<number> {
  const expected = zero === null
    ? `a number of seconds > 0 and <= ${MAX_SECONDS}`
    : `a number of seconds from 0 to ${MAX_SECONDS} (0 = ${zero})`;
  return (raw) => {
    if (typeof raw !== "number" || !(raw >= 0 && raw <= MAX_SECONDS)) {
      return bad(expected);
    }
    const ms = Math.round(raw * 1000);
    return zero === null && ms < 1 ? bad(expected) : ok(ms);
  };
}

/** An MQTT topic (prefix) without wildcards; singleLevel also forbids "/". */
function topic(singleLevel: boolean): Check<string> {
  const expected = singleLevel
    ? "a non-empty MQTT topic level (no /, +, # or control characters)"
    : "a non-empty MQTT topic without +, #, control characters, or a leading, trailing or double /";
  return (raw) =>
    typeof raw === "string" && raw !== "" && !/[+#]/.test(raw) &&
      !CONTROL.test(raw) &&
      (singleLevel
        ? !raw.includes("/")
        : !raw.startsWith("/") && !raw.endsWith("/") && !raw.includes("//"))
      ? ok(raw)
      : bad(expected);
}

/** "" (the default connection) or a thin-edge profile name. */
const profileName: Check<string> = (raw) =>
  typeof raw === "string" && (raw === "" || PROFILE_NAME.test(raw))
    ? ok(raw)
    : bad(
      '"" (the default [c8y] connection) or a thin-edge profile name (letters, digits, - and _), e.g. "second"',
    );

const PROFILE_NAME = /^[A-Za-z0-9_-]+$/;

const stringArray: Check<readonly string[]> = (raw) =>
  Array.isArray(raw) && raw.every((entry) => typeof entry === "string")
    ? ok([...raw] as string[])
    : bad('an array of strings such as ["127.0.0.1:22"]');

/** Parses "scheme://host[:port]" or a bare "host[:port]" (given the default scheme). */
function parseOrigin(raw: string, defaultScheme: string): URL | null {
  const text = raw.includes("://") ? raw : `${defaultScheme}://${raw}`;
  if (!URL.canParse(text)) return null;
  const url = new URL(text);
  const bareOrigin = (url.pathname === "/" || url.pathname === "") &&
    url.search === "" && url.hash === "" && url.hostname !== "";
  return bareOrigin ? url : null;
}

const c8yUrl: Check<string> = (raw) => {
  const expected =
    'an http:// or https:// URL without path, or a bare host[:port], e.g. "https://example.cumulocity.com"';
  if (typeof raw !== "string" || raw.trim() === "") return bad(expected);
  const url = parseOrigin(raw.trim(), "https");
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    return bad(expected);
  }
  if (url.username !== "" || url.password !== "") {
    return bad(`${expected}, without user:password (use c8y.auth)`, true);
  }
  return ok(url.origin);
};

const proxyAddress: Check<string> = (raw) => {
  const expected =
    '"" (no proxy) or an http:// or https:// proxy address, e.g. "http://proxy.local:3128"';
  if (typeof raw !== "string") return bad(expected);
  if (raw.trim() === "") return ok("");
  const url = parseOrigin(raw.trim(), "http");
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    return bad(expected);
  }
  if (url.username !== "" || url.password !== "") {
    return bad(
      `${expected}, without user:password (set proxy.username and proxy.password)`,
      true,
    );
  }
  return ok(url.origin);
};

// ---------------------------------------------------------------- schema

/** Each key of our file and the type it has once checked. */
interface Values {
  "mqtt.host": string;
  "mqtt.port": number;
  "mqtt.topic_prefix": string;
  "mqtt.client_id": string;
  "mqtt.max_payload": number;
  "c8y.url": string;
  "c8y.device_id": string;
  "c8y.auth": AuthMethod;
  "c8y.credentials_path": string;
  "c8y.root_cert_path": string;
  "c8y.jwt_timeout": number;
  "c8y.profile": string;
  "tunnel.allow": readonly string[];
  "tunnel.max_sessions": number;
  "tunnel.connect_timeout": number;
  "tunnel.idle_timeout": number;
  "tunnel.max_duration": number;
  "log.level": LogLevel;
  "log.format": LogFormat;
  "proxy.address": string;
  "proxy.username": string;
  "proxy.password": string;
  "health.topic_root": string;
  "health.service_name": string;
  "tedge.config_path": string;
}
type Key = keyof Values;
type Required = "c8y.url" | "c8y.device_id";

const CHECKS: { readonly [K in Key]: Check<Values[K]> } = {
  "mqtt.host": word,
  "mqtt.port": integer(1, 65535, "an integer from 1 to 65535"),
  "mqtt.topic_prefix": topic(false),
  "mqtt.client_id": word,
  "mqtt.max_payload": integer(
    16_384,
    1_048_576,
    "a number of bytes from 16384 to 1048576",
  ),
  "c8y.url": c8yUrl,
  "c8y.device_id": word,
  "c8y.auth": oneOf<AuthMethod>(["jwt", "basic", "none"]),
  "c8y.credentials_path": nonEmpty,
  "c8y.root_cert_path": anyString,
  "c8y.jwt_timeout": seconds(null),
  "c8y.profile": profileName,
  "tunnel.allow": stringArray,
  "tunnel.max_sessions": integer(
    1,
    Number.MAX_SAFE_INTEGER,
    "an integer >= 1",
  ),
  "tunnel.connect_timeout": seconds(null),
  "tunnel.idle_timeout": seconds("never"),
  "tunnel.max_duration": seconds("unlimited"),
  "log.level": oneOf<LogLevel>(["debug", "info", "warn", "error"]),
  "log.format": oneOf<LogFormat>(["text", "json"]),
  "proxy.address": proxyAddress,
  "proxy.username": anyString,
  "proxy.password": anyString,
  "health.topic_root": topic(false),
  "health.service_name": topic(true),
  "tedge.config_path": nonEmpty,
};

const DEFAULTS: { readonly [K in Exclude<Key, Required>]: Values[K] } = {
  "mqtt.host": "127.0.0.1",
  "mqtt.port": 1883,
  "mqtt.topic_prefix": "c8y",
  "mqtt.client_id": "c8y-tunnel",
  "mqtt.max_payload": 65_536,
  "c8y.auth": "jwt",
  "c8y.credentials_path": "/etc/c8y-tunnel/credentials.toml",
  "c8y.root_cert_path": "",
  "c8y.jwt_timeout": 5_000,
  "c8y.profile": "",
  "tunnel.allow": ["127.0.0.1:22"],
  "tunnel.max_sessions": 16,
  "tunnel.connect_timeout": 10_000,
  "tunnel.idle_timeout": 3_600_000,
  "tunnel.max_duration": 0,
  "log.level": "info",
  "log.format": "text",
  "proxy.address": "",
  "proxy.username": "",
  "proxy.password": "",
  "health.topic_root": "te",
  "health.service_name": "c8y-tunnel",
  "tedge.config_path": DEFAULT_TEDGE_CONFIG_PATH,
};

const SECRETS: ReadonlySet<string> = new Set([
  "proxy.password",
  "c8y.password",
]);

/**
 * Keys of the Cumulocity connection in tedge.toml, relative to its table:
 * `[c8y]`, or `[c8y.profiles.<name>]` for a cloud profile (thin-edge >= 1.4).
 * A profile table does not inherit from `[c8y]`: thin-edge reads each
 * profile on its own, with built-in defaults for what it leaves unset.
 */
const TEDGE_CLOUD_FALLBACKS: readonly (readonly [string, Key])[] = [
  ["url", "c8y.url"],
  ["bridge.topic_prefix", "mqtt.topic_prefix"],
  ["root_cert_path", "c8y.root_cert_path"],
  ["credentials_path", "c8y.credentials_path"],
  ["device.id", "c8y.device_id"],
];

/** Keys of tedge.toml outside the connection table, shared by every profile. */
const TEDGE_FALLBACKS: readonly (readonly [string, Key])[] = [
  ["mqtt.client.host", "mqtt.host"],
  ["mqtt.client.port", "mqtt.port"],
  ["proxy.address", "proxy.address"],
  ["proxy.username", "proxy.username"],
  ["proxy.password", "proxy.password"],
  // thin-edge's c8y.device.id (and a profile's) defaults to device.id.
  ["device.id", "c8y.device_id"],
];

const TEDGE_AUTH: Readonly<Record<string, AuthMethod | "auto">> = {
  certificate: "jwt",
  basic: "basic",
  auto: "auto",
};

const KEYS = Object.keys(CHECKS) as Key[];
const TABLES = [...new Set(KEYS.map((key) => key.slice(0, key.indexOf("."))))];

// ---------------------------------------------------------------- helpers

/** One value and where it came from ("<file> key <key>" or "default"). */
interface Setting<T = unknown> {
  readonly value: T;
  readonly from: string;
}
type Settings = Map<Key, Setting>;

function isKey(key: string): key is Key {
  return Object.hasOwn(CHECKS, key);
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null &&
    !Array.isArray(value) && !(value instanceof Date);
}

/** A value as written in a message: strings quoted, long ones shortened. */
function show(value: unknown): string {
  let text: string;
  if (typeof value === "string") text = JSON.stringify(value);
  else if (value instanceof Date) text = value.toISOString();
  else if (Array.isArray(value)) text = `[${value.map(show).join(", ")}]`;
  else if (isTable(value)) text = "(a table)";
  else text = String(value);
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}

function invalid(
  file: string,
  key: string,
  raw: unknown,
  expected: string,
  hide = false,
): string {
  return hide || SECRETS.has(key)
    ? `${file}: key ${key} (value not shown) is invalid: expected ${expected}`
    : `${file}: key ${key} = ${show(raw)} is invalid: expected ${expected}`;
}

function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(
        (row[j] ?? 0) + 1,
        (next[j - 1] ?? 0) + 1,
        (row[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    row = next;
  }
  return row[b.length] ?? 0;
}

function didYouMean(name: string, candidates: readonly string[]): string {
  const best = candidates
    .map((candidate) => ({ candidate, d: distance(name, candidate) }))
    .sort((x, y) => x.d - y.d)[0];
  return best && best.d <= 2 && best.d <= name.length / 2
    ? ` (did you mean ${best.candidate}?)`
    : "";
}

/** TOML text -> table; a syntax error names the file and line (never the text). */
function parseTomlText(file: string, text: string): Record<string, unknown> {
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (error) {
    if (!(error instanceof TomlError)) throw error;
    const detail = (error.message.split("\n")[0] ?? "")
      .replace(/^Invalid TOML document: /, "");
    throw new ConfigError(
      `${file}: TOML syntax error at line ${error.line}, column ${error.column}: ${detail}`,
    );
  }
}

function lookup(doc: Record<string, unknown>, path: string): unknown {
  let node: unknown = doc;
  for (const part of path.split(".")) {
    if (!isTable(node) || !Object.hasOwn(node, part)) return undefined;
    node = node[part];
  }
  return node;
}

function fail(issues: readonly string[]): void {
  if (issues.length > 0) throw new ConfigError(issues.join("\n"));
}

// ---------------------------------------------------------------- sources

/** Reads and checks our file; unknown tables and keys are errors. */
function readOwnFile(file: string, text: string | null): Settings {
  const settings: Settings = new Map();
  if (text === null) return settings;
  const doc = parseTomlText(file, text);
  const issues: string[] = [];
  for (const [table, body] of Object.entries(doc)) {
    if (!TABLES.includes(table)) {
      const what = isTable(body)
        ? `table [${table}]`
        : `top-level key ${table}`;
      issues.push(
        `${file}: unknown ${what}${didYouMean(table, TABLES)}; valid tables: ${
          TABLES.join(", ")
        }`,
      );
      continue;
    }
    if (!isTable(body)) {
      issues.push(invalid(file, table, body, `a table [${table}]`));
      continue;
    }
    const names = KEYS.filter((key) => key.startsWith(`${table}.`))
      .map((key) => key.slice(table.length + 1));
    for (const [name, raw] of Object.entries(body)) {
      const key = `${table}.${name}`;
      if (!isKey(key)) {
        issues.push(
          `${file}: unknown key ${key}${
            didYouMean(name, names)
          }; valid keys in [${table}]: ${names.join(", ")}`,
        );
        continue;
      }
      const checked: Checked<unknown> = CHECKS[key](raw);
      if (!checked.ok) {
        issues.push(invalid(file, key, raw, checked.expected, checked.hide));
        continue;
      }
      settings.set(key, { value: checked.value, from: `${file} key ${key}` });
    }
  }
  const allow = settings.get("tunnel.allow");
  if (allow) issues.push(...checkAllow(file, allow.value as readonly string[]));
  fail(issues);
  return settings;
}

function checkAllow(file: string, entries: readonly string[]): string[] {
  const issues: string[] = [];
  entries.forEach((entry, i) => {
    try {
      parseAllowEntry(entry);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      issues.push(
        `${file}: key tunnel.allow[${i}] = ${
          show(entry)
        } is invalid: ${error.message}`,
      );
    }
  });
  return issues;
}

interface TedgeSettings {
  readonly settings: Settings;
  readonly auth?: Setting<AuthMethod | "auto">;
  readonly certPath?: string;
  /** The profile as tedge.toml spells it; "" = the default `[c8y]` table. */
  readonly profile: string;
}

/** `c8y.profile` as our file set it ("" when unset), and that file. */
interface ProfileChoice {
  readonly name: string;
  readonly file: string;
}

/**
 * The tedge.toml table that holds the chosen connection: `c8y`, or
 * `c8y.profiles.<name>` matched without regard to case, as thin-edge does.
 */
function cloudTable(
  file: string,
  doc: Record<string, unknown> | null,
  choice: ProfileChoice,
): { readonly path: string; readonly profile: string } {
  if (choice.name === "") return { path: "c8y", profile: "" };
  const profiles = doc === null ? undefined : lookup(doc, "c8y.profiles");
  const names = isTable(profiles)
    ? Object.keys(profiles).filter((name) => isTable(profiles[name]))
    : [];
  const wanted = choice.name.toLowerCase();
  const found = names.find((name) => name.toLowerCase() === wanted);
  if (found !== undefined && PROFILE_NAME.test(found)) {
    return { path: `c8y.profiles.${found}`, profile: found };
  }
  const where = doc === null
    ? `${file} does not exist`
    : `${file} has no table [c8y.profiles.${choice.name}]`;
  const known = names.length === 0
    ? `it defines no cloud profiles; set c8y.profile = "" for the default [c8y] connection, or create the profile with tedge config set c8y.url <url> --profile ${choice.name}`
    : `profiles defined there: ${names.join(", ")}${
      didYouMean(choice.name, names)
    }`;
  throw new ConfigError(
    `${choice.file}: key c8y.profile = ${
      show(choice.name)
    } is invalid: ${where}; ${known}`,
  );
}

/**
 * Reads the fallback keys of tedge.toml; its other keys are not ours to
 * judge. Connection keys come from the chosen profile's table only.
 */
function readTedgeFile(
  file: string,
  text: string | null,
  choice: ProfileChoice,
): TedgeSettings {
  const settings: Settings = new Map();
  const doc = text === null ? null : parseTomlText(file, text);
  const table = cloudTable(file, doc, choice);
  if (doc === null) return { settings, profile: table.profile };
  const issues: string[] = [];
  const fallbacks = [
    ...TEDGE_CLOUD_FALLBACKS.map(([name, key]) =>
      [`${table.path}.${name}`, key] as const
    ),
    ...TEDGE_FALLBACKS,
  ];
  for (const [tedgeKey, key] of fallbacks) {
    if (settings.has(key)) continue; // the connection's own value wins
    const raw = lookup(doc, tedgeKey);
    if (raw === undefined) continue;
    const checked: Checked<unknown> = CHECKS[key](raw);
    if (!checked.ok) {
      issues.push(invalid(file, tedgeKey, raw, checked.expected, checked.hide));
      continue;
    }
    settings.set(key, {
      value: checked.value,
      from: `${file} key ${tedgeKey}`,
    });
  }
  let auth: Setting<AuthMethod | "auto"> | undefined;
  const methodKey = `${table.path}.auth_method`;
  const method = lookup(doc, methodKey);
  if (method !== undefined) {
    const mapped =
      typeof method === "string" && Object.hasOwn(TEDGE_AUTH, method)
        ? TEDGE_AUTH[method]
        : undefined;
    if (mapped) {
      auth = { value: mapped, from: `${file} key ${methodKey}` };
    } else {
      const expected = "one of certificate, basic, auto";
      issues.push(invalid(file, methodKey, method, expected));
    }
  }
  let certPath: string | undefined;
  // thin-edge's c8y.device.cert_path (and a profile's) defaults to device.cert_path.
  for (
    const certKey of [`${table.path}.device.cert_path`, "device.cert_path"]
  ) {
    const cert = lookup(doc, certKey);
    if (cert === undefined) continue;
    const checked = nonEmpty(cert);
    if (checked.ok) certPath = checked.value;
    else issues.push(invalid(file, certKey, cert, checked.expected));
    break;
  }
  fail(issues);
  return {
    settings,
    ...(auth ? { auth } : {}),
    ...(certPath ? { certPath } : {}),
    profile: table.profile,
  };
}

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

function profileChoice(file: string, ours: Settings): ProfileChoice {
  const own = ours.get("c8y.profile")?.value;
  return { name: typeof own === "string" ? own : "", file };
}

function parseCredentials(file: string, text: string): Credentials {
  const doc = parseTomlText(file, text);
  const issues: string[] = [];
  const username = lookup(doc, "c8y.username");
  const password = lookup(doc, "c8y.password");
  const userOk = typeof username === "string" && username.trim() !== "" &&
    !username.includes(":") && !CONTROL.test(username);
  if (username === undefined) {
    issues.push(`${file}: key c8y.username is not set`);
  } else if (!userOk) {
    // Hidden: a "user:password" typo would put the password in the message.
    issues.push(invalid(
      file,
      "c8y.username",
      username,
      'a non-empty string without ":", e.g. "t12345/device-user"',
      true,
    ));
  }
  if (password === undefined) {
    issues.push(`${file}: key c8y.password is not set`);
  } else if (typeof password !== "string" || password === "") {
    issues.push(invalid(file, "c8y.password", password, "a non-empty string"));
  }
  if (issues.length > 0) {
    issues.push(
      `${file}: expected [c8y] with username = "<tenant>/<user>" and password = "..."`,
    );
  }
  fail(issues);
  return { username: username as string, password: password as string };
}

function commonName(file: string, pem: string): string {
  let subject: string;
  try {
    subject = new X509Certificate(pem).subject;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError(
      `${file}: cannot read the device id (certificate CN): not a valid PEM certificate (${reason}); set c8y.device_id instead`,
    );
  }
  const cn = subject.split("\n").find((line) => line.startsWith("CN="))
    ?.slice(3);
  if (!cn || !word(cn).ok) {
    throw new ConfigError(
      `${file}: cannot read the device id: the certificate subject has no usable CN; set c8y.device_id instead`,
    );
  }
  return cn;
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

// ---------------------------------------------------------------- public API

/**
 * Builds a Config from texts already read (pure; used by tests and `check`).
 * A null text means that file does not exist. With auth "auto" from
 * tedge.toml, a given credentialsText selects basic, else jwt.
 * @throws {ConfigError} naming file, key, value and expectation.
 */
export function parseConfig(input: ConfigInput): Config {
  const file = input.file ?? DEFAULT_CONFIG_PATH;
  const ours = readOwnFile(file, input.text);
  const tedgePath = (ours.get("tedge.config_path")?.value as string) ??
    input.tedgeFile ?? DEFAULT_TEDGE_CONFIG_PATH;
  const tedge = readTedgeFile(
    tedgePath,
    input.tedgeText,
    profileChoice(file, ours),
  );
  const draft = merge(
    file,
    input.text === null ? null : file,
    ours,
    tedgePath,
    input.tedgeText === null ? null : tedgePath,
    tedge,
  );
  return finish(
    draft,
    input.credentialsText ?? null,
    input.deviceCertText ?? null,
  );
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
  const ours = readOwnFile(file, text);
  const ownTedgePath = ours.get("tedge.config_path")?.value as
    | string
    | undefined;
  const tedgePath = ownTedgePath ?? DEFAULT_TEDGE_CONFIG_PATH;
  const tedgeText = await readOptional(read, tedgePath);
  if (tedgeText === null && ownTedgePath !== undefined) {
    throw new ConfigError(
      `${file}: key tedge.config_path = ${
        show(ownTedgePath)
      } is invalid: expected an existing tedge.toml (remove the key if thin-edge is not installed)`,
    );
  }
  const draft = merge(
    file,
    text === null ? null : file,
    ours,
    tedgePath,
    tedgeText === null ? null : tedgePath,
    readTedgeFile(tedgePath, tedgeText, profileChoice(file, ours)),
  );
  const credentialsText = draft.auth.value === "jwt" ||
      draft.auth.value === "none"
    ? null
    : await readOptional(read, draft.credentialsPath);
  const certText = draft.certPath === null
    ? null
    : await readOptional(read, draft.certPath);
  return finish(draft, credentialsText, certText);
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
