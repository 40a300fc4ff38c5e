/**
 * thin-edge's settings as fallbacks for what our file leaves unset. The
 * Cumulocity connection comes from one place, chosen as thin-edge chooses
 * it (`decide_config_source` in tedge_config_location.rs):
 * - thin-edge 2.x: `<tedge dir>/mappers/c8y/mapper.toml`, or
 *   `mappers/c8y.<profile>/mapper.toml` for a cloud profile, keys without
 *   the `c8y.` prefix. This layout wins as soon as any c8y mapper.toml
 *   exists; a requested profile without its file is then an error.
 * - thin-edge 1.x (no c8y mapper.toml at all): tedge.toml's `[c8y]` table,
 *   or `[c8y.profiles.<name>]`.
 * The local broker (`mqtt.client.*`), the HTTP CONNECT proxy (`proxy.*`)
 * and the device (`device.*`) stay in tedge.toml in both.
 *
 * @module
 */
import { join } from "node:path";
import {
  ConfigError,
  didYouMean,
  fail,
  invalid,
  isTable,
  show,
} from "./_messages.ts";
import { lookup } from "./_toml.ts";
import { type Checked, issuesOf, nonEmpty, PROFILE_NAME } from "./checks.ts";
import {
  CHECKS,
  type Key,
  readSetting,
  type Setting,
  type Settings,
} from "./schema.ts";
import type { AuthMethod } from "./types.ts";

/**
 * Keys of the Cumulocity connection, relative to where it is kept: a
 * mapper.toml, `[c8y]`, or `[c8y.profiles.<name>]` of tedge.toml. A profile
 * does not inherit from the default connection: thin-edge reads each on its
 * own, with built-in defaults for what it leaves unset.
 */
const CLOUD_FALLBACKS: readonly (readonly [string, Key])[] = [
  ["url", "c8y.url"],
  ["http", "c8y.http"],
  ["bridge.topic_prefix", "mqtt.topic_prefix"],
  ["root_cert_path", "c8y.root_cert_path"],
  ["credentials_path", "c8y.credentials_path"],
  ["device.id", "c8y.device_id"],
];

/**
 * Keys of tedge.toml outside the connection, shared by every profile and
 * both layouts. Earlier entries for the same key win.
 */
const TEDGE_FALLBACKS: readonly (readonly [string, Key])[] = [
  ["mqtt.client.host", "mqtt.host"],
  ["mqtt.client.port", "mqtt.port"],
  // thin-edge's mqtt.client.port defaults to mqtt.bind.port.
  ["mqtt.bind.port", "mqtt.port"],
  ["mqtt.client.auth.ca_file", "mqtt.ca_file"],
  ["mqtt.client.auth.cafile", "mqtt.ca_file"],
  ["mqtt.client.auth.ca_dir", "mqtt.ca_dir"],
  ["mqtt.client.auth.cadir", "mqtt.ca_dir"],
  ["mqtt.client.auth.cert_file", "mqtt.cert_file"],
  ["mqtt.client.auth.certfile", "mqtt.cert_file"],
  ["mqtt.client.auth.key_file", "mqtt.key_file"],
  ["mqtt.client.auth.keyfile", "mqtt.key_file"],
  ["mqtt.client.auth.username", "mqtt.username"],
  ["mqtt.client.auth.password_file", "mqtt.password_file"],
  ["proxy.address", "proxy.address"],
  ["proxy.username", "proxy.username"],
  ["proxy.password", "proxy.password"],
  ["mqtt.topic_root", "health.topic_root"],
  ["mqtt.device_topic_id", "health.device_topic_id"],
  ["service.type", "health.service_type"],
  // thin-edge's c8y.device.id (and a profile's) defaults to device.id.
  ["device.id", "c8y.device_id"],
];

const TEDGE_AUTH: Readonly<Record<string, AuthMethod | "auto">> = {
  certificate: "jwt",
  basic: "basic",
  auto: "auto",
};

/** The directory of thin-edge 2.x's mapper configurations, below the tedge dir. */
export const MAPPERS_DIR = "mappers";

/**
 * Where the Cumulocity connection's settings come from: a mapper.toml of
 * thin-edge 2.x (`exists` false: none for the default connection, so
 * thin-edge's defaults), or a table of tedge.toml (1.x).
 */
export type CloudSource =
  | {
    readonly layout: "mappers";
    readonly file: string;
    readonly exists: boolean;
    /** tedge.toml still has a `[c8y]` table, which this layout ignores. */
    readonly ignoresTedgeC8y: boolean;
  }
  | { readonly layout: "tedge.toml"; readonly file: string };

