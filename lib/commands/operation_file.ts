/**
 * thin-edge's operation capability file for remote access,
 * `<tedge config dir>/operations/c8y/c8y_RemoteAccessConnect` (DESIGN.md
 * §1.3): the `init` and `cleanup` commands write and remove it, `check` and
 * `run` read it.
 *
 * - Plugin mode: an `[exec]` table makes tedge-mapper-c8y run
 *   `c8y-tunnel connect "530,…"` per request and report the status itself.
 * - Daemon mode (`init --daemon`): no `[exec]` table, so the file only
 *   announces the operation and `c8y-tunnel run` answers the requests.
 *
 * Like thin-edge's plugin, the file gets mode 0644 and, when we run as root
 * and a `tedge` user exists, owner tedge:tedge; directories we create get
 * 0755 and the same owner, existing directories are never re-owned.
 *
 * @module
 */
import { isAbsolute, join, resolve } from "node:path";
import { parse as parseToml } from "smol-toml";
import { type Config, DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { topicsFor } from "../mqtt/topics.ts";
import { OPERATION_NAME } from "../protocol/operations.ts";
import { errorMessage } from "../util/errors.ts";
import {
  type CliArgs,
  type CliHost,
  configFrom,
  type ExitCode,
} from "./host.ts";
import { type SelfCommand, selfCommand } from "./self.ts";

/** Where the operation file lives for `config` (tedge.toml's directory). */
export function operationFilePath(config: Config): string {
  return join(config.tedge.configDir, "operations", "c8y", OPERATION_NAME);
}

/** What is in the operation file now. */
export type OperationFileState =
  | { readonly kind: "none"; readonly path: string }
  /** Ours, plugin mode: the mapper runs `command` per request. */
  | { readonly kind: "plugin"; readonly path: string; readonly command: string }
  /** No `[exec]` table: a daemon (`c8y-tunnel run`) must answer. */
  | { readonly kind: "daemon"; readonly path: string }
  /** Another program's `[exec]`, e.g. thin-edge's c8y-remote-access-plugin. */
  | {
    readonly kind: "foreign";
    readonly path: string;
    readonly command: string;
  }
  | {
    readonly kind: "invalid";
    readonly path: string;
    readonly reason: string;
  };

/** True when an `[exec]` command line is c8y-tunnel's `connect`. */
export function isOurCommand(command: string): boolean {
  const words = command.trim().split(/\s+/);
  if (!words.includes("connect")) return false;
  return words.some((word) =>
    /(^|\/)c8y-tunnel[^/]*$/.test(word) || /(^|\/)main\.ts$/.test(word)
  );
}

/** Reads and classifies the operation file; never throws. */
export async function inspectOperationFile(
  config: Config,
): Promise<OperationFileState> {
  const path = operationFilePath(config);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { kind: "none", path };
    return {
      kind: "invalid",
      path,
      reason: `cannot read it: ${errorMessage(error)}`,
    };
  }
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (error) {
    return {
      kind: "invalid",
      path,
      reason: `not valid TOML: ${errorMessage(error).split("\n")[0]}`,
    };
  }
  const exec = doc.exec;
  if (exec === undefined) return { kind: "daemon", path };
  const command = typeof exec === "object" && exec !== null
    ? (exec as Record<string, unknown>).command
    : undefined;
  if (typeof command !== "string") {
    return {
      kind: "invalid",
      path,
      reason: "its [exec] table has no command",
    };
  }
  return isOurCommand(command)
    ? { kind: "plugin", path, command }
    : { kind: "foreign", path, command };
}

/**
 * Whether `c8y-tunnel run` should listen for operations itself: not when the
 * file is in plugin mode (the mapper runs `connect`, which hands requests to
 * the daemon; listening too would serve and report each request twice).
 */
export async function daemonServesOperations(config: Config): Promise<boolean> {
  return (await inspectOperationFile(config)).kind !== "plugin";
}

/**
 * The `[exec]` command for plugin mode: this program's `connect`, with
 * `--config` when the config file is not the default one (the mapper does
 * not pass our environment). thin-edge splits the command at whitespace
 * (no quoting), so no word may contain any.
 * @throws {RangeError} when a path contains whitespace.
 */
