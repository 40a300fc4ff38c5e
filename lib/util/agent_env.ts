/**
 * The environment variables the agent reads, in one list: lib/util/env_fence.ts
 * exposes only these to npm code, and scripts/permissions.ts scopes
 * `--allow-env` to them. Imports nothing, so the fence can load it first.
 *
 * @module
 */

/**
 * The config path (config CONFIG_PATH_ENV), the marker of connect's
 * detached child (connect.ts CHILD_ENV), and the cloud profile that
 * tedge-mapper-c8y sets for a profile's commands (config PROFILE_ENV);
 * tests/env_fence_test.ts keeps the lists in step.
 */
export const AGENT_ENV: readonly string[] = [
  "C8Y_TUNNEL_CONFIG",
  "C8Y_TUNNEL_CONNECT_CHILD",
  "TEDGE_CLOUD_PROFILE",
];

/** The agent's variables that are set and readable, as a plain object. */
export function fencedEnv(
  read: (name: string) => string | undefined,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of AGENT_ENV) {
    try {
      const value = read(name);
      if (value !== undefined) env[name] = value;
    } catch {
      // Not granted (a narrower --allow-env): the variable counts as unset.
    }
  }
  return env;
}