/** What thin-edge's files supply for our keys, with where each came from. */
export interface TedgeSettings {
  readonly settings: Settings;
  readonly auth?: Setting<AuthMethod | "auto">;
  readonly certPath?: string;
  /** The profile as thin-edge spells it; "" = the default connection. */
  readonly profile: string;
  readonly source: CloudSource;
  /** The file and full key name of a connection key, e.g. "url" -> c8y.profiles.x.url. */
  readonly cloudKey: (name: string) => {
    readonly file: string;
    readonly key: string;
  };
}

/** `c8y.profile` as our file set it ("" when unset), and that file. */
export interface ProfileChoice {
  readonly name: string;
  readonly file: string;
}

/** `c8y.profile` as our file set it. */
export function profileChoice(file: string, ours: Settings): ProfileChoice {
  const own = ours.get("c8y.profile")?.value;
  return { name: typeof own === "string" ? own : "", file };
}

/** The entries of the mappers directory that may hold a c8y mapper.toml. */
export function c8yMapperDirs(entries: readonly string[] | null): string[] {
  return (entries ?? []).filter((name) =>
    name === "c8y" || (name.startsWith("c8y.") && name.length > 4)
  ).sort();
}

/** The c8y mapper.toml files found: directory entry name -> its text. */
export type MapperTexts = ReadonlyMap<string, string>;

/**
 * The chosen connection in the 2.x layout, or null when no c8y mapper.toml
 * exists (then tedge.toml's tables apply, as on 1.x).
 * @throws {ConfigError} for a profile whose mapper.toml is missing.
 */
export function chooseMapper(
  mappersDir: string,
  found: MapperTexts,
  choice: ProfileChoice,
): { readonly dir: string; readonly text: string | null } | null {
  if (found.size === 0) return null;
  if (choice.name === "") return { dir: "c8y", text: found.get("c8y") ?? null };
  // thin-edge lowercases profile names, also those taken from directory names.
  const wanted = `c8y.${choice.name.toLowerCase()}`;
  const dir = [...found.keys()].find((name) => name.toLowerCase() === wanted);
  if (dir !== undefined) return { dir, text: found.get(dir) ?? null };
  const profiles = [...found.keys()].filter((name) => name !== "c8y")
    .map((name) => name.slice(4));
  const known = profiles.length === 0
    ? `no profile has one; set c8y.profile = "" for the default connection (${
      join(mappersDir, "c8y", "mapper.toml")
    }), or create the profile with tedge config set c8y.url <url> --profile ${choice.name}`
    : `profiles that have one: ${profiles.join(", ")}${
      didYouMean(choice.name, profiles)
    }`;
  throw new ConfigError(
    `${choice.file}: key c8y.profile = ${show(choice.name)} is invalid: ${
      join(mappersDir, wanted, "mapper.toml")
    } does not exist, and thin-edge 2.x keeps each profile's settings there (c8y mapper.toml files exist in ${mappersDir}, so tedge.toml's [c8y] is not used); ${known}`,
  );
}

/**
 * The tedge.toml table that holds the chosen connection: `c8y`, or
 * `c8y.profiles.<name>` matched without regard to case, as thin-edge does.
 */
function cloudTable(
  file: string,
  doc: Record<string, unknown> | null,
  choice: ProfileChoice,
): { readonly path: string; readonly profile: string } {
  if (choice.name === "") return { path: "c8y", profile: "" };
  const profiles = doc === null ? undefined : lookup(doc, "c8y.profiles");
  const names = isTable(profiles)
    ? Object.keys(profiles).filter((name) => isTable(profiles[name]))
    : [];
  const wanted = choice.name.toLowerCase();
  const found = names.find((name) => name.toLowerCase() === wanted);
  if (found !== undefined && PROFILE_NAME.test(found)) {
    return { path: `c8y.profiles.${found}`, profile: found };
  }
  const where = doc === null
    ? `${file} does not exist`
    : `${file} has no table [c8y.profiles.${choice.name}]`;
  const known = names.length === 0
    ? `it defines no cloud profiles; set c8y.profile = "" for the default [c8y] connection, or create the profile with tedge config set c8y.url <url> --profile ${choice.name}`
    : `profiles defined there: ${names.join(", ")}${
      didYouMean(choice.name, names)
    }`;
  throw new ConfigError(
    `${choice.file}: key c8y.profile = ${
      show(choice.name)
    } is invalid: ${where}; ${known}`,
  );
}

