import assert from "node:assert/strict";
import {
  type Config,
  ConfigError,
  type ConfigInput,
  DEFAULT_CONFIG_PATH,
  loadConfig,
  parseConfig,
} from "../lib/config/config.ts";
import { parseAllowEntry } from "../lib/config/allow.ts";

const OURS = "/etc/c8y-tunnel/config.toml";
const TEDGE = "/etc/tedge/tedge.toml";
const MINIMAL =
  `[c8y]\nurl = "https://t1.cumulocity.com"\ndevice_id = "dev1"\n`;
const SECRET = "hunter2-very-secret";

/** A readTextFile over an in-memory set of files; others are NotFound. */
function memoryFs(files: Record<string, string>) {
  const reads: string[] = [];
  const read = (path: string): Promise<string> => {
    reads.push(path);
    const text = files[path];
    return text === undefined
      ? Promise.reject(new Deno.errors.NotFound(`No such file: ${path}`))
      : Promise.resolve(text);
  };
  return { read, reads };
}

function envOf(vars: Record<string, string>) {
  return (name: string): string | undefined => vars[name];
}

/** Ours only, no tedge.toml. */
function parseOurs(
  text: string,
  extra: Partial<ConfigInput> = {},
): Config {
  return parseConfig({
    file: OURS,
    text,
    tedgeFile: null,
    tedgeText: null,
    ...extra,
  });
}

/** The texts of the parsed tunnel.allow rules. */
function allowTexts(config: Config): string[] {
  return config.tunnel.allow.map((rule) => rule.text);
}

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    assert.ok(
      error instanceof ConfigError,
      `expected ConfigError, got ${error}`,
    );
    return error.message;
  }
  assert.fail("expected a ConfigError");
}

async function asyncErrorOf(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (error) {
    assert.ok(
      error instanceof ConfigError,
      `expected ConfigError, got ${error}`,
    );
    return error.message;
  }
  assert.fail("expected a ConfigError");
}

