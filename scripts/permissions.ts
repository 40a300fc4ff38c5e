/**
 * The Deno permissions of c8y-tunnel, kept in one place: `scripts/compile.ts`
 * bakes them into the binaries, the tests run the agent with them, and
 * docs/install.md explains them. Change them here only.
 *
 * @module
 */

/**
 * Where the agent reads: its config, tedge.toml, thin-edge 2.x's
 * `mappers/`, credentials, device certificate and CA files (the first two
 * directories); the operating system's CA store `/etc/ssl/certs`,
 * thin-edge's default `c8y.root_cert_path` (its symlinks are followed
 * without a grant for their targets); and the user and group databases,
 * where `init` looks up user tedge to give it the operation file
 * (lib/commands/operation_file.ts `lookupOwner`).
 */
export const READ_PATHS: readonly string[] = [
  "/etc/c8y-tunnel",
  "/etc/tedge",
  "/etc/ssl/certs",
  "/etc/passwd",
  "/etc/group",
];

/** Where the agent writes: `init`/`cleanup` write thin-edge's operation file below the first, `connect` its log below the second. */
export const WRITE_PATHS: readonly string[] = [
  "/etc/tedge/operations",
  // log.file of `connect` (docs/config.md, [log]).
  "/var/log/c8y-tunnel",
];

/** Where install.sh and the .deb put the binary. */
export const INSTALL_PATH = "/usr/bin/c8y-tunnel";

/**
 * System information the agent asks for: `uid` (`Deno.uid()`: `init` gives
 * the files it creates to tedge only when it runs as root).
 */
export const SYS: readonly string[] = ["uid"];

/**
 * Whether the agent starts a copy of itself: `connect`, when no daemon takes
 * the request, runs `Deno.execPath()` again as a detached child that holds
 * the session (lib/commands/connect.ts). So the binary gets `--allow-run` for its own
 * installed path only; tests/install_test.ts checks this against the source.
 */
export const SPAWNS_SELF = true;

/**
 * The environment variables the agent reads; `--allow-env` is scoped to
 * them. npm `mqtt` loads `debug`, which lists the whole environment, but
 * lib/util/env_fence.ts (imported first by main.ts) hands npm code a
 * `process.env` holding only these, so no wider grant is needed.
 */
export { AGENT_ENV as ENV_READ } from "../lib/util/agent_env.ts";
import { AGENT_ENV } from "../lib/util/agent_env.ts";

/** Environment variables that tune the permissions of a build (see {@linkcode optionsFromEnv}). */
export const BUILD_ENV = {
  /** Comma-separated hosts (host or host:port): scope --allow-net to one site. */
  net: "C8Y_TUNNEL_ALLOW_NET",
  /** Comma-separated extra paths to read, e.g. a CA directory outside /etc/tedge. */
  read: "C8Y_TUNNEL_ALLOW_READ",
  /** Comma-separated extra paths to write, e.g. another thin-edge config directory. */
  write: "C8Y_TUNNEL_ALLOW_WRITE",
  /** Path the binary will be installed at (only matters when it spawns itself). */
  installPath: "C8Y_TUNNEL_INSTALL_PATH",
} as const;

/** Adjustments to the default permissions of one build or run. */
export interface PermissionOptions {
  /** Hosts for --allow-net; absent or empty = unscoped (the default). */
  readonly net?: readonly string[];
  /** Paths to read besides {@linkcode READ_PATHS}. */
  readonly extraRead?: readonly string[];
  /** Paths to write besides {@linkcode WRITE_PATHS}. */
  readonly extraWrite?: readonly string[];
  /** The executable the agent may start when it spawns itself. Default {@linkcode INSTALL_PATH}. */
  readonly selfPath?: string;
}

/** Splits a comma-separated list, dropping blanks: `"a, b,,"` -> `["a", "b"]`. */
export function parseList(value: string | undefined): string[] {
  if (value === undefined) return [];
  return value.split(",").map((item) => item.trim()).filter((item) =>
    item !== ""
  );
}

/** Reads {@linkcode BUILD_ENV} through `env` (e.g. `Deno.env.get`) into options. */
export function optionsFromEnv(
  env: (name: string) => string | undefined,
): PermissionOptions {
  const installPath = env(BUILD_ENV.installPath)?.trim();
  return {
    net: parseList(env(BUILD_ENV.net)),
    extraRead: parseList(env(BUILD_ENV.read)),
    extraWrite: parseList(env(BUILD_ENV.write)),
    ...(installPath ? { selfPath: installPath } : {}),
  };
}

function unique(items: readonly string[]): string[] {
  return [...new Set(items)];
}

function checkItems(kind: string, items: readonly string[]): void {
  for (const item of items) {
    if (/[,\s]/.test(item)) {
      throw new TypeError(
        `Cannot build the ${kind} permission: "${item}" holds a comma or a space; give one host or path per list item`,
      );
    }
  }
}

/**
 * The permission flags of the agent: `--allow-read=…`, `--allow-write=…`,
 * `--allow-env=…` for {@linkcode ENV_READ}, `--allow-net[=…]`, `--allow-sys=…` for {@linkcode SYS}, and
 * `--allow-run=<self>` when {@linkcode SPAWNS_SELF}. Shared by `deno compile`
 * and `deno run`; `--no-prompt` is added by the callers.
 */
export function permissionFlags(options: PermissionOptions = {}): string[] {
  const read = unique([...READ_PATHS, ...(options.extraRead ?? [])]);
  const write = unique([...WRITE_PATHS, ...(options.extraWrite ?? [])]);
  const net = unique(options.net ?? []);
  checkItems("read", read);
  checkItems("write", write);
  checkItems("net", net);
  const flags = [
    `--allow-read=${read.join(",")}`,
    `--allow-write=${write.join(",")}`,
    `--allow-env=${AGENT_ENV.join(",")}`,
    net.length === 0 ? "--allow-net" : `--allow-net=${net.join(",")}`,
  ];
  if (SYS.length > 0) flags.push(`--allow-sys=${SYS.join(",")}`);
  if (SPAWNS_SELF) {
    flags.push(`--allow-run=${options.selfPath ?? INSTALL_PATH}`);
  }
  return flags;
}

/**
 * Flags for `deno compile`: the permissions plus `--no-prompt`, so that a
 * permission the binary lacks fails at once instead of prompting.
 */
export function compileFlags(options: PermissionOptions = {}): string[] {
  return ["--no-prompt", ...permissionFlags(options)];
}

/**
 * Flags for a production `deno run … main.ts run` from a checkout: the same
 * permissions, where a self-spawn starts this `deno` (`Deno.execPath()`).
 */
export function runFlags(options: PermissionOptions = {}): string[] {
  return [
    "--no-prompt",
    ...permissionFlags({ selfPath: Deno.execPath(), ...options }),
  ];
}

if (import.meta.main) {
  // `deno run scripts/permissions.ts [run|compile]` prints the flags, one line.
  const options = optionsFromEnv((name) => Deno.env.get(name));
  const which = Deno.args[0] ?? "run";
  console.log(
    (which === "compile" ? compileFlags(options) : runFlags(options)).join(" "),
  );
}