/** One file to read keys from, and the prefix of the connection's keys in it. */
interface KeySource {
  readonly file: string;
  readonly doc: Record<string, unknown>;
  /** "" for a mapper.toml, "c8y." or "c8y.profiles.<name>." in tedge.toml. */
  readonly prefix: string;
}

/**
 * Reads the fallback keys of thin-edge's files; their other keys are not
 * ours to judge. Connection keys come from `cloud` only (the chosen
 * mapper.toml or tedge.toml table), the others from tedge.toml.
 */
function readKeys(
  cloud: KeySource | null,
  tedge: KeySource | null,
  issues: string[],
): Pick<TedgeSettings, "settings" | "auth" | "certPath"> {
  const settings: Settings = new Map();
  const sources: (readonly [KeySource | null, string, Key])[] = [
    ...CLOUD_FALLBACKS.map(([name, key]) => [cloud, name, key] as const),
    ...TEDGE_FALLBACKS.map(([name, key]) => [tedge, name, key] as const),
  ];
  for (const [source, name, key] of sources) {
    if (source === null || settings.has(key)) continue; // the first wins
    const tedgeKey = `${source.prefix}${name}`;
    const raw = lookup(source.doc, tedgeKey);
    if (raw === undefined) continue;
    const checked: Checked<unknown> = CHECKS[key](raw);
    if (!checked.ok) {
      issues.push(...issuesOf(source.file, tedgeKey, raw, checked));
      continue;
    }
    settings.set(key, readSetting(checked.value, source.file, tedgeKey));
  }
  let auth: Setting<AuthMethod | "auto"> | undefined;
  const method = cloud && lookup(cloud.doc, `${cloud.prefix}auth_method`);
  if (cloud && method !== undefined) {
    const methodKey = `${cloud.prefix}auth_method`;
    const mapped =
      typeof method === "string" && Object.hasOwn(TEDGE_AUTH, method)
        ? TEDGE_AUTH[method]
        : undefined;
    if (mapped) {
      auth = readSetting(mapped, cloud.file, methodKey);
    } else {
      const expected = "one of certificate, basic, auto";
      issues.push(invalid(cloud.file, methodKey, method, expected));
    }
  }
  let certPath: string | undefined;
  // thin-edge's c8y.device.cert_path (and a profile's) defaults to device.cert_path.
  const certKeys = [
    ...(cloud ? [[cloud, `${cloud.prefix}device.cert_path`] as const] : []),
    ...(tedge ? [[tedge, "device.cert_path"] as const] : []),
  ];
  for (const [source, certKey] of certKeys) {
    const cert = lookup(source.doc, certKey);
    if (cert === undefined) continue;
    const checked = nonEmpty(cert);
    if (checked.ok) certPath = checked.value;
    else issues.push(invalid(source.file, certKey, cert, checked.expected));
    break;
  }
  return {
    settings,
    ...(auth ? { auth } : {}),
    ...(certPath ? { certPath } : {}),
  };
}

/**
 * Reads thin-edge's settings: the connection from the chosen mapper.toml
 * (`mapper` not null, 2.x) or from tedge.toml's table (1.x), the rest from
 * tedge.toml.
 * @throws {ConfigError} naming file, key, value and expectation.
 */
export function readThinEdge(
  tedgePath: string,
  tedgeDoc: Record<string, unknown> | null,
  mapper: {
    readonly file: string;
    readonly doc: Record<string, unknown> | null;
    readonly profile: string;
  } | null,
  choice: ProfileChoice,
): TedgeSettings {
  const issues: string[] = [];
  const tedge = tedgeDoc && { file: tedgePath, doc: tedgeDoc, prefix: "" };
  if (mapper !== null) {
    const cloud = mapper.doc &&
      { file: mapper.file, doc: mapper.doc, prefix: "" };
    const read = readKeys(cloud, tedge, issues);
    fail(issues);
    return {
      ...read,
      profile: mapper.profile,
      source: {
        layout: "mappers",
        file: mapper.file,
        exists: cloud !== null,
        ignoresTedgeC8y: tedgeDoc !== null && isTable(tedgeDoc["c8y"]),
      },
      cloudKey: (name) => ({ file: mapper.file, key: name }),
    };
  }
  const table = cloudTable(tedgePath, tedgeDoc, choice);
  const cloud = tedgeDoc &&
    { file: tedgePath, doc: tedgeDoc, prefix: `${table.path}.` };
  const read = readKeys(cloud, tedge, issues);
  fail(issues);
  return {
    ...read,
    profile: table.profile,
    source: { layout: "tedge.toml", file: tedgePath },
    cloudKey: (name) => ({ file: tedgePath, key: `${table.path}.${name}` }),
  };
}
