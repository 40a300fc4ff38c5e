/**
 * The one pipeline that turns our TOML file, thin-edge's files and the
 * defaults into one validated, frozen {@link Config} (DESIGN.md §1.3, §2).
 * The assembly is pure and asks for each file it needs in turn (it is a
 * generator); {@link parseConfig} answers from texts already read and
 * {@link loadConfig} from the file system. This is the only code that reads
 * the environment or files for settings.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { ConfigError, show } from "./_messages.ts";
import { parseTomlText } from "./_toml.ts";
import { finish, merge } from "./assemble.ts";
import { DEFAULT_TEDGE_CONFIG_PATH, type Key, readOwnFile } from "./schema.ts";
import {
  c8yMapperDirs,
  chooseMapper,
  MAPPERS_DIR,
  type ProfileChoice,
  profileChoice,
  readThinEdge,
} from "./tedge.ts";
import type { Config } from "./types.ts";
import { errorMessage } from "../util/errors.ts";

/** Where loadConfig() reads files and the environment from; defaults are Deno's. */
export interface LoadConfigOptions {
  /** Config file path from `--config`; wins over env C8Y_TUNNEL_CONFIG. */
  readonly path?: string;
  readonly env?: (name: string) => string | undefined;
  /**
   * Take the cloud profile from TEDGE_CLOUD_PROFILE alone, unset meaning
   * the default connection (`connect`, run by tedge-mapper-c8y); otherwise
   * the variable wins over c8y.profile only when it is set and not empty.
   */
  readonly profileFromEnv?: boolean;
  readonly readTextFile?: (path: string) => Promise<string>;
  /** Names of a directory's entries (thin-edge's mappers/); rejects NotFound when absent. */
  readonly readDir?: (path: string) => Promise<string[]>;
}

/** Texts already read, for parseConfig(); null = the file does not exist. */
export interface ConfigInput {
  /** Path of our config file (for messages). */
  readonly file: string | null;
  readonly text: string | null;
  readonly tedgeFile: string | null;
  readonly tedgeText: string | null;
  /** Basic credentials file; null/absent = it does not exist. */
  readonly credentialsText?: string | null;
  /** PEM of the device certificate, whose CN is the fallback device id. */
  readonly deviceCertText?: string | null;
  /**
   * Other files by path (thin-edge 2.x mapper.toml files, the broker
   * password file, and credentials or certificate when not given above);
   * a directory exists when some file lies below it.
   */
  readonly files?: { readonly [path: string]: string };
}

/** Our config file when neither `--config` nor C8Y_TUNNEL_CONFIG names one. */
export const DEFAULT_CONFIG_PATH = "/etc/c8y-tunnel/config.toml";
/** Environment variable naming our config file. */
export const CONFIG_PATH_ENV = "C8Y_TUNNEL_CONFIG";
/**
 * thin-edge's cloud profile variable: tedge-mapper-c8y sets it for the
 * commands a profile's mapper runs; when set it wins over c8y.profile.
 */
export const PROFILE_ENV = "TEDGE_CLOUD_PROFILE";

/**
 * What the assembly needs next: a file's text (null when it does not
 * exist), or a directory's entry names (null when it does not exist).
 */
type Request =
  | {
    readonly role: "tedge" | "credentials" | "cert" | "mapper" | "password";
    readonly path: string;
    /** The key of our file that named this path; such a file must exist. */
    readonly namedBy?: { readonly file: string; readonly key: Key };
  }
  | { readonly role: "dir"; readonly path: string };
type Answer = string | readonly string[] | null;
type Assembly = Generator<Request, Config, Answer>;

/** Asks for a file's text. */
function* text(
  request: Exclude<Request, { role: "dir" }>,
): Generator<Request, string | null, Answer> {
  const answer = yield request;
  return typeof answer === "string" ? answer : null;
}

/** Asks for a directory's entries. */
function* entries(path: string): Generator<Request, string[] | null, Answer> {
  const answer = yield { role: "dir", path };
  return Array.isArray(answer) ? [...answer] : null;
}

