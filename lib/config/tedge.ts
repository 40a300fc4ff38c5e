/**
 * thin-edge's settings as fallbacks for what our file leaves unset:
 * tedge.toml's `[c8y]` table (or `[c8y.profiles.<name>]` for a cloud
 * profile), the local broker, the proxy, the device id and certificate.
 *
 * @module
 */
import {
  ConfigError,
  didYouMean,
  fail,
  invalid,
  isTable,
  show,
} from "./_messages.ts";
import { lookup, parseTomlText } from "./_toml.ts";
import { type Checked, issuesOf, nonEmpty, PROFILE_NAME } from "./checks.ts";
import { CHECKS, type Key, type Setting, type Settings } from "./schema.ts";
import type { AuthMethod } from "./types.ts";

/**
 * Keys of the Cumulocity connection in tedge.toml, relative to its table:
 * `[c8y]`, or `[c8y.profiles.<name>]` for a cloud profile (thin-edge >= 1.4).
 * A profile table does not inherit from `[c8y]`: thin-edge reads each
 * profile on its own, with built-in defaults for what it leaves unset.
 */
const TEDGE_CLOUD_FALLBACKS: readonly (readonly [string, Key])[] = [
  ["url", "c8y.url"],
  ["bridge.topic_prefix", "mqtt.topic_prefix"],
  ["root_cert_path", "c8y.root_cert_path"],
  ["credentials_path", "c8y.credentials_path"],
  ["device.id", "c8y.device_id"],
];

/** Keys of tedge.toml outside the connection table, shared by every profile. */
const TEDGE_FALLBACKS: readonly (readonly [string, Key])[] = [
  ["mqtt.client.host", "mqtt.host"],
  ["mqtt.client.port", "mqtt.port"],
  ["proxy.address", "proxy.address"],
  ["proxy.username", "proxy.username"],
  ["proxy.password", "proxy.password"],
  // thin-edge's c8y.device.id (and a profile's) defaults to device.id.
  ["device.id", "c8y.device_id"],
];

const TEDGE_AUTH: Readonly<Record<string, AuthMethod | "auto">> = {
  certificate: "jwt",
  basic: "basic",
  auto: "auto",
};

/** What tedge.toml supplies: fallbacks for our keys, the auth method, the certificate path. */
export interface TedgeSettings {
  readonly settings: Settings;
  readonly auth?: Setting<AuthMethod | "auto">;
  readonly certPath?: string;
  /** The profile as tedge.toml spells it; "" = the default `[c8y]` table. */
  readonly profile: string;
}

/** `c8y.profile` as our file set it ("" when unset), and that file. */
export interface ProfileChoice {
  readonly name: string;
  readonly file: string;
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

/**
 * Reads the fallback keys of tedge.toml; its other keys are not ours to
 * judge. Connection keys come from the chosen profile's table only.
 */
export function readTedgeFile(
  file: string,
  text: string | null,
  choice: ProfileChoice,
): TedgeSettings {
  const settings: Settings = new Map();
  const doc = text === null ? null : parseTomlText(file, text);
  const table = cloudTable(file, doc, choice);
  if (doc === null) return { settings, profile: table.profile };
  const issues: string[] = [];
  const fallbacks = [
    ...TEDGE_CLOUD_FALLBACKS.map(([name, key]) =>
      [`${table.path}.${name}`, key] as const
    ),
    ...TEDGE_FALLBACKS,
  ];
  for (const [tedgeKey, key] of fallbacks) {
    if (settings.has(key)) continue; // the connection's own value wins
    const raw = lookup(doc, tedgeKey);
    if (raw === undefined) continue;
    const checked: Checked<unknown> = CHECKS[key](raw);
    if (!checked.ok) {
      issues.push(...issuesOf(file, tedgeKey, raw, checked));
      continue;
    }
    settings.set(key, {
      value: checked.value,
      from: `${file} key ${tedgeKey}`,
    });
  }
  let auth: Setting<AuthMethod | "auto"> | undefined;
  const methodKey = `${table.path}.auth_method`;
  const method = lookup(doc, methodKey);
  if (method !== undefined) {
    const mapped =
      typeof method === "string" && Object.hasOwn(TEDGE_AUTH, method)
        ? TEDGE_AUTH[method]
        : undefined;
    if (mapped) {
      auth = { value: mapped, from: `${file} key ${methodKey}` };
    } else {
      const expected = "one of certificate, basic, auto";
      issues.push(invalid(file, methodKey, method, expected));
    }
  }
  let certPath: string | undefined;
  // thin-edge's c8y.device.cert_path (and a profile's) defaults to device.cert_path.
  for (
    const certKey of [`${table.path}.device.cert_path`, "device.cert_path"]
  ) {
    const cert = lookup(doc, certKey);
    if (cert === undefined) continue;
    const checked = nonEmpty(cert);
    if (checked.ok) certPath = checked.value;
    else issues.push(invalid(file, certKey, cert, checked.expected));
    break;
  }
  fail(issues);
  return {
    settings,
    ...(auth ? { auth } : {}),
    ...(certPath ? { certPath } : {}),
    profile: table.profile,
  };
}

/** `c8y.profile` as our file set it. */
export function profileChoice(file: string, ours: Settings): ProfileChoice {
  const own = ours.get("c8y.profile")?.value;
  return { name: typeof own === "string" ? own : "", file };
}
