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
import { quoteWords, splitWords } from "../util/shell_words.ts";
import { OPERATION_NAME } from "../protocol/operations.ts";
import { errorMessage } from "../util/errors.ts";
import {
  type CliArgs,
  type CliHost,
  configFrom,
  type ExitCode,
} from "./host.ts";
import { type SelfCommand, selfCommand } from "./self.ts";

/** thin-edge's operations directory for Cumulocity, shared by every mapper (every cloud profile). */
export function operationsDir(config: Config): string {
  return join(config.tedge.configDir, "operations", "c8y");
}

/**
 * Where the operation file lives for `config` (tedge.toml's directory); for
 * a child device in its own directory `operations/c8y/<external id>/`
 * (thin-edge's mapper reads every sub-directory as a child's operations).
 */
export function operationFilePath(config: Config, child?: string): string {
  return child === undefined
    ? join(operationsDir(config), OPERATION_NAME)
    : join(operationsDir(config), child, OPERATION_NAME);
}

/** Why `id` cannot be a child device's external id here, or undefined. */
export function childIdProblem(id: string): string | undefined {
  if (id.trim() === "") return "it is empty";
  if (id === "." || id === "..") return `"${id}" is not a directory name`;
  for (const ch of id) {
    const code = ch.codePointAt(0)!;
    if (
      ch === "/" || ch === "+" || ch === "#" || code < 0x20 || code === 0x7f
    ) {
      return `it contains ${
        JSON.stringify(ch)
      }, which cannot be in an MQTT topic level or a directory name`;
    }
  }
  return undefined;
}

/** The program thin-edge's own remote access plugin installs as its `[exec]` command. */
export const THIN_EDGE_PLUGIN = "c8y-remote-access-plugin";

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
    /** The command is thin-edge's own `c8y-remote-access-plugin`. */
    readonly thinEdgePlugin: boolean;
  }
  | {
    readonly kind: "invalid";
    readonly path: string;
    readonly reason: string;
  };

/** The words of an `[exec]` command as the mapper splits it (shell-style), or null when it cannot. */
function commandWords(command: string): string[] | null {
  try {
    return splitWords(command);
  } catch {
    return null;
  }
}

/** True when an `[exec]` command is thin-edge's own plugin. */
export function isThinEdgePlugin(command: string): boolean {
  const program = commandWords(command)?.[0];
  return program !== undefined &&
    (program === THIN_EDGE_PLUGIN || program.endsWith(`/${THIN_EDGE_PLUGIN}`));
}

/** True when an `[exec]` command line (split shell-style, as the mapper does) is c8y-tunnel's `connect`. */
export function isOurCommand(command: string): boolean {
  const words = commandWords(command);
  if (words === null || !words.includes("connect")) return false;
  return words.some((word) =>
    /(^|\/)c8y-tunnel[^/]*$/.test(word) || /(^|\/)main\.ts$/.test(word)
  );
}

/** Reads and classifies the operation file; never throws. */
export async function inspectOperationFile(
  config: Config,
  child?: string,
): Promise<OperationFileState> {
  const path = operationFilePath(config, child);
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
  return isOurCommand(command) ? { kind: "plugin", path, command } : {
    kind: "foreign",
    path,
    command,
    thinEdgePlugin: isThinEdgePlugin(command),
  };
}

/**
 * The child devices that declare remote access: the sub-directories of
 * `operations/c8y/` holding the operation file, sorted; never throws.
 */
export async function declaredChildren(config: Config): Promise<string[]> {
  const children: string[] = [];
  try {
    for await (const entry of Deno.readDir(operationsDir(config))) {
      if (!entry.isDirectory) continue;
      try {
        await Deno.stat(operationFilePath(config, entry.name));
        children.push(entry.name);
      } catch {
        // That child declares other operations only.
      }
    }
  } catch {
    // No operations directory: no children.
  }
  return children.sort();
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
 * not pass our environment). tedge-mapper-c8y splits the command
 * shell-style (thin-edge's `shell_words::split`), so a word with spaces is
 * quoted and arrives whole.
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
  return quoteWords([command, ...all]);
}

/**
 * The `timeout` of plugin mode's `[exec]`, in seconds: tedge-mapper-c8y
 * kills its command after it (thin-edge's default is an hour, during which
 * the operation would stay "executing"). `connect` gives up on its own well
 * before: after `tunnel.connect_timeout` + `c8y.jwt_timeout` and the handoff
 * (see commands/connect.ts); 15 s more leave room for starting the runtime.
 */
export function execTimeoutSeconds(config: Config): number {
  return Math.ceil(
    (config.tunnel.connectTimeoutMs + config.c8y.jwtTimeoutMs) / 1000,
  ) + 15;
}

/**
 * The file's text for plugin mode (`command` given) or daemon mode
 * (`command` null). The `topic` is always `c8y/s/ds`: each mapper reads it
 * as `<its own prefix>/s/ds` (thin-edge replaces `c8y/`), so one file serves
 * the default connection and every cloud profile, each mapper running the
 * command with `TEDGE_CLOUD_PROFILE` set to its profile.
 */