/** Where the assembly starts: our file (already located) and its text. */
interface Start {
  readonly file: string;
  readonly text: string | null;
  /** The cloud profile from TEDGE_CLOUD_PROFILE, over our file's c8y.profile. */
  readonly profile?: ProfileChoice;
  /** tedge.toml's path when our file does not set tedge.config_path. */
  readonly tedgePath: string;
}

/**
 * Ours, then tedge.toml, then thin-edge 2.x's c8y mapper.toml files, then
 * credentials, certificate and broker password as needed, then finish().
 */
function* assemble(start: Start): Assembly {
  const { file } = start;
  const ours = readOwnFile(file, start.text);
  const named = ours.get("tedge.config_path")?.value as string | undefined;
  const tedgePath = named ?? start.tedgePath;
  const tedgeText = yield* text({
    role: "tedge",
    path: tedgePath,
    ...(named === undefined
      ? {}
      : { namedBy: { file, key: "tedge.config_path" as const } }),
  });
  const tedgeDoc = tedgeText === null
    ? null
    : parseTomlText(tedgePath, tedgeText);
  const mappersDir = join(dirname(tedgePath), MAPPERS_DIR);
  const found = new Map<string, string>();
  for (const dir of c8yMapperDirs(yield* entries(mappersDir))) {
    const path = join(mappersDir, dir, "mapper.toml");
    const mapperText = yield* text({ role: "mapper", path });
    if (mapperText !== null) found.set(dir, mapperText);
  }
  const choice = start.profile ?? profileChoice(file, ours);
  const chosen = chooseMapper(mappersDir, found, choice);
  const mapper = chosen && {
    file: join(mappersDir, chosen.dir, "mapper.toml"),
    doc: chosen.text === null
      ? null
      : parseTomlText(join(mappersDir, chosen.dir, "mapper.toml"), chosen.text),
    profile: chosen.dir === "c8y" ? "" : chosen.dir.slice(4),
  };
  const draft = merge(
    file,
    start.text === null ? null : file,
    ours,
    tedgePath,
    tedgeText === null ? null : tedgePath,
    readThinEdge(tedgePath, tedgeDoc, mapper, choice),
  );
  const credentials = draft.auth.value === "jwt" || draft.auth.value === "none"
    ? null
    : yield* text({ role: "credentials", path: draft.credentialsPath });
  const cert = draft.certPath === null
    ? null
    : yield* text({ role: "cert", path: draft.certPath });
  const password = draft.passwordFile === null
    ? null
    : yield* text({ role: "password", path: draft.passwordFile.value });
  return finish(draft, { credentials, cert, password });
}

// ---------------------------------------------------------------- public API

/**
 * Builds a Config from texts already read (pure; used by tests and `check`).
 * A null text means that file does not exist. With auth "auto" from
 * tedge.toml, a given credentialsText selects basic, else jwt.
 * @throws {ConfigError} naming file, key, value and expectation.
 */
export function parseConfig(input: ConfigInput): Config {
  const steps = assemble({
    file: input.file ?? DEFAULT_CONFIG_PATH,
    text: input.text,
    tedgePath: input.tedgeFile ?? DEFAULT_TEDGE_CONFIG_PATH,
  });
  const files = input.files ?? {};
  const answer = (request: Request): Answer => {
    switch (request.role) {
      case "tedge":
        return input.tedgeText;
      case "credentials":
        return input.credentialsText ?? files[request.path] ?? null;
      case "cert":
        return input.deviceCertText ?? files[request.path] ?? null;
      case "mapper":
      case "password":
        return files[request.path] ?? null;
      case "dir":
        return entriesOf(files, request.path);
    }
  };
  let step = steps.next();
  while (!step.done) step = steps.next(answer(step.value));
  return step.value;
}

