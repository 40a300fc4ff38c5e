/**
 * The pure assembly of a {@link Config}: our settings over thin-edge's over
 * the defaults ({@link merge}), then the values that need a file read in
 * between — basic credentials, the device certificate's CN, the broker
 * password — and the checks of required keys ({@link finish}).
 *
 * @module
 */
import { dirname, join } from "node:path";
import { ConfigError, fail, invalid } from "./_messages.ts";
import { commonName, parseCredentials } from "./credentials.ts";
import {
  DEFAULTS,
  type Key,
  KEYS,
  type Setting,
  type Settings,
  type Values,
} from "./schema.ts";
import type { TedgeSettings } from "./tedge.ts";
import type {
  AuthMethod,
  Config,
  Credentials,
  MqttLogin,
  MqttTls,
} from "./types.ts";

/** Everything known before the credentials, certificate and password files are read. */
export interface Draft {
  readonly file: string;
  readonly configFile: string | null;
  readonly tedgeFile: string | null;
  readonly tedgePath: string;
  readonly tedge: TedgeSettings;
  readonly settings: Settings;
  readonly auth: Setting<AuthMethod | "auto">;
  readonly credentialsPath: string;
  /** Device certificate to read for the CN when no device id is set, else null. */
  readonly certPath: string | null;
  readonly certDefaultPath: string;
  /** The broker password file to read (a username is set), else null. */
  readonly passwordFile: Setting<string> | null;
}

/** thin-edge's default `c8y.root_cert_path`: the operating system's CA store. */
export const THIN_EDGE_ROOT_CERT_PATH = "/etc/ssl/certs";

/** The setting unless it is absent or "" (not set). */
function given(setting: Setting | undefined): Setting | undefined {
  return setting === undefined || setting.value === "" ? undefined : setting;
}

/** Ours over thin-edge's over defaults. */
export function merge(
  file: string,
  configFile: string | null,
  ours: Settings,
  tedgePath: string,
  tedgeFile: string | null,
  tedge: TedgeSettings,
): Draft {
  const settings: Settings = new Map();
  for (const key of KEYS) {
    const setting = ours.get(key) ?? tedge.settings.get(key) ??
      (Object.hasOwn(DEFAULTS, key)
        ? { value: DEFAULTS[key as keyof typeof DEFAULTS], from: "default" }
        : undefined);
    if (setting) settings.set(key, setting);
  }
  // The WebSocket host goes with the URL it belongs to: our url alone
  // must not be paired with the http of thin-edge's (other) tenant.
  const url = settings.get("c8y.url");
  const http = given(ours.get("c8y.http")) ??
    (ours.has("c8y.url") ? undefined : given(tedge.settings.get("c8y.http"))) ??
    (url && { value: url.value, from: "c8y.url" });
  if (http) settings.set("c8y.http", http);

  const auth = (ours.get("c8y.auth") as Setting<AuthMethod> | undefined) ??
    tedge.auth ?? { value: DEFAULTS["c8y.auth"], from: "default" };
  if (
    !ours.has("c8y.credentials_path") &&
    !tedge.settings.has("c8y.credentials_path") &&
    auth === tedge.auth
  ) {
    // thin-edge's auth method comes with thin-edge's credentials file.
    settings.set("c8y.credentials_path", {
      value: join(dirname(tedgePath), "credentials.toml"),
      from: "thin-edge's default",
    });
  }
  if (
    !ours.has("c8y.root_cert_path") &&
    !tedge.settings.has("c8y.root_cert_path") &&
    url !== undefined && !ours.has("c8y.url") &&
    String(url.value).startsWith("https:")
  ) {
    // thin-edge's connection comes with thin-edge's trust: the operating
    // system's store, where a tenant's private CA may be installed.
    settings.set("c8y.root_cert_path", {
      value: THIN_EDGE_ROOT_CERT_PATH,
      from: "thin-edge's default",
    });
  }
  if (
    tedge.profile !== "" &&
    settings.get("mqtt.topic_prefix")?.from === "default"
  ) {
    // thin-edge would use "c8y" too, the default connection's topics: the
    // requests of another tenant. tedge connect refuses such a profile.
    const name = tedge.profile;
    const where = tedge.cloudKey("bridge.topic_prefix");
    throw new ConfigError(
      `${where.file}: key ${where.key} is not set, so profile ${name} would share the topic prefix "c8y" of the default connection: set it (sudo tedge config set c8y.bridge.topic_prefix c8y-${name} --profile ${name}), or set topic_prefix under [mqtt] in ${file}`,
    );
  }
  const certDefaultPath = join(
    dirname(tedgePath),
    "device-certs",
    "tedge-certificate.pem",
  );
  const passwordFile = given(settings.get("mqtt.username"))
    ? given(settings.get("mqtt.password_file")) as Setting<string> | undefined
    : undefined;
  return {
    file,
    configFile,
    tedgeFile,
    tedgePath,
    tedge,
    settings,
    auth,
    credentialsPath: settings.get("c8y.credentials_path")?.value as string,
    certPath: settings.has("c8y.device_id")
      ? null
      : tedge.certPath ?? certDefaultPath,
    certDefaultPath,
    passwordFile: passwordFile ?? null,
  };
}