export function operationFileText(
  command: string | null,
  options: { readonly timeoutS: number; readonly child?: string },
): string {
  if (options.child !== undefined) {
    return [
      `# Written by \`c8y-tunnel init --child ${options.child}\`: declares remote access`,
      "# for this child device; the c8y-tunnel daemon (c8y-tunnel run) serves its",
      "# requests (tedge-mapper-c8y does not run commands for a child's 530), so",
      "# there is no [exec] table.",
      "",
    ].join("\n");
  }
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
    "# The mapper splits command shell-style and appends the 530 line; it reads",
    "# topic c8y/s/ds as <its prefix>/s/ds and sets TEDGE_CLOUD_PROFILE for a",
    "# cloud profile, so this one file serves every Cumulocity connection.",
    "[exec]",
    `command = ${JSON.stringify(command)}`,
    'topic = "c8y/s/ds"',
    'on_message = "530"',
    `timeout = ${options.timeoutS}`,
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
  /** A child device's external id: its own file, always without `[exec]`. */
  readonly child?: string;
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
  const { child } = options;
  if (child !== undefined) {
    const problem = childIdProblem(child);
    if (problem !== undefined) {
      throw new Error(
        `Cannot declare remote access for child ${
          JSON.stringify(child)
        }: ${problem}`,
      );
    }
  }
  const path = operationFilePath(config, child);
  const previous = await inspectOperationFile(config, child);
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
    operationsDir(config),
    ...(child === undefined ? [] : [join(operationsDir(config), child)]),
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
      operationFileText(child === undefined ? options.command : null, {
        timeoutS: execTimeoutSeconds(config),
        ...(child === undefined ? {} : { child }),
      }),
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
export async function removeOperationFile(
  config: Config,
  child?: string,
): Promise<boolean> {
  const path = operationFilePath(config, child);
  try {
    await Deno.remove(path);
    if (child !== undefined) {
      // An empty directory would still declare the child to thin-edge.
      await Deno.remove(join(operationsDir(config), child)).catch(() => {});
    }
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    const reason = errorMessage(error);
    throw new Error(`Cannot remove ${path}: ${reason}`);
  }
}

// ---------------------------------------------------------------- commands

/** What `init` says when it replaced another program's file. */
function replacedNote(previous: OperationFileState): string | null {
  if (previous.kind !== "foreign") return null;
  return previous.thinEdgePlugin
    ? `note: replaced thin-edge's c8y-remote-access-plugin (the file ran "${previous.command}"): remove or disable that plugin (e.g. apt remove c8y-remote-access-plugin) before running init, or its package upgrade writes its own file back and its removal deletes this one\n`
    : `note: replaced an operation file that ran "${previous.command}", not c8y-tunnel\n`;
}

/** `init [--daemon | --child ID]`: writes the thin-edge operation file. */
export async function initCommand(
  args: CliArgs,
  host: CliHost,
): Promise<ExitCode> {
  const config = await configFrom(args.config, host);
  if (args.child !== undefined && args.daemon) {
    host.stderr(
      "c8y-tunnel: --child and --daemon do not go together: a child's file never has [exec] (the daemon serves children)\n",
    );
    return 2;
  }
  let result;
  try {
    const command = args.daemon || args.child !== undefined
      ? null
      : pluginCommand(config.configFile, selfCommand);
    result = await writeOperationFile(config, {
      command,
      ...(args.child === undefined ? {} : { child: args.child }),
    });
  } catch (error) {
    host.stderr(`c8y-tunnel: ${errorMessage(error)}\n`);
    return 1;
  }
  const note = replacedNote(result.previous);
  if (note !== null) host.stderr(note);
  if (args.child !== undefined) {
    host.stdout(
      `wrote ${result.path} (child ${args.child}: Cumulocity offers remote access for it; c8y-tunnel run serves its requests)\n`,
    );
  } else if (args.daemon) {
    host.stdout(
      `wrote ${result.path} (daemon mode: no [exec]); run the daemon: c8y-tunnel run (systemctl enable --now c8y-tunnel)\n`,
    );
  } else {
    host.stdout(
      `wrote ${result.path} (plugin mode: every Cumulocity connection's tedge-mapper-c8y runs c8y-tunnel connect per request)\n`,
    );
  }
  return 0;
}

/** `cleanup [--child ID]`: removes our operation file; a missing one is fine, another program's is left alone. */
export async function cleanupCommand(
  args: CliArgs,
  host: CliHost,
): Promise<ExitCode> {
  const config = await configFrom(args.config, host);
  const child = args.child;
  if (child !== undefined) {
    const problem = childIdProblem(child);
    if (problem !== undefined) {
      host.stderr(
        `c8y-tunnel: cannot clean up child ${
          JSON.stringify(child)
        }: ${problem}\n`,
      );
      return 1;
    }
  }
  const state = await inspectOperationFile(config, child);
  if (state.kind === "foreign") {
    host.stdout(
      `left ${state.path} in place: it runs "${state.command}", not c8y-tunnel\n`,
    );
    return 0;
  }
  try {
    const removed = await removeOperationFile(config, child);
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
