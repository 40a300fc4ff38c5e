/**
 * Running this program again with the same permissions: the compiled binary
 * runs itself; under `deno run`, the main module is run again with the flags
 * (scoped permissions included) this process was started with. Used by
 * `connect` for its detached child and by `init` for the operation file's
 * `[exec]` command.
 *
 * @module
 */
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** A command line that runs this program again: the binary itself, or `deno run` with main.ts. */
export interface SelfCommand {
  readonly command: string;
  readonly args: readonly string[];
}

const PERMISSIONS = [
  "read",
  "write",
  "net",
  "env",
  "run",
  "sys",
  "ffi",
  "import",
] as const;

/** `--allow-*` flags for the permissions this process holds unscoped (`-A` when it holds all). */
export function permissionFlags(): string[] {
  const granted: string[] = [];
  for (const name of PERMISSIONS) {
    try {
      const status = Deno.permissions.querySync(
        { name } as Deno.PermissionDescriptor,
      );
      if (status.state === "granted") granted.push(name);
    } catch {
      // A permission this runtime does not know.
    }
  }
  return granted.length === PERMISSIONS.length
    ? ["--allow-all"]
    : granted.map((name) => `--allow-${name}`);
}

/** Nearest deno.json(c) at or above `dir`, or null. */
function findDenoConfig(dir: string): string | null {
  let current = dir;
  for (;;) {
    for (const name of ["deno.json", "deno.jsonc"]) {
      const path = join(current, name);
      try {
        if (Deno.statSync(path).isFile) return path;
      } catch {
        // Not here.
      }
    }
    const parent = dirname(current);
    if (parent === current) return null;
    current = parent;
  }
}

/**
 * How to start this program again with `args`: a compiled binary runs
 * itself; under `deno run` (the executable is `deno`), the main module is run
 * again with the permissions this process holds and its deno.json, with
 * `--no-prompt` so that a missing permission fails instead of waiting.
 */
export function selfCommand(args: readonly string[]): SelfCommand {
  const exe = Deno.execPath();
  if (!/^deno(\.exe)?$/i.test(basename(exe))) {
    return { command: exe, args: [...args] };
  }
  const main = fileURLToPath(Deno.mainModule);
  const original = originalRunFlags(main);
  if (original !== null) {
    return {
      command: exe,
      args: [
        ...original,
        ...(original.includes("--no-prompt") ? [] : ["--no-prompt"]),
        main,
        ...args,
      ],
    };
  }
  const config = findDenoConfig(dirname(main));
  return {
    command: exe,
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      ...permissionFlags(),
      ...(config ? ["--config", config] : []),
      main,
      ...args,
    ],
  };
}

/**
 * `run` and the flags this `deno run` was started with, from
 * /proc/self/cmdline (Linux), so that scoped permissions and other flags
 * carry over exactly; null when that cannot be read or understood.
 */
function originalRunFlags(main: string): string[] | null {
  let argv: string[];
  try {
    argv = Deno.readTextFileSync("/proc/self/cmdline").split("\0");
  } catch {
    return null;
  }
  if (argv.at(-1) === "") argv.pop();
  if (argv[1] !== "run") return null;
  const at = argv.findIndex((arg, i) => {
    if (i < 2 || arg.startsWith("-")) return false;
    try {
      return (arg.startsWith("file:") ? fileURLToPath(arg) : resolve(arg)) ===
        main;
    } catch {
      return false;
    }
  });
  return at < 0 ? null : argv.slice(1, at);
}