/** The texts read for a draft; null = that file does not exist (or was not needed). */
export interface DraftFiles {
  readonly credentials: string | null;
  readonly cert: string | null;
  readonly password: string | null;
}

/** Broker TLS as thin-edge decides it: on when a CA file or directory is set. */
function mqttTls(settings: Settings, issues: string[]): MqttTls | null {
  const get = (key: Key) =>
    given(settings.get(key))?.value as string | undefined;
  const cert = given(settings.get("mqtt.cert_file"));
  const key = given(settings.get("mqtt.key_file"));
  if ((cert === undefined) !== (key === undefined)) {
    const set = (cert ?? key)!;
    issues.push(
      `${set.at?.file ?? set.from}: key ${
        set.at?.key ?? ""
      } is set without its pair: a client certificate needs both the certificate (cert_file) and its private key (key_file); set both or neither`,
    );
  }
  const caFile = get("mqtt.ca_file") ?? null;
  const caDir = get("mqtt.ca_dir") ?? null;
  if (caFile === null && caDir === null) return null;
  return {
    caFile,
    caDir,
    certFile: get("mqtt.cert_file") ?? null,
    keyFile: get("mqtt.key_file") ?? null,
  };
}

/** Resolves auth, credentials, device id and broker login, checks required keys, freezes. */
export function finish(draft: Draft, files: DraftFiles): Config {
  const { settings, file, tedge } = draft;
  const get = <K extends Key>(key: K) =>
    settings.get(key)?.value as Values[K] | undefined;
  const issues: string[] = [];
  const origins: Record<string, string> = {};
  for (const [key, setting] of settings) origins[key] = setting.from;
  // A cloud profile's daemon and clients get their own default service name
  // and client id (like thin-edge's tedge-mapper-c8y@<profile>), so that the
  // daemons of two connections never share a topic or a session.
  const perProfile = (key: "health.service_name" | "mqtt.client_id") =>
    tedge.profile !== "" && settings.get(key)?.from === "default"
      ? `${get(key)!}@${tedge.profile}`
      : get(key)!;

  let deviceId = get("c8y.device_id");
  if (
    deviceId === undefined && draft.certPath !== null && files.cert !== null
  ) {
    deviceId = commonName(draft.certPath, files.cert);
    origins["c8y.device_id"] = `${draft.certPath} (certificate CN)`;
  }
  const option = tedge.profile === "" ? "" : ` --profile ${tedge.profile}`;
  if (deviceId === undefined) {
    issues.push(
      `c8y.device_id is not set: set device_id under [c8y] in ${file}, or device.id in ${draft.tedgePath}, or install the device certificate ${
        draft.certPath ?? draft.certDefaultPath
      } (its CN is the device id; tedge key device.cert_path)`,
    );
  }
  const url = get("c8y.url");
  if (url === undefined) {
    const where = tedge.cloudKey("url");
    issues.push(
      `c8y.url is not set: set url under [c8y] in ${file} (e.g. url = "https://example.cumulocity.com"), or ${where.key} in ${where.file} (tedge config set c8y.url <host>${option})`,
    );
  }
  const tls = mqttTls(settings, issues);
  let login: MqttLogin | null = null;
  const username = get("mqtt.username");
  if (username) {
    let password: string | null = null;
    if (draft.passwordFile !== null) {
      if (files.password === null) {
        const where = draft.passwordFile.at;
        issues.push(
          invalid(
            where?.file ?? draft.passwordFile.from,
            where?.key ?? "mqtt.password_file",
            draft.passwordFile.value,
            "an existing file whose first line is the broker password",
          ),
        );
      } else {
        // thin-edge takes the first line, without its line end.
        password = files.password.split(/\r?\n/, 1)[0] ?? "";
      }
    }
    login = { username, password };
  }
  fail(issues);

  const auth: AuthMethod = draft.auth.value === "auto"
    ? (files.credentials === null ? "jwt" : "basic")
    : draft.auth.value;
  origins["c8y.auth"] = draft.auth.value === "auto"
    ? `${draft.auth.from} (auto: ${
      auth === "basic" ? "the credentials file exists" : "no credentials file"
    })`
    : draft.auth.from;
  let credentials: Credentials | null = null;
  if (auth === "basic") {
    if (files.credentials === null) {
      throw new ConfigError(
        `${draft.credentialsPath}: credentials file does not exist, but auth is basic (${draft.auth.from}): create it with [c8y] username = "<tenant>/<user>" and password = "...", or set c8y.credentials_path`,
      );
    }
    credentials = parseCredentials(draft.credentialsPath, files.credentials);
  }

  const config: Config = {
    configFile: draft.configFile,
    tedgeConfigFile: draft.tedgeFile,
    mqtt: {
      host: get("mqtt.host")!,
      port: get("mqtt.port")!,
      topicPrefix: get("mqtt.topic_prefix")!,
      clientId: perProfile("mqtt.client_id"),
      maxPayloadBytes: get("mqtt.max_payload")!,
      tls,
      auth: login,
    },
    c8y: {
      url: url!,
      httpUrl: get("c8y.http") || url!,
      deviceId: deviceId!,
      auth,
      credentialsPath: draft.credentialsPath,
      credentials,
      rootCertPath: get("c8y.root_cert_path")!,
      jwtTimeoutMs: get("c8y.jwt_timeout")!,
      profile: tedge.profile,
    },
    tunnel: {
      allow: get("tunnel.allow")!,
      maxSessions: get("tunnel.max_sessions")!,
      connectTimeoutMs: get("tunnel.connect_timeout")!,
      idleTimeoutMs: get("tunnel.idle_timeout")!,
      maxDurationMs: get("tunnel.max_duration")!,
    },
    log: {
      level: get("log.level")!,
      format: get("log.format")!,
      file: get("log.file")!,
    },
    proxy: {
      address: get("proxy.address")!,
      username: get("proxy.username")!,
      password: get("proxy.password")!,
    },
    health: {
      topicRoot: get("health.topic_root")!,
      serviceName: perProfile("health.service_name"),
      deviceTopicId: get("health.device_topic_id")!,
      serviceType: get("health.service_type")!,
    },
    tedge: {
      configPath: draft.tedgePath,
      configDir: dirname(draft.tedgePath),
      layout: tedge.source.layout,
      mapperFile: tedge.source.layout === "mappers" ? tedge.source.file : null,
      tedgeC8yIgnored: tedge.source.layout === "mappers" &&
        tedge.source.ignoresTedgeC8y,
    },
    origins,
  };
  return deepFreeze(config);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
