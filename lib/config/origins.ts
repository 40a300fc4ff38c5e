/**
 * Where the settings that thin-edge can supply came from, in words, for
 * `check`: our file, tedge.toml, a 2.x mapper.toml, or a default. Names
 * files and keys only, never a value.
 *
 * @module
 */
import type { Config } from "./types.ts";

/** Keys that thin-edge's files can supply, in the order `check` lists them. */
const SHOWN = [
  "c8y.url",
  "c8y.http",
  "c8y.device_id",
  "mqtt.topic_prefix",
  "c8y.auth",
  "c8y.credentials_path",
  "c8y.root_cert_path",
  "mqtt.host",
  "mqtt.port",
  "proxy.address",
] as const;

/** Shown only when set: broker TLS and login. */
const TLS_KEYS = [
  "mqtt.ca_file",
  "mqtt.ca_dir",
  "mqtt.cert_file",
  "mqtt.key_file",
];
const LOGIN_KEYS = ["mqtt.username", "mqtt.password_file"];

/**
 * One line: which layout thin-edge's Cumulocity settings were taken from,
 * then "<key> from <file> key <key>" (or "default") for each setting.
 */
export function describeOrigins(config: Config): string {
  const { layout, mapperFile } = config.tedge;
  const ignored = config.tedge.tedgeC8yIgnored
    ? `, ${config.tedge.configPath} [c8y] ignored as by thin-edge`
    : "";
  const where = layout === "mappers"
    ? `Cumulocity settings from ${mapperFile} (thin-edge 2.x layout${ignored})`
    : `Cumulocity settings from ${config.tedge.configPath} (thin-edge 1.x layout, no mappers/c8y*/mapper.toml)`;
  const keys: readonly string[] = [
    ...SHOWN,
    ...(config.mqtt.tls ? TLS_KEYS : []),
    ...(config.mqtt.auth ? LOGIN_KEYS : []),
  ];
  const from = keys.filter((key) =>
    config.origins[key] !== undefined &&
    !(config.origins[key] === "default" &&
      (TLS_KEYS.includes(key) || LOGIN_KEYS.includes(key)))
  )
    .map((key) => `${key} from ${config.origins[key]}`);
  return `${where}: ${from.join(", ")}`;
}