/** The names directly below `dir` among the given paths, or null if none. */
function entriesOf(
  files: { readonly [path: string]: string },
  dir: string,
): string[] | null {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const names = Object.keys(files).filter((path) => path.startsWith(prefix))
    .map((path) => path.slice(prefix.length).split("/")[0]!);
  return names.length === 0 ? null : [...new Set(names)];
}

/**
 * Loads the config file (`options.path`, else env C8Y_TUNNEL_CONFIG, else
 * DEFAULT_CONFIG_PATH), tedge.toml, the credentials file (auth basic/auto)
 * and the device certificate (when no device id is set). A missing default
 * file is fine; a missing file that was asked for is an error.
 * @throws {ConfigError} naming file, key, value and expectation.
 */
export async function loadConfig(
  options: LoadConfigOptions = {},
): Promise<Config> {
  const env = options.env ?? ((name: string) => Deno.env.get(name));
  const read = options.readTextFile ??
    ((path: string) => Deno.readTextFile(path));
  const fromEnv = env(CONFIG_PATH_ENV);
  const [file, askedBy] = options.path !== undefined
    ? [options.path, "--config"]
    : fromEnv !== undefined && fromEnv !== ""
    ? [fromEnv, `environment variable ${CONFIG_PATH_ENV}`]
    : [DEFAULT_CONFIG_PATH, null];
  if (file.trim() === "") {
    throw new ConfigError(
      `the config file path given by ${askedBy} is empty: give a file path`,
    );
  }
  const text = await readOptional(read, file);
  if (text === null && askedBy !== null) {
    throw new ConfigError(
      `${file}: config file does not exist (given by ${askedBy}): create it or correct the path`,
    );
  }
  // tedge-mapper-c8y runs an operation's command with TEDGE_CLOUD_PROFILE
  // set for a cloud profile's mapper only: for `connect`, unset means the
  // default connection, whatever our file says.
  const profile = env(PROFILE_ENV);
  const steps = assemble({
    file,
    text,
    tedgePath: DEFAULT_TEDGE_CONFIG_PATH,
    ...(profile !== undefined && (profile !== "" || options.profileFromEnv)
      ? {
        profile: { name: profile, file: `environment variable ${PROFILE_ENV}` },
      }
      : options.profileFromEnv
      ? { profile: { name: "", file: `environment variable ${PROFILE_ENV}` } }
      : {}),
  });
  const list = options.readDir ?? readDirNames;
  let step = steps.next();
  while (!step.done) {
    const request = step.value;
    if (request.role === "dir") {
      step = steps.next(await listOptional(list, request.path));
      continue;
    }
    const answer = await readOptional(read, request.path);
    if (answer === null && request.namedBy !== undefined) {
      throw new ConfigError(
        `${request.namedBy.file}: key ${request.namedBy.key} = ${
          show(request.path)
        } is invalid: expected an existing tedge.toml (remove the key if thin-edge is not installed)`,
      );
    }
    step = steps.next(answer);
  }
  return step.value;
}

async function readDirNames(path: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(path)) names.push(entry.name);
  return names;
}

/** Entry names, or null when the directory does not exist; other failures are ConfigErrors. */
async function listOptional(
  list: (path: string) => Promise<string[]>,
  path: string,
): Promise<string[] | null> {
  try {
    return await list(path);
  } catch (error) {
    if (isNotFound(error)) return null;
    const reason = errorMessage(error);
    throw new ConfigError(
      `${path}: cannot list thin-edge's mapper configurations: ${reason}`,
    );
  }
}

function isNotFound(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound ||
    (error as { code?: unknown } | null)?.code === "ENOENT";
}

/** File text, or null when it does not exist; other failures are ConfigErrors. */
async function readOptional(
  read: (path: string) => Promise<string>,
  path: string,
): Promise<string | null> {
  try {
    return await read(path);
  } catch (error) {
    if (isNotFound(error)) return null;
    const reason = errorMessage(error);
    throw new ConfigError(`${path}: cannot read file: ${reason}`);
  }
}