export function pluginCommand(
  configFile: string | null,
  self: (args: readonly string[]) => SelfCommand,
): string {
  const args = ["connect"];
  if (configFile !== null && resolve(configFile) !== DEFAULT_CONFIG_PATH) {
    args.push(
      "--config",
      isAbsolute(configFile) ? configFile : resolve(configFile),
    );
  }
  const { command, args: all } = self(args);
  const words = [command, ...all];
  const spaced = words.find((word) => /\s/.test(word) || word === "");
  if (spaced !== undefined) {
    throw new RangeError(
      `Cannot write the operation file: "${spaced}" contains whitespace, but tedge-mapper-c8y splits [exec] command at whitespace: move it to a path without spaces`,
    );
  }
  return words.join(" ");
}

/** The file's text for plugin mode (`command` given) or daemon mode (`command` null); `topic` is where 530s arrive. */
export function operationFileText(
  command: string | null,
  topic: string,
): string {
  if (command === null) {
    return [
      "# Written by `c8y-tunnel init --daemon`: the c8y-tunnel daemon",
      "# (c8y-tunnel run) serves c8y_RemoteAccessConnect itself, so this file only",
      "# announces the operation and has no [exec] table.",
      "",
    ].join("\n");
  }
  return [
    "# Written by `c8y-tunnel init`: tedge-mapper-c8y runs c8y-tunnel once per",
    "# remote access request and reports its status (exit 0 = 503, else 502 with",
    "# the last line of stderr).",
    "[exec]",
    `command = ${JSON.stringify(command)}`,
    `topic = ${JSON.stringify(topic)}`,
    'on_message = "530"',
    "",
  ].join("\n");
}

/** A numeric owner for files we create. */
export interface Owner {
  readonly uid: number;
  readonly gid: number;
}

/** uid/gid of user `name` and of its group from /etc/passwd and /etc/group, or null. */
export async function lookupOwner(name = "tedge"): Promise<Owner | null> {
  try {
    const passwd = await Deno.readTextFile("/etc/passwd");
    const user = passwd.split("\n").map((line) => line.split(":"))
      .find((fields) => fields[0] === name);
    if (!user || user[2] === undefined || user[3] === undefined) return null;
    let gid = Number(user[3]);
    try {
      const groups = await Deno.readTextFile("/etc/group");
      const group = groups.split("\n").map((line) => line.split(":"))
        .find((fields) => fields[0] === name);
      if (group?.[2] !== undefined) gid = Number(group[2]);
    } catch {
      // The user's primary group will do.
    }
    const uid = Number(user[2]);
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : null;
  } catch {
    return null;
  }
}

/** Options of {@linkcode writeOperationFile}. */
export interface WriteOptions {
  /** Plugin mode's `[exec]` command; null writes daemon mode. */
  readonly command: string | null;
  /** Owner of what we create; default: tedge:tedge when running as root and the user exists, else unchanged. */
  readonly owner?: Owner | null;
}

/** What {@linkcode writeOperationFile} did. */
export interface WriteResult {
  readonly path: string;
  /** Directories it had to create, outermost first. */
  readonly createdDirs: readonly string[];
  /** What was there before (e.g. thin-edge's plugin file, now replaced). */
  readonly previous: OperationFileState;
}

/**
 * Writes the operation file (mode 0644), creating missing `operations/c8y`
 * directories (0755) and giving what it creates to `owner`; existing
 * directories keep theirs. The tedge config directory must exist.
 * @throws {Error} naming the path and what to do (e.g. run as root).
 */
