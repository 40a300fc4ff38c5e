/**
 * Builds the c8y-tunnel executables with `deno compile`, with the narrowest
 * permissions (see scripts/permissions.ts) and {@linkcode V8_FLAGS} baked in.
 *
 *     deno run -A scripts/compile.ts [--target x86_64-unknown-linux-gnu|aarch64-unknown-linux-gnu|all]
 *                                    [--out-dir dist] [--entry main.ts]
 *                                    [--allow-net=h1,h2] [--allow-read=p1,p2] [--allow-write=p1]
 *
 * Writes `dist/c8y-tunnel-<target>` and prints its size. The same knobs as
 * environment variables: C8Y_TUNNEL_ALLOW_NET, C8Y_TUNNEL_ALLOW_READ,
 * C8Y_TUNNEL_ALLOW_WRITE, C8Y_TUNNEL_INSTALL_PATH. `deno compile` downloads
 * its base runtime (denort) from Deno's servers; offline, point
 * DENORT_BIN at a denort of the same Deno version and target.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  compileFlags,
  optionsFromEnv,
  parseList,
  permissionFlags,
  type PermissionOptions,
} from "./permissions.ts";

/**
 * V8 flags the agent runs with wherever users start it: baked into the
 * binaries (`deno compile --v8-flags=…`), in deno.json's `start` task and in
 * the README's run-from-checkout command (tests/install_test.ts checks that
 * they agree). Each was measured for idle memory, throughput and latency;
 * docs/bench.md has the figures and the flags that were tried and dropped.
 */
export const V8_FLAGS: readonly string[] = ["--max-semi-space-size=1"];

/** {@linkcode V8_FLAGS} as one `deno run`/`deno compile` argument. */
export function v8FlagsArg(flags: readonly string[] = V8_FLAGS): string {
  return `--v8-flags=${flags.join(",")}`;
}

/** The targets c8y-tunnel is built for (Deno has no 32-bit ARM target). */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
] as const;

/** One of {@linkcode TARGETS}. */
export type Target = typeof TARGETS[number];

/** ELF `e_machine` of each target, to check a DENORT_BIN before using it. */
const ELF_MACHINE: Readonly<Record<Target, number>> = {
  "x86_64-unknown-linux-gnu": 62,
  "aarch64-unknown-linux-gnu": 183,
};

/** Thrown for a problem the user fixes (bad flag, wrong DENORT_BIN); printed without a stack. */
export class CompileError extends Error {
  override name = "CompileError";
}

/** Parsed command line of this script. */
export interface CompileOptions {
  readonly targets: readonly Target[];
  readonly outDir: string;
  readonly entry: string;
  readonly permissions: PermissionOptions;
}

function isTarget(value: string): value is Target {
  return (TARGETS as readonly string[]).includes(value);
}

/** The target of the machine running this script, or null if we do not build for it. */
export function hostTarget(): Target | null {
  return isTarget(Deno.build.target) ? Deno.build.target : null;
}

/**
 * Parses the command line; permission lists given as flags are added to
 * those of the environment (`env`).
 * @throws {CompileError} for an unknown flag or target.
 */
export function parseCommandLine(
  args: readonly string[],
  env: (name: string) => string | undefined,
): CompileOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: {
        target: { type: "string" },
        "out-dir": { type: "string", default: "dist" },
        entry: { type: "string", default: "main.ts" },
        "allow-net": { type: "string" },
        "allow-read": { type: "string" },
        "allow-write": { type: "string" },
      },
      allowPositionals: false,
      strict: true,
    }));
  } catch (error) {
    throw new CompileError(
      `${error instanceof Error ? error.message : String(error)}; usage: ` +
        `deno run -A scripts/compile.ts [--target ${
          TARGETS.join("|")
        }|all] [--out-dir DIR] [--allow-net=HOSTS] [--allow-read=PATHS] [--allow-write=PATHS]`,
    );
  }
  const wanted = values.target ?? hostTarget();
  if (wanted === null) {
    throw new CompileError(
      `Cannot pick a target: this machine is ${Deno.build.target}; give --target ${
        TARGETS.join("|")
      }|all`,
    );
  }
  let targets: readonly Target[];
  if (wanted === "all") targets = TARGETS;
  else if (isTarget(wanted)) targets = [wanted];
  else {
    throw new CompileError(
      `--target ${wanted} is not supported: expected ${
        TARGETS.join(", ")
      } or all (Deno has no 32-bit ARM target; see docs/install.md)`,
    );
  }
  const fromEnv = optionsFromEnv(env);
  const permissions: PermissionOptions = {
    ...fromEnv,
    net: [...(fromEnv.net ?? []), ...parseList(values["allow-net"])],
    extraRead: [
      ...(fromEnv.extraRead ?? []),
      ...parseList(values["allow-read"]),
    ],
    extraWrite: [
      ...(fromEnv.extraWrite ?? []),
      ...parseList(values["allow-write"]),
    ],
  };
  return {
    targets,
    outDir: values["out-dir"],
    entry: values.entry,
    permissions,
  };
}