/** A self-signed certificate with the given CN, made by openssl; null if openssl is missing. */
async function makeCert(dir: string, cn: string): Promise<string | null> {
  try {
    const out = await new Deno.Command("openssl", {
      args: [
        "req",
        "-x509",
        "-newkey",
        "ed25519",
        "-nodes",
        "-keyout",
        `${dir}/key.pem`,
        "-out",
        `${dir}/cert.pem`,
        "-days",
        "1",
        "-subj",
        `/O=Thin Edge/CN=${cn}/OU=Test Device`,
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
  return await Deno.readTextFile(`${dir}/cert.pem`);
}

Deno.test("parseConfig() applies the built-in defaults", () => {
  const { origins, ...config } = parseOurs(MINIMAL);
  assert.equal(origins["c8y.url"], `${OURS} key c8y.url`);
  assert.equal(origins["c8y.http"], "c8y.url");
  assert.equal(origins["mqtt.port"], "default");
  assert.equal(origins["c8y.auth"], "default");
  assert.deepEqual(config, {
    configFile: OURS,
    tedgeConfigFile: null,
    mqtt: {
      host: "127.0.0.1",
      port: 1883,
      topicPrefix: "c8y",
      clientId: "c8y-tunnel",
      maxPayloadBytes: 65536,
      tls: null,
      auth: null,
    },
    c8y: {
      url: "https://t1.cumulocity.com",
      httpUrl: "https://t1.cumulocity.com",
      deviceId: "dev1",
      auth: "jwt",
      credentialsPath: "/etc/c8y-tunnel/credentials.toml",
      credentials: null,
      rootCertPath: "",
      jwtTimeoutMs: 5000,
      profile: "",
    },
    tunnel: {
      allow: ["127.0.0.1:22"].map(parseAllowEntry),
      maxSessions: 16,
      connectTimeoutMs: 10_000,
      idleTimeoutMs: 3_600_000,
      maxDurationMs: 0,
    },
    log: { level: "info", format: "text", file: "" },
    proxy: { address: "", username: "", password: "" },
    health: {
      topicRoot: "te",
      serviceName: "c8y-tunnel",
      deviceTopicId: "device/main//",
      serviceType: "service",
    },
    tedge: {
      configPath: "/etc/tedge/tedge.toml",
      configDir: "/etc/tedge",
      layout: "tedge.toml",
      mapperFile: null,
      tedgeC8yIgnored: false,
    },
  });
});

Deno.test("parseConfig() returns a deeply frozen object", () => {
  const config = parseOurs(MINIMAL);
  assert.ok(Object.isFrozen(config));
  assert.ok(Object.isFrozen(config.c8y));
  assert.ok(Object.isFrozen(config.tunnel.allow));
  assert.throws(() => {
    (config.mqtt as { port: number }).port = 1;
  }, TypeError);
});

const FULL = `
[mqtt]
host = "broker.local"
port = 8883
topic_prefix = "c8y-2"
max_payload = 131072
client_id = "tunnel-7"
ca_file = "/etc/tunnel/broker-ca.pem"
ca_dir = "/etc/tunnel/broker-cas"
cert_file = "/etc/tunnel/client.pem"
key_file = "/etc/tunnel/client.key"
username = "tunnel"
password_file = "/etc/tunnel/broker-password"

[c8y]
url = "http://127.0.0.1:8080/"
device_id = "my-device"
auth = "none"
credentials_path = "/opt/creds.toml"
root_cert_path = "/etc/ssl/extra.pem"
jwt_timeout = 2.5
http = "http://127.0.0.1:8081"

[tunnel]
allow = ["127.0.0.1:22", "10.0.0.0/8:*", "*:5900", "[::1]:22"]
max_sessions = 3
connect_timeout = 0.25
idle_timeout = 0
max_duration = 7200

[log]
level = "debug"
format = "json"

[proxy]
address = "proxy.local:3128"
username = "pu"
password = "pp"

[health]
topic_root = "te2"
service_name = "tunnel-svc"
device_topic_id = "device/gw2//"
service_type = "systemd"

[tedge]
config_path = "/opt/tedge/tedge.toml"
`;

Deno.test("parseConfig() reads every key of its own file", () => {
  const { origins, ...config } = parseOurs(FULL, {
    files: { "/etc/tunnel/broker-password": `${SECRET}\nsecond line\n` },
  });
  assert.equal(origins["mqtt.password_file"], `${OURS} key mqtt.password_file`);
  assert.equal(origins["c8y.http"], `${OURS} key c8y.http`);
  assert.deepEqual(config, {
    configFile: OURS,
    tedgeConfigFile: null,
    mqtt: {
      host: "broker.local",
      port: 8883,
      topicPrefix: "c8y-2",
      clientId: "tunnel-7",
      maxPayloadBytes: 131072,
      tls: {
        caFile: "/etc/tunnel/broker-ca.pem",
        caDir: "/etc/tunnel/broker-cas",
        certFile: "/etc/tunnel/client.pem",
        keyFile: "/etc/tunnel/client.key",
      },
      auth: { username: "tunnel", password: SECRET },
    },
    c8y: {
      url: "http://127.0.0.1:8080",
      httpUrl: "http://127.0.0.1:8081",
      deviceId: "my-device",
      auth: "none",
      credentialsPath: "/opt/creds.toml",
      credentials: null,
      rootCertPath: "/etc/ssl/extra.pem",
      jwtTimeoutMs: 2500,
      profile: "",
    },
    tunnel: {
      allow: ["127.0.0.1:22", "10.0.0.0/8:*", "*:5900", "[::1]:22"].map(
        parseAllowEntry,
      ),
      maxSessions: 3,
      connectTimeoutMs: 250,
      idleTimeoutMs: 0,
      maxDurationMs: 7_200_000,
    },
    log: { level: "debug", format: "json", file: "" },
    proxy: {
      address: "http://proxy.local:3128",
      username: "pu",
      password: "pp",
    },
    health: {
      topicRoot: "te2",
      serviceName: "tunnel-svc",
      deviceTopicId: "device/gw2//",
      serviceType: "systemd",
    },
    tedge: {
      configPath: "/opt/tedge/tedge.toml",
      configDir: "/opt/tedge",
      layout: "tedge.toml",
      mapperFile: null,
      tedgeC8yIgnored: false,
    },
  });
});

const TEDGE_FULL = `
[device]
id = "tedge-dev"
type = "thin-edge.io"

[c8y]
url = "t9.cumulocity.com"
root_cert_path = "/etc/ssl/certs"
credentials_path = "/etc/tedge/credentials.toml"
auth_method = "certificate"
smartrest.templates = ["a", "b"]

[c8y.bridge]
topic_prefix = "c8y-x"

[mqtt.client]
host = "localhost"
port = 1884

[proxy]
address = "http://10.1.1.1:3128"
username = "tp"
password = "tpp"

[some_future_table]
whatever = true
`;

Deno.test("parseConfig() takes unset keys from tedge.toml and ignores its other keys", () => {
  const config = parseConfig({
    file: null,
    text: null,
    tedgeFile: TEDGE,
    tedgeText: TEDGE_FULL,
  });
  assert.equal(config.configFile, null);
  assert.equal(config.tedgeConfigFile, TEDGE);
  assert.deepEqual(config.mqtt, {
    host: "localhost",
    port: 1884,
    topicPrefix: "c8y-x",
    clientId: "c8y-tunnel",
    maxPayloadBytes: 65536,
    tls: null,
    auth: null,
  });
  assert.equal(config.c8y.url, "https://t9.cumulocity.com");
  assert.equal(config.c8y.deviceId, "tedge-dev");
  assert.equal(config.c8y.auth, "jwt");
  assert.equal(config.c8y.rootCertPath, "/etc/ssl/certs");
  assert.equal(config.c8y.credentialsPath, "/etc/tedge/credentials.toml");
  assert.deepEqual(config.proxy, {
    address: "http://10.1.1.1:3128",
    username: "tp",
    password: "tpp",
  });
});

Deno.test("parseConfig() keeps a scheme and port that tedge.toml's c8y.url already has", () => {
  const url = (tedgeUrl: string) =>
    parseConfig({
      file: null,
      text: null,
      tedgeFile: TEDGE,
      tedgeText: `[device]\nid = "d"\n[c8y]\nurl = ${
        JSON.stringify(tedgeUrl)
      }\n`,
    }).c8y.url;
  assert.equal(url("t9.cumulocity.com:8443"), "https://t9.cumulocity.com:8443");
  assert.equal(url("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
  assert.equal(
    url("https://T9.Cumulocity.com:443/"),
    "https://t9.cumulocity.com",
  );
});

Deno.test("parseConfig() maps tedge.toml c8y.auth_method to an auth method", () => {
  const CREDS = `[c8y]\nusername = "t1/alice"\npassword = "${SECRET}"\n`;
  const auth = (method: string, credentialsText: string | null) =>
    parseConfig({
      file: null,
      text: null,
      tedgeFile: TEDGE,
      tedgeText:
        `[device]\nid = "d"\n[c8y]\nurl = "t1.c8y.io"\nauth_method = "${method}"\n`,
      credentialsText,
    }).c8y;
  assert.equal(auth("certificate", CREDS).auth, "jwt");
  assert.equal(auth("certificate", CREDS).credentials, null);
  assert.equal(auth("basic", CREDS).auth, "basic");
  assert.deepEqual(auth("basic", CREDS).credentials, {
    username: "t1/alice",
    password: SECRET,
  });
  assert.equal(auth("auto", CREDS).auth, "basic");
  assert.equal(auth("auto", null).auth, "jwt");
  assert.equal(auth("auto", null).credentials, null);
  const message = errorOf(() => auth("password", null));
  assert.match(
    message,
    /^\/etc\/tedge\/tedge\.toml: key c8y\.auth_method = "password" is invalid/,
  );
  assert.match(message, /certificate, basic, auto/);
});

Deno.test("parseConfig() prefers its own file over tedge.toml over defaults", () => {
  const config = parseConfig({
    file: OURS,
    text:
      `[mqtt]\nport = 2000\n[c8y]\nurl = "https://ours.example"\nauth = "none"\n[proxy]\nusername = "ou"\n`,
    tedgeFile: TEDGE,
    tedgeText: TEDGE_FULL,
  });
  assert.equal(config.mqtt.port, 2000); // ours
  assert.equal(config.mqtt.host, "localhost"); // tedge
  assert.equal(config.mqtt.clientId, "c8y-tunnel"); // default
  assert.equal(config.c8y.url, "https://ours.example");
  assert.equal(config.c8y.auth, "none"); // ours over tedge's certificate
  assert.equal(config.c8y.deviceId, "tedge-dev");
  assert.deepEqual(config.proxy, {
    address: "http://10.1.1.1:3128",
    username: "ou",
    password: "tpp",
  });
  assert.equal(config.log.level, "info");
});

const TEDGE_PROFILES = `
[device]
id = "tedge-dev"

[c8y]
url = "t1.cumulocity.com"
root_cert_path = "/etc/ssl/certs"
auth_method = "certificate"
credentials_path = "/etc/tedge/credentials.toml"
bridge.topic_prefix = "c8y"

[c8y.profiles.second]
url = "t2.cumulocity.com"
auth_method = "basic"
credentials_path = "/etc/tedge/second-credentials.toml"
root_cert_path = "/etc/tedge/second-ca.pem"
bridge.topic_prefix = "c8y-second"
device.id = "second-dev"
proxy.bind.port = 8002

[c8y.profiles.Third]
url = "t3.cumulocity.com"
bridge.topic_prefix = "c8y-third"

[mqtt.client]
host = "localhost"
port = 1884

[proxy]
address = "http://10.1.1.1:3128"
`;

/** Our file `text` over TEDGE_PROFILES. */
function parseProfiles(text: string, extra: Partial<ConfigInput> = {}) {
  return parseConfig({
    file: OURS,
    text,
    tedgeFile: TEDGE,
    tedgeText: TEDGE_PROFILES,
    ...extra,
  });
}

Deno.test("parseConfig() takes the connection keys of the profile that c8y.profile selects", () => {
  const creds = `[c8y]\nusername = "t2/bob"\npassword = "${SECRET}"\n`;
  const config = parseProfiles(`[c8y]\nprofile = "second"\n`, {
    credentialsText: creds,
  });
  assert.deepEqual(config.c8y, {
    url: "https://t2.cumulocity.com",
    httpUrl: "https://t2.cumulocity.com",
    deviceId: "second-dev",
    auth: "basic",
    credentialsPath: "/etc/tedge/second-credentials.toml",
    credentials: { username: "t2/bob", password: SECRET },
    rootCertPath: "/etc/tedge/second-ca.pem",
    jwtTimeoutMs: 5000,
    profile: "second",
  });
  assert.equal(config.mqtt.topicPrefix, "c8y-second");
  // Keys outside the connection table are shared by every profile.
  assert.equal(config.mqtt.host, "localhost");
  assert.equal(config.mqtt.port, 1884);
  assert.equal(config.proxy.address, "http://10.1.1.1:3128");

  // Without c8y.profile (or with ""), the default [c8y] table applies.
  for (const text of [MINIMAL.replace(/url.*\n|device_id.*\n/g, ""), ""]) {
    const plain = parseProfiles(text === "" ? `[c8y]\nprofile = ""\n` : text);
    assert.equal(plain.c8y.url, "https://t1.cumulocity.com");
    assert.equal(plain.c8y.deviceId, "tedge-dev");
    assert.equal(plain.c8y.auth, "jwt");
    assert.equal(plain.c8y.rootCertPath, "/etc/ssl/certs");
    assert.equal(plain.c8y.profile, "");
    assert.equal(plain.mqtt.topicPrefix, "c8y");
  }
});

Deno.test("parseConfig() does not fill a profile's unset keys from the default [c8y] table", () => {
  // Matched without regard to case, as thin-edge does; reported as spelt there.
  const config = parseProfiles(`[c8y]\nprofile = "third"\n`);
  assert.equal(config.c8y.profile, "Third");
  assert.equal(config.c8y.url, "https://t3.cumulocity.com");
  assert.equal(config.mqtt.topicPrefix, "c8y-third");
  // not [c8y]'s value but thin-edge's default (the same path here)
  assert.equal(config.c8y.rootCertPath, "/etc/ssl/certs");
  assert.equal(config.origins["c8y.root_cert_path"], "thin-edge's default");
  assert.equal(config.c8y.credentialsPath, "/etc/c8y-tunnel/credentials.toml");
  assert.equal(config.c8y.auth, "jwt");
  // c8y.device.id of a profile defaults to the top-level device.id.
  assert.equal(config.c8y.deviceId, "tedge-dev");
});

Deno.test("parseConfig() prefers its own file over the profile's keys", () => {
  const config = parseProfiles(
    `[mqtt]\ntopic_prefix = "mine"\n[c8y]\nprofile = "second"\nurl = "https://ours.example"\nauth = "jwt"\ndevice_id = "own-dev"\n`,
  );
  assert.equal(config.c8y.url, "https://ours.example");
  assert.equal(config.mqtt.topicPrefix, "mine");
  assert.equal(config.c8y.auth, "jwt"); // over the profile's basic
  assert.equal(config.c8y.credentials, null);
  assert.equal(config.c8y.deviceId, "own-dev");
  assert.equal(config.c8y.rootCertPath, "/etc/tedge/second-ca.pem"); // profile
  assert.equal(config.c8y.profile, "second");
});

Deno.test("parseConfig() names the file, key, value and the defined profiles for an unknown c8y.profile", () => {
  const typo = errorOf(() => parseProfiles(`[c8y]\nprofile = "secnd"\n`));
  assert.equal(
    typo,
    `${OURS}: key c8y.profile = "secnd" is invalid: ${TEDGE} has no table [c8y.profiles.secnd]; profiles defined there: second, Third (did you mean second?)`,
  );
  const none = errorOf(() =>
    parseProfiles(`[c8y]\nprofile = "second"\n`, { tedgeText: TEDGE_FULL })
  );
  assert.match(
    none,
    /^\/etc\/c8y-tunnel\/config\.toml: key c8y\.profile = "second" is invalid: \/etc\/tedge\/tedge\.toml has no table \[c8y\.profiles\.second\]; it defines no cloud profiles/,
  );
  const missing = errorOf(() =>
    parseProfiles(`[c8y]\nprofile = "second"\n`, { tedgeText: null })
  );
  assert.match(
    missing,
    /key c8y\.profile = "second" is invalid: \/etc\/tedge\/tedge\.toml does not exist/,
  );
  const name = errorOf(() => parseProfiles(`[c8y]\nprofile = "a.b"\n`));
  assert.match(
    name,
    /^\/etc\/c8y-tunnel\/config\.toml: key c8y\.profile = "a\.b" is invalid: expected "" \(the default \[c8y\] connection\) or a thin-edge profile name/,
  );
});

Deno.test("parseConfig() refuses a profile that would share the default topic prefix", () => {
  const tedgeText =
    `[device]\nid = "d"\n[c8y]\nurl = "t1.example"\n[c8y.profiles.new]\nurl = "t2.example"\n`;
  const message = errorOf(() =>
    parseProfiles(`[c8y]\nprofile = "new"\n`, { tedgeText })
  );
  assert.match(
    message,
    /^\/etc\/tedge\/tedge\.toml: key c8y\.profiles\.new\.bridge\.topic_prefix is not set/,
  );
  assert.match(
    message,
    /tedge config set c8y\.bridge\.topic_prefix c8y-new --profile new/,
  );
  assert.match(
    message,
    /topic_prefix under \[mqtt\] in \/etc\/c8y-tunnel\/config\.toml/,
  );
  // Our own mqtt.topic_prefix settles it.
  const config = parseProfiles(
    `[mqtt]\ntopic_prefix = "c8y-new"\n[c8y]\nprofile = "new"\n`,
    { tedgeText },
  );
  assert.equal(config.mqtt.topicPrefix, "c8y-new");
  assert.equal(config.c8y.url, "https://t2.example");
});

Deno.test("parseConfig() names the profile's keys in tedge.toml errors and hints", () => {
  const bad = errorOf(() =>
    parseProfiles(`[c8y]\nprofile = "second"\n`, {
      tedgeText: TEDGE_PROFILES.replace(
        'auth_method = "basic"',
        'auth_method = "password"',
      ),
    })
  );
  assert.match(
    bad,
    /^\/etc\/tedge\/tedge\.toml: key c8y\.profiles\.second\.auth_method = "password" is invalid/,
  );
  const noUrl = errorOf(() =>
    parseProfiles(`[c8y]\nprofile = "x"\n`, {
      tedgeText:
        `[device]\nid = "d"\n[c8y.profiles.x]\nbridge.topic_prefix = "c8y-x"\n`,
    })
  );
  assert.match(
    noUrl,
    /or c8y\.profiles\.x\.url in \/etc\/tedge\/tedge\.toml \(tedge config set c8y\.url <host> --profile x\)/,
  );
});

Deno.test("loadConfig() reads the device certificate named by the profile", async () => {
  const tedgeText =
    `[device]\ncert_path = "/etc/tedge/device-certs/tedge-certificate.pem"\n[c8y.profiles.second]\nurl = "t2.example"\nbridge.topic_prefix = "c8y-second"\ndevice.cert_path = "/etc/tedge/second-cert.pem"\n`;
  const fs = memoryFs({
    [OURS]: `[c8y]\nprofile = "second"\n`,
    [TEDGE]: tedgeText,
  });
  const message = await asyncErrorOf(() =>
    loadConfig({ path: OURS, env: envOf({}), readTextFile: fs.read })
  );
  assert.ok(fs.reads.includes("/etc/tedge/second-cert.pem"), fs.reads.join());
  assert.match(
    message,
    /install the device certificate \/etc\/tedge\/second-cert\.pem/,
  );
});

Deno.test("parseConfig() reads the device id from the certificate CN", async () => {
  const dir = await Deno.makeTempDir({ prefix: "config_test_" });
  try {
    const pem = await makeCert(dir, "my-device");
    if (pem === null) {
      console.log(
        "SKIP: openssl is not installed; device id from certificate not tested",
      );
      return;
    }
    const config = parseOurs(`[c8y]\nurl = "https://t1.example"\n`, {
      deviceCertText: pem,
    });
    assert.equal(config.c8y.deviceId, "my-device");
    // An explicit device id wins over the certificate.
    assert.equal(
      parseOurs(MINIMAL, { deviceCertText: pem }).c8y.deviceId,
      "dev1",
    );
    const message = errorOf(() =>
      parseOurs(`[c8y]\nurl = "https://t1.example"\n`, {
        deviceCertText: "not a pem",
      })
    );
    assert.match(
      message,
      /\/etc\/tedge\/device-certs\/tedge-certificate\.pem: cannot read the device id/,
    );
    assert.match(message, /c8y\.device_id/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfig() finds the device certificate through tedge.toml on disk", async () => {
  const dir = await Deno.makeTempDir({ prefix: "config_test_" });
  try {
    await Deno.mkdir(`${dir}/tedge/device-certs`, { recursive: true });
    const pem = await makeCert(`${dir}/tedge/device-certs`, "disk-device");
    if (pem === null) {
      console.log(
        "SKIP: openssl is not installed; device id from certificate not tested",
      );
      return;
    }
    await Deno.rename(
      `${dir}/tedge/device-certs/cert.pem`,
      `${dir}/tedge/device-certs/tedge-certificate.pem`,
    );
    await Deno.writeTextFile(
      `${dir}/tedge/tedge.toml`,
      `[c8y]\nurl = "t1.example"\n`,
    );
    await Deno.writeTextFile(
      `${dir}/config.toml`,
      `[tedge]\nconfig_path = "${dir}/tedge/tedge.toml"\n`,
    );
    // Default location: <tedge config dir>/device-certs/tedge-certificate.pem
    const config = await loadConfig({
      path: `${dir}/config.toml`,
      env: envOf({}),
    });
    assert.equal(config.c8y.deviceId, "disk-device");
    assert.equal(config.configFile, `${dir}/config.toml`);
    assert.equal(config.tedgeConfigFile, `${dir}/tedge/tedge.toml`);
    assert.equal(config.tedge.configDir, `${dir}/tedge`);
    // device.cert_path in tedge.toml moves it.
    await Deno.rename(
      `${dir}/tedge/device-certs/tedge-certificate.pem`,
      `${dir}/elsewhere.pem`,
    );
    await Deno.writeTextFile(
      `${dir}/tedge/tedge.toml`,
      `[c8y]\nurl = "t1.example"\n[device]\ncert_path = "${dir}/elsewhere.pem"\n`,
    );
    const moved = await loadConfig({
      path: `${dir}/config.toml`,
      env: envOf({}),
    });
    assert.equal(moved.c8y.deviceId, "disk-device");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseConfig() says where to set a missing device id and url", () => {
  const message = errorOf(() =>
    parseConfig({ file: null, text: null, tedgeFile: null, tedgeText: null })
  );
  assert.match(
    message,
    /c8y\.device_id is not set: set device_id under \[c8y\] in \/etc\/c8y-tunnel\/config\.toml, or device\.id in \/etc\/tedge\/tedge\.toml/,
  );
  assert.match(message, /tedge-certificate\.pem/);
  assert.match(
    message,
    /c8y\.url is not set: set url under \[c8y\] in \/etc\/c8y-tunnel\/config\.toml/,
  );
});

Deno.test("loadConfig() reads C8Y_TUNNEL_CONFIG, and --config wins over it", async () => {
  const fs = memoryFs({
    "/env.toml": `${MINIMAL}[mqtt]\nport = 1001\n`,
    "/flag.toml": `${MINIMAL}[mqtt]\nport = 1002\n`,
    [OURS]: `${MINIMAL}[mqtt]\nport = 1003\n`,
  });
  const env = envOf({ C8Y_TUNNEL_CONFIG: "/env.toml" });
  const fromEnv = await loadConfig({ env, readTextFile: fs.read });
  assert.equal(fromEnv.configFile, "/env.toml");
  assert.equal(fromEnv.mqtt.port, 1001);
  const fromFlag = await loadConfig({
    path: "/flag.toml",
    env,
    readTextFile: fs.read,
  });
  assert.equal(fromFlag.configFile, "/flag.toml");
  assert.equal(fromFlag.mqtt.port, 1002);
  const fromDefault = await loadConfig({
    env: envOf({ C8Y_TUNNEL_CONFIG: "" }),
    readTextFile: fs.read,
  });
  assert.equal(fromDefault.configFile, DEFAULT_CONFIG_PATH);
  assert.equal(fromDefault.mqtt.port, 1003);
});

Deno.test("loadConfig() accepts a missing default file and applies tedge.toml and defaults", async () => {
  const fs = memoryFs({
    [TEDGE]: `[device]\nid = "d9"\n[c8y]\nurl = "t1.example"\n`,
  });
  const config = await loadConfig({ env: envOf({}), readTextFile: fs.read });
  assert.equal(config.configFile, null);
  assert.equal(config.tedgeConfigFile, TEDGE);
  assert.equal(config.c8y.deviceId, "d9");
  assert.equal(config.c8y.auth, "jwt");
  // jwt and a device id: neither credentials nor certificate were read.
  assert.deepEqual(fs.reads, [DEFAULT_CONFIG_PATH, TEDGE]);
});

Deno.test("loadConfig() rejects a missing file that was asked for", async () => {
  const fs = memoryFs({});
  const byFlag = await asyncErrorOf(() =>
    loadConfig({ path: "/nope.toml", env: envOf({}), readTextFile: fs.read })
  );
  assert.match(
    byFlag,
    /^\/nope\.toml: config file does not exist \(given by --config\)/,
  );
  const byEnv = await asyncErrorOf(() =>
    loadConfig({
      env: envOf({ C8Y_TUNNEL_CONFIG: "/env-nope.toml" }),
      readTextFile: fs.read,
    })
  );
  assert.match(
    byEnv,
    /^\/env-nope\.toml: config file does not exist \(given by environment variable C8Y_TUNNEL_CONFIG\)/,
  );
  const tedgeMissing = await asyncErrorOf(() =>
    loadConfig({
      env: envOf({}),
      readTextFile: memoryFs({
        [OURS]: `${MINIMAL}[tedge]\nconfig_path = "/x/tedge.toml"\n`,
      }).read,
    })
  );
  assert.match(
    tedgeMissing,
    /key tedge\.config_path = "\/x\/tedge\.toml" is invalid: expected an existing tedge\.toml/,
  );
});

Deno.test("loadConfig() reports a file it cannot read", async () => {
  const dir = await Deno.makeTempDir({ prefix: "config_test_" });
  try {
    // A directory where the file should be.
    const message = await asyncErrorOf(() =>
      loadConfig({ path: dir, env: envOf({}) })
    );
    assert.ok(message.startsWith(`${dir}: cannot read file:`), message);
  } finally {
    await Deno.remove(dir);
  }
});

Deno.test("loadConfig() reads basic credentials, and names a missing credentials file", async () => {
  const ours = `${MINIMAL}auth = "basic"\ncredentials_path = "/c.toml"\n`;
  const fs = memoryFs({
    [OURS]: ours,
    "/c.toml": `[c8y]\nusername = "t1/bob"\npassword = "${SECRET}"\n`,
  });
  const config = await loadConfig({ env: envOf({}), readTextFile: fs.read });
  assert.deepEqual(config.c8y.credentials, {
    username: "t1/bob",
    password: SECRET,
  });
  const missing = await asyncErrorOf(() =>
    loadConfig({
      env: envOf({}),
      readTextFile: memoryFs({ [OURS]: ours }).read,
    })
  );
  assert.match(
    missing,
    /^\/c\.toml: credentials file does not exist, but auth is basic \(\/etc\/c8y-tunnel\/config\.toml key c8y\.auth\)/,
  );
  const incomplete = await asyncErrorOf(() =>
    loadConfig({
      env: envOf({}),
      readTextFile:
        memoryFs({ [OURS]: ours, "/c.toml": `[c8y]\nuser = "x"\n` }).read,
    })
  );
  assert.match(incomplete, /\/c\.toml: key c8y\.username is not set/);
  assert.match(incomplete, /\/c\.toml: key c8y\.password is not set/);
});

Deno.test("loadConfig() picks basic for tedge auth_method auto only when the credentials file exists", async () => {
  const tedge =
    `[device]\nid = "d"\n[c8y]\nurl = "t1.example"\nauth_method = "auto"\ncredentials_path = "/tc.toml"\n`;
  const without = await loadConfig({
    env: envOf({}),
    readTextFile: memoryFs({ [TEDGE]: tedge }).read,
  });
  assert.equal(without.c8y.auth, "jwt");
  const fs = memoryFs({
    [TEDGE]: tedge,
    "/tc.toml": `[c8y]\nusername = "t1/u"\npassword = "p"\n`,
  });
  const withCreds = await loadConfig({ env: envOf({}), readTextFile: fs.read });
  assert.equal(withCreds.c8y.auth, "basic");
  assert.deepEqual(withCreds.c8y.credentials, {
    username: "t1/u",
    password: "p",
  });
});

Deno.test("parseConfig() rejects unknown tables and keys, listing the valid ones", () => {
  const key = errorOf(() => parseOurs(`${MINIMAL}[tunnel]\nmax_session = 4\n`));
  assert.match(
    key,
    /^\/etc\/c8y-tunnel\/config\.toml: unknown key tunnel\.max_session \(did you mean max_sessions\?\)/,
  );
  assert.match(
    key,
    /valid keys in \[tunnel\]: allow, max_sessions, connect_timeout, idle_timeout, max_duration$/,
  );
  const table = errorOf(() => parseOurs(`${MINIMAL}[tunel]\nallow = []\n`));
  assert.match(
    table,
    /unknown table \[tunel\] \(did you mean tunnel\?\); valid tables: mqtt, c8y, tunnel, log, proxy, health, tedge/,
  );
  const topLevel = errorOf(() => parseOurs(`debug = true\n${MINIMAL}`));
  assert.match(topLevel, /unknown top-level key debug/);
  const nested = errorOf(() =>
    parseOurs(`${MINIMAL}[c8y.bridge]\ntopic_prefix = "x"\n`)
  );
  assert.match(
    nested,
    /unknown key c8y\.bridge; valid keys in \[c8y\]: url, device_id, auth,/,
  );
  const far = errorOf(() => parseOurs(`${MINIMAL}[foo]\nx = 1\n`));
  assert.match(far, /unknown table \[foo\]; valid tables:/);
});

Deno.test("parseConfig() names file, key, value and expectation for wrong types and ranges", () => {
  const cases: [string, RegExp][] = [
    [
      `[c8y]\nauth = "token"`,
      /key c8y\.auth = "token" is invalid: expected one of jwt, basic, none/,
    ],
    [
      `[mqtt]\nport = 70000`,
      /key mqtt\.port = 70000 is invalid: expected an integer from 1 to 65535/,
    ],
    [
      `[mqtt]\nport = "1883"`,
      /key mqtt\.port = "1883" is invalid: expected an integer/,
    ],
    [`[mqtt]\nport = 0`, /key mqtt\.port = 0 is invalid/],
    [
      `[mqtt]\nmax_payload = 16383`,
      /key mqtt\.max_payload = 16383 is invalid: expected a number of bytes from 16384 to 1048576/,
    ],
    [
      `[mqtt]\nmax_payload = 1048577`,
      /key mqtt\.max_payload = 1048577 is invalid/,
    ],
    [`[mqtt]\nmax_payload = "64k"`, /key mqtt\.max_payload = "64k" is invalid/],
    [
      `[mqtt]\nhost = ""`,
      /key mqtt\.host = "" is invalid: expected a non-empty string/,
    ],
    [
      `[mqtt]\ntopic_prefix = "c8y/#"`,
      /key mqtt\.topic_prefix = "c8y\/#" is invalid: expected a non-empty MQTT topic/,
    ],
    [`[c8y]\ndevice_id = ""`, /key c8y\.device_id = "" is invalid/],
    [
      `[c8y]\nurl = "ftp://x.example"`,
      /key c8y\.url = "ftp:\/\/x\.example" is invalid: expected an http:\/\/ or https:\/\/ URL/,
    ],
    [
      `[c8y]\nurl = "https://x.example/tenant"`,
      /key c8y\.url = "https:\/\/x\.example\/tenant" is invalid/,
    ],
    [
      `[c8y]\njwt_timeout = 0`,
      /key c8y\.jwt_timeout = 0 is invalid: expected a number of seconds > 0/,
    ],
    [
      `[tunnel]\nmax_sessions = 0`,
      /key tunnel\.max_sessions = 0 is invalid: expected an integer >= 1/,
    ],
    [
      `[tunnel]\nmax_sessions = 2.5`,
      /key tunnel\.max_sessions = 2\.5 is invalid/,
    ],
    [
      `[tunnel]\nconnect_timeout = -1`,
      /key tunnel\.connect_timeout = -1 is invalid/,
    ],
    [
      `[tunnel]\nidle_timeout = "1h"`,
      /key tunnel\.idle_timeout = "1h" is invalid: expected a number of seconds from 0 to 2147483 \(0 = never\)/,
    ],
    [
      `[tunnel]\nmax_duration = 3000000`,
      /key tunnel\.max_duration = 3000000 is invalid/,
    ],
    [
      `[tunnel]\nallow = "127.0.0.1:22"`,
      /key tunnel\.allow = "127\.0\.0\.1:22" is invalid: expected an array of strings/,
    ],
    [
      `[tunnel]\nallow = ["127.0.0.1:22", "host-without-port"]`,
      /key tunnel\.allow\[1\] = "host-without-port" is invalid: \S/,
    ],
    [
      `[tunnel]\nallow = ["127.0.0.1:99999"]`,
      /key tunnel\.allow\[0\] = "127\.0\.0\.1:99999" is invalid: .*99999/,
    ],
    [
      `[log]\nlevel = "verbose"`,
      /key log\.level = "verbose" is invalid: expected one of debug, info, warn, error/,
    ],
    [
      `[log]\nformat = "xml"`,
      /key log\.format = "xml" is invalid: expected one of text, json/,
    ],
    [
      `[proxy]\naddress = "socks5://p:1080"`,
      /key proxy\.address = "socks5:\/\/p:1080" is invalid/,
    ],
    [
      `[health]\nservice_name = "a/b"`,
      /key health\.service_name = "a\/b" is invalid/,
    ],
    [`[tedge]\nconfig_path = ""`, /key tedge\.config_path = "" is invalid/],
    [`mqtt = 5`, /key mqtt = 5 is invalid: expected a table \[mqtt\]/],
  ];
  for (const [text, expected] of cases) {
    const message = errorOf(() =>
      parseOurs(`${text}\n${text.startsWith("[c8y]") ? "" : MINIMAL}`)
    );
    assert.ok(message.startsWith(`${OURS}: `), message);
    assert.match(message, expected);
  }
});

Deno.test("parseConfig() reports every problem of a file at once", () => {
  const message = errorOf(() =>
    parseOurs(`[mqtt]\nport = 0\nhots = "x"\n[log]\nlevel = "loud"\n`)
  );
  assert.equal(message.split("\n").length, 3, message);
});

Deno.test("parseConfig() names tedge.toml and its key for a bad fallback value", () => {
  const message = errorOf(() =>
    parseConfig({
      file: OURS,
      text: MINIMAL,
      tedgeFile: TEDGE,
      tedgeText: `[mqtt.client]\nport = "x"\n`,
    })
  );
  assert.match(
    message,
    /^\/etc\/tedge\/tedge\.toml: key mqtt\.client\.port = "x" is invalid: expected an integer from 1 to 65535/,
  );
});

Deno.test("parseConfig() never puts a password in an error message", () => {
  const attempts: (() => unknown)[] = [
    () => parseOurs(`${MINIMAL}[proxy]\npassword = ["${SECRET}"]\n`),
    () =>
      parseOurs(
        `${MINIMAL}[proxy]\naddress = "http://user:${SECRET}@proxy:3128"\n`,
      ),
    () =>
      parseOurs(
        `[c8y]\ndevice_id = "d"\nurl = "https://user:${SECRET}@t1.example"\n`,
      ),
    () => parseOurs(`${MINIMAL}[proxy]\npassword = "${SECRET}\n`), // syntax error on the password line
    () =>
      parseConfig({
        file: OURS,
        text: MINIMAL,
        tedgeFile: TEDGE,
        tedgeText: `[proxy]\npassword = [ "${SECRET}" ]\n`,
      }),
    () =>
      parseOurs(`${MINIMAL}auth = "basic"\n`, {
        credentialsText: `[c8y]\nusername = "t1/u"\npassword = ["${SECRET}"]\n`,
      }),
    () =>
      parseOurs(`${MINIMAL}auth = "basic"\n`, {
        credentialsText: `[c8y]\nusername = "t1/u:${SECRET}"\npassword = "x"\n`,
      }),
    () =>
      parseOurs(`${MINIMAL}auth = "basic"\n`, {
        credentialsText: `[c8y]\nusername = "t1/u"\npassword = "${SECRET}\n`,
      }),
    () =>
      parseOurs(`${MINIMAL}auth = "basic"\n`, {
        credentialsText: `[c8y]\npassword = "${SECRET}"\n`,
      }),
  ];
  for (const attempt of attempts) {
    const message = errorOf(attempt);
    assert.ok(!message.includes(SECRET), `password leaked in: ${message}`);
    assert.match(message, /: (key|TOML)/);
  }
});

Deno.test("parseConfig() names the file and line of a TOML syntax error", () => {
  const ours = errorOf(() => parseOurs(`[mqtt]\nport = 1883\nhost = \n`));
  assert.match(
    ours,
    /^\/etc\/c8y-tunnel\/config\.toml: TOML syntax error at line 3, column \d+: invalid value$/,
  );
  const tedge = errorOf(() =>
    parseConfig({
      file: OURS,
      text: MINIMAL,
      tedgeFile: TEDGE,
      tedgeText: `[c8y\nurl = "x"\n`,
    })
  );
  assert.match(
    tedge,
    /^\/etc\/tedge\/tedge\.toml: TOML syntax error at line 1/,
  );
  const creds = errorOf(() =>
    parseOurs(`${MINIMAL}auth = "basic"\ncredentials_path = "/c.toml"\n`, {
      credentialsText: `[c8y\n`,
    })
  );
  assert.match(creds, /^\/c\.toml: TOML syntax error at line 1/);
});

Deno.test("parseConfig() accepts the examples of docs/config.md", async () => {
  const doc = await Deno.readTextFile(
    new URL("../docs/config.md", import.meta.url),
  );
  const examples = doc.slice(doc.indexOf("## Example")).split("```toml\n")
    .slice(1).map((block) => block.slice(0, block.indexOf("```")));
  assert.equal(examples.length, 2);
  const [full, small] = examples as [string, string];
  const config = parseOurs(full);
  assert.equal(config.c8y.url, "https://example.cumulocity.com");
  assert.deepEqual(allowTexts(config), ["127.0.0.1:22", "127.0.0.1:5900"]);
  const tedge = `[device]\nid = "d"\n[c8y]\nurl = "t1.example"\n`;
  const smallConfig = parseConfig({
    file: OURS,
    text: small,
    tedgeFile: TEDGE,
    tedgeText: tedge,
  });
  assert.equal(smallConfig.tunnel.allow.length, 3);
});

Deno.test("parseConfig() accepts the example of README.md", async () => {
  const readme = await Deno.readTextFile(
    new URL("../README.md", import.meta.url),
  );
  const block = readme.split("```toml\n")[1]!.split("```")[0]!;
  const config = parseOurs(block);
  assert.equal(config.c8y.url, "https://example.cumulocity.com");
  assert.equal(config.c8y.deviceId, "my-device");
  assert.deepEqual(allowTexts(config), ["127.0.0.1:22", "127.0.0.1:5900"]);
  assert.equal(config.health.serviceName, "c8y-tunnel");
  assert.equal(config.mqtt.maxPayloadBytes, 65536);
});

Deno.test("parseConfig() reads mqtt.max_payload in bytes, default 65536", () => {
  const payload = (line: string) =>
    parseOurs(`${MINIMAL}[mqtt]\n${line}\n`).mqtt.maxPayloadBytes;
  assert.equal(payload(""), 65536);
  assert.equal(payload("max_payload = 16384"), 16384);
  assert.equal(payload("max_payload = 1048576"), 1048576);
});