export async function writeOperationFile(
  config: Config,
  options: WriteOptions,
): Promise<WriteResult> {
  const path = operationFilePath(config);
  const previous = await inspectOperationFile(config);
  const owner = options.owner !== undefined
    ? options.owner
    : Deno.uid() === 0
    ? await lookupOwner()
    : null;
  try {
    if (!(await Deno.stat(config.tedge.configDir)).isDirectory) {
      throw new Deno.errors.NotFound();
    }
  } catch {
    throw new Error(
      `Cannot write ${path}: thin-edge's config directory ${config.tedge.configDir} does not exist: install thin-edge, or set tedge.config_path to its tedge.toml`,
    );
  }
  const dirs = [
    join(config.tedge.configDir, "operations"),
    join(config.tedge.configDir, "operations", "c8y"),
  ];
  const createdDirs: string[] = [];
  try {
    for (const dir of dirs) {
      try {
        await Deno.mkdir(dir);
      } catch (error) {
        if (error instanceof Deno.errors.AlreadyExists) continue;
        throw error;
      }
      createdDirs.push(dir);
      await Deno.chmod(dir, 0o755);
      if (owner) await Deno.chown(dir, owner.uid, owner.gid);
    }
    await Deno.writeTextFile(
      path,
      operationFileText(options.command, topicsFor(config).smartRestIn),
      { mode: 0o644 },
    );
    await Deno.chmod(path, 0o644);
    if (owner) await Deno.chown(path, owner.uid, owner.gid);
  } catch (error) {
    const reason = errorMessage(error);
    const hint = error instanceof Deno.errors.PermissionDenied
      ? " (run it as root, e.g. with sudo)"
      : "";
    throw new Error(`Cannot write ${path}: ${reason}${hint}`);
  }
  return { path, createdDirs, previous };
}

/**
 * Removes the operation file; a missing one is fine (resolves false).
 * @throws {Error} naming the path when it exists but cannot be removed.
 */
export async function removeOperationFile(config: Config): Promise<boolean> {
  const path = operationFilePath(config);
  try {
    await Deno.remove(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    const reason = errorMessage(error);
    throw new Error(`Cannot remove ${path}: ${reason}`);
  }
}

// ---------------------------------------------------------------- commands

/** `init [--daemon]`: writes the thin-edge operation file. */
export async function initCommand(
  args: CliArgs,
  host: CliHost,
): Promise<ExitCode> {
  const config = await configFrom(args.config, host);
  if (!args.daemon && config.c8y.profile !== "") {
    // Every thin-edge mapper shares operations/c8y: a plugin-mode file for one
    // profile would take the operation away from the default connection.
    host.stderr(
      `c8y-tunnel: plugin mode serves only the default connection, and c8y.profile = "${config.c8y.profile}": run \`c8y-tunnel init --daemon\` and the daemon for this profile instead\n`,
    );
    return 1;
  }
  let result;
  try {
    const command = args.daemon
      ? null
      : pluginCommand(config.configFile, selfCommand);
    result = await writeOperationFile(config, { command });
  } catch (error) {
    host.stderr(`c8y-tunnel: ${errorMessage(error)}\n`);
    return 1;
  }
  if (result.previous.kind === "foreign") {
    host.stderr(
      `note: replaced an operation file that ran "${result.previous.command}" (thin-edge's c8y-remote-access-plugin?); remove that package so it does not write the file back\n`,
    );
  }
  host.stdout(
    args.daemon
      ? `wrote ${result.path} (daemon mode: no [exec]); run the daemon: c8y-tunnel run (systemctl enable --now c8y-tunnel)\n`
      : `wrote ${result.path} (plugin mode: tedge-mapper-c8y runs c8y-tunnel connect per request)\n`,
  );
  return 0;
}

/** `cleanup`: removes our operation file; a missing one is fine, another program's is left alone. */
export async function cleanupCommand(
  args: CliArgs,
  host: CliHost,
): Promise<ExitCode> {
  const config = await configFrom(args.config, host);
  const state = await inspectOperationFile(config);
  if (state.kind === "foreign") {
    host.stdout(
      `left ${state.path} in place: it runs "${state.command}", not c8y-tunnel\n`,
    );
    return 0;
  }
  try {
    const removed = await removeOperationFile(config);
    host.stdout(
      removed
        ? `removed ${state.path}\n`
        : `${state.path} does not exist; nothing to remove\n`,
    );
    return 0;
  } catch (error) {
    host.stderr(`c8y-tunnel: ${errorMessage(error)}\n`);
    return 1;
  }
}
