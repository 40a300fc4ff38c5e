/**
 * Configuration, the entry point of lib/config/: our TOML file, then
 * thin-edge's files for what ours leaves unset, then built-in defaults,
 * merged into one validated, frozen {@link Config} (DESIGN.md §1.3, §2).
 *
 * The work is split by job: types.ts (Config), schema.ts (our keys, their
 * checks and defaults), checks.ts (validators), allow.ts (`tunnel.allow`
 * rules), tedge.ts (thin-edge's tedge.toml and 2.x mapper.toml, and which
 * one applies), credentials.ts (credentials file, device certificate CN),
 * assemble.ts (merge and finish, pure), load.ts (the one pipeline:
 * loadConfig / parseConfig), origins.ts (where each value came from, for
 * `check`), ca_certs.ts (CA certificates of `c8y.root_cert_path`).
 *
 * @module
 */
export { ConfigError } from "./_messages.ts";
export type { AllowRule, HostPattern } from "./allow.ts";
export {
  CONFIG_PATH_ENV,
  type ConfigInput,
  DEFAULT_CONFIG_PATH,
  loadConfig,
  type LoadConfigOptions,
  parseConfig,
  PROFILE_ENV,
} from "./load.ts";
export { DEFAULT_TEDGE_CONFIG_PATH } from "./schema.ts";
export type {
  AuthMethod,
  Config,
  Credentials,
  LogFormat,
  LogLevel,
  MqttLogin,
  MqttTls,
} from "./types.ts";