/** The `--unstable-*` flags for the features deno.json enables (`"unstable": [...]`). */
export function unstableFlags(denoJson: string): string[] {
  const parsed = JSON.parse(denoJson) as { unstable?: unknown };
  const list = Array.isArray(parsed.unstable) ? parsed.unstable : [];
  return list.filter((item): item is string => typeof item === "string")
    .map((feature) => `--unstable-${feature}`);
}

/** Output path of the binary for `target`: `<outDir>/c8y-tunnel-<target>`. */
export function outputPath(outDir: string, target: Target): string {
  return `${outDir.replace(/\/+$/, "")}/c8y-tunnel-${target}`;
}

/** The arguments of `deno compile` for one target (without the `deno` itself). */
export function compileArgs(
  target: Target,
  options: CompileOptions,
  unstable: readonly string[] = [],
): string[] {
  return [
    "compile",
    ...compileFlags(options.permissions),
    v8FlagsArg(),
    ...unstable,
    "--target",
    target,
    "--output",
    outputPath(options.outDir, target),
    options.entry,
  ];
}

/**
 * Checks that `path` is an ELF executable for `target`, so that a DENORT_BIN
 * of the wrong architecture fails here and not on the device.
 * @throws {CompileError} naming the file and what is wrong.
 */
export async function checkDenort(path: string, target: Target): Promise<void> {
  let bytes: Uint8Array;
  try {
    using file = await Deno.open(path);
    bytes = new Uint8Array(20);
    let filled = 0;
    while (filled < bytes.length) {
      const n = await file.read(bytes.subarray(filled));
      if (n === null) break;
      filled += n;
    }
    bytes = bytes.subarray(0, filled);
  } catch (error) {
    throw new CompileError(
      `DENORT_BIN=${path} cannot be read (${
        error instanceof Error ? error.message : String(error)
      }): point it at the denort binary for ${target}`,
    );
  }
  const isElf = bytes.length === 20 && bytes[0] === 0x7f && bytes[1] === 0x45 &&
    bytes[2] === 0x4c && bytes[3] === 0x46;
  if (!isElf) {
    throw new CompileError(
      `DENORT_BIN=${path} is not an ELF executable: unzip denort-${target}.zip from the Deno release and point DENORT_BIN at the file inside`,
    );
  }
  const littleEndian = bytes[5] === 1;
  const machine = new DataView(bytes.buffer, bytes.byteOffset, bytes.length)
    .getUint16(18, littleEndian);
  if (machine !== ELF_MACHINE[target]) {
    const found = Object.entries(ELF_MACHINE).find(([, m]) => m === machine)
      ?.[0] ?? `ELF machine ${machine}`;
    throw new CompileError(
      `DENORT_BIN=${path} is a runtime for ${found}, not ${target}: compile one target at a time with the denort of that target`,
    );
  }
}

/** True when deno compile's error output says it could not download denort. */
export function isDenortDownloadFailure(stderr: string): boolean {
  return /denort|dl\.deno\.land|base binary/i.test(stderr) &&
    /download|sending request|dns|connect|network|timed out/i.test(stderr);
}

function formatSize(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

async function compileOne(
  target: Target,
  options: CompileOptions,
  unstable: readonly string[],
  root: URL,
): Promise<void> {
  const denort = Deno.env.get("DENORT_BIN");
  if (denort !== undefined && denort !== "") {
    await checkDenort(denort, target);
  }
  const args = compileArgs(target, options, unstable);
  console.log(`deno ${args.join(" ")}`);
  // DENORT_BIN is passed through in the inherited environment.
  const result = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stdin: "null",
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(result.stderr);
  if (!result.success) {
    if (
      (denort === undefined || denort === "") &&
      isDenortDownloadFailure(stderr)
    ) {
      throw new CompileError(
        `Cannot compile ${target}: deno could not download its runtime (denort); offline, set DENORT_BIN=/path/to/denort (unzipped from denort-${target}.zip of Deno v${Deno.version.deno}) and run again`,
      );
    }
    await Deno.stderr.write(result.stderr);
    throw new CompileError(
      `Cannot compile ${target}: deno compile exited with code ${result.code} (its output is above)`,
    );
  }
  await Deno.stderr.write(result.stderr);
  const output = new URL(outputPath(options.outDir, target), root);
  const { size } = await Deno.stat(output);
  console.log(
    `${outputPath(options.outDir, target)}: ${
      formatSize(size)
    } (${size} bytes)`,
  );
}

/** Compiles every target of the command line; returns the exit code. */
export async function main(args: readonly string[]): Promise<number> {
  const root = new URL("../", import.meta.url);
  try {
    const options = parseCommandLine(args, (name) => Deno.env.get(name));
    const unstable = unstableFlags(
      await Deno.readTextFile(new URL("deno.json", root)),
    );
    console.log(
      `permissions: ${permissionFlags(options.permissions).join(" ")}`,
    );
    for (const target of options.targets) {
      await compileOne(target, options, unstable, root);
    }
    return 0;
  } catch (error) {
    if (error instanceof CompileError) {
      console.error(`compile: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
