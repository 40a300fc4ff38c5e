/**
 * The schema of our config file: every key, its check and its default, and
 * the reader that applies them to our file (unknown tables and keys are
 * errors, with a suggestion for a near miss).
 *
 * @module
 */
import { didYouMean, fail, invalid, isTable } from "./_messages.ts";
import { parseTomlText } from "./_toml.ts";
import { allowList, parseAllowEntry } from "./allow.ts";
import {
  anyString,
  c8yUrl,
  type Check,
  type Checked,
  deviceTopicId,
  integer,
  issuesOf,
  nonEmpty,
  oneOf,
  optional,
  optionalPath,
  profileName,
  proxyAddress,
  seconds,
  topic,
  word,
} from "./checks.ts";
import type { AllowRule, AuthMethod, LogFormat, LogLevel } from "./types.ts";

/** thin-edge's config file unless tedge.config_path says otherwise. */
export const DEFAULT_TEDGE_CONFIG_PATH = "/etc/tedge/tedge.toml";

/** Each key of our file and the type it has once checked. */
export interface Values {
  "mqtt.host": string;
  "mqtt.port": number;
  "mqtt.topic_prefix": string;
  "mqtt.client_id": string;
  "mqtt.max_payload": number;
  "mqtt.ca_file": string;
  "mqtt.ca_dir": string;
  "mqtt.cert_file": string;
  "mqtt.key_file": string;
  "mqtt.username": string;
  "mqtt.password_file": string;
  "c8y.url": string;
  "c8y.device_id": string;
  "c8y.auth": AuthMethod;
  "c8y.credentials_path": string;
  "c8y.root_cert_path": string;
  "c8y.jwt_timeout": number;
  "c8y.profile": string;
  "c8y.http": string;
  "tunnel.allow": readonly AllowRule[];
  "tunnel.max_sessions": number;
  "tunnel.connect_timeout": number;
  "tunnel.idle_timeout": number;
  "tunnel.max_duration": number;
  "log.level": LogLevel;
  "log.format": LogFormat;
  "log.file": string;
  "proxy.address": string;
  "proxy.username": string;
  "proxy.password": string;
  "health.topic_root": string;
  "health.service_name": string;
  "health.device_topic_id": string;
  "health.service_type": string;
  "tedge.config_path": string;
}
/** A key of our file, "<table>.<name>". */
export type Key = keyof Values;
/** Keys without a default: they must be set somewhere. */
type NoDefault = "c8y.url" | "c8y.device_id";

/** The check of every key of our file. */
export const CHECKS: { readonly [K in Key]: Check<Values[K]> } = {
  "mqtt.host": word,
  "mqtt.port": integer(1, 65535, "an integer from 1 to 65535"),
  "mqtt.topic_prefix": topic(false),
  "mqtt.client_id": word,
  "mqtt.max_payload": integer(
    16_384,
    1_048_576,
    "a number of bytes from 16384 to 1048576",
  ),
  "mqtt.ca_file": optionalPath,
  "mqtt.ca_dir": optionalPath,
  "mqtt.cert_file": optionalPath,
  "mqtt.key_file": optionalPath,
  "mqtt.username": optional(word, "a user name without control characters"),
  "mqtt.password_file": optionalPath,
  "c8y.url": c8yUrl,
  "c8y.device_id": word,
  "c8y.auth": oneOf<AuthMethod>(["jwt", "basic", "none"]),
  "c8y.credentials_path": nonEmpty,
  "c8y.root_cert_path": anyString,
  "c8y.jwt_timeout": seconds(null),
  "c8y.profile": profileName,
  "c8y.http": optional(
    c8yUrl,
    'an http:// or https:// URL without path, or a bare host[:port], e.g. "http.example.cumulocity.com:443"',
  ),
  "tunnel.allow": allowList,
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
  "log.file": anyString,
  "proxy.address": proxyAddress,
  "proxy.username": anyString,
  "proxy.password": anyString,
  "health.topic_root": topic(false),
  "health.service_name": topic(true),
  "health.device_topic_id": deviceTopicId,
  "health.service_type": word,
  "tedge.config_path": nonEmpty,
};

/** Built-in defaults of the keys that have one. */
export const DEFAULTS: { readonly [K in Exclude<Key, NoDefault>]: Values[K] } =
  {
    "mqtt.host": "127.0.0.1",
    "mqtt.port": 1883,
    "mqtt.topic_prefix": "c8y",
    "mqtt.client_id": "c8y-tunnel",
    "mqtt.max_payload": 65_536,
    "mqtt.ca_file": "",
    "mqtt.ca_dir": "",
    "mqtt.cert_file": "",
    "mqtt.key_file": "",
    "mqtt.username": "",
    "mqtt.password_file": "",
    "c8y.auth": "jwt",
    "c8y.credentials_path": "/etc/c8y-tunnel/credentials.toml",
    "c8y.root_cert_path": "",
    "c8y.jwt_timeout": 5_000,
    "c8y.profile": "",
    "c8y.http": "",
    "tunnel.allow": [parseAllowEntry("127.0.0.1:22")],
    "tunnel.max_sessions": 16,
    "tunnel.connect_timeout": 10_000,
    "tunnel.idle_timeout": 3_600_000,
    "tunnel.max_duration": 0,
    "log.level": "info",
    "log.format": "text",
    "log.file": "",
    "proxy.address": "",
    "proxy.username": "",
    "proxy.password": "",
    "health.topic_root": "te",
    "health.service_name": "c8y-tunnel",
    "health.device_topic_id": "device/main//",
    "health.service_type": "service",
    "tedge.config_path": DEFAULT_TEDGE_CONFIG_PATH,
  };

/** Every key of our file. */
export const KEYS = Object.keys(CHECKS) as Key[];
const TABLES = [...new Set(KEYS.map((key) => key.slice(0, key.indexOf("."))))];

/** One value and where it came from ("<file> key <key>", "default", ...). */
export interface Setting<T = unknown> {
  readonly value: T;
  readonly from: string;
  /** The file and key it was read from, when it was read from a file. */
  readonly at?: { readonly file: string; readonly key: string };
}

/** A setting read from `file` under `key`. */
export function readSetting<T>(
  value: T,
  file: string,
  key: string,
): Setting<T> {
  return { value, from: `${file} key ${key}`, at: { file, key } };
}
/** Values found so far, by key of our file. */
export type Settings = Map<Key, Setting>;

function isKey(key: string): key is Key {
  return Object.hasOwn(CHECKS, key);
}

/** Reads and checks our file; unknown tables and keys are errors. */
export function readOwnFile(file: string, text: string | null): Settings {
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
        issues.push(...issuesOf(file, key, raw, checked));
        continue;
      }
      settings.set(key, readSetting(checked.value, file, key));
    }
  }
  fail(issues);
  return settings;
}
