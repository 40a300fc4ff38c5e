/**
 * Configuration, the entry point of lib/config/: our TOML file, then
 * thin-edge's files for what ours leaves unset, then built-in defaults,
 * merged into one validated, frozen {@link Config} (DESIGN.md §1.3, §2).
 *
 * The work is split by job: types.ts (Config), schema.ts (keys, checks,
 * defaults), checks.ts (validators), allow.ts (`tunnel.allow` rules),
 * tedge.ts (thin-edge's files), credentials.ts (credentials file, device
 * certificate CN), load.ts (the one pipeline: loadConfig / parseConfig).
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
} from "./load.ts";
export { DEFAULT_TEDGE_CONFIG_PATH } from "./schema.ts";
export type {
  AuthMethod,
  Config,
  Credentials,
  LogFormat,
  LogLevel,
} from "./types.ts";
