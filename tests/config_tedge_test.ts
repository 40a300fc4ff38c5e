/**
 * loadConfig() on real thin-edge config directories (tests/fixtures/tedge/,
 * see its README.md): 2.x mapper.toml layout, 1.x tedge.toml, profiles,
 * credentials, broker TLS and login, and bad or contradictory files.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type Config, ConfigError, loadConfig } from "../lib/config/config.ts";
import { describeOrigins } from "../lib/config/origins.ts";
import { copyTedgeFixture, type TedgeFixture } from "./fixtures/tedge/copy.ts";

/** Loads our config (`ours` plus tedge.config_path into the fixture). */
async function load(fx: TedgeFixture, ours = ""): Promise<Config> {
  const path = join(fx.dir, "c8y-tunnel.toml");
  await Deno.writeTextFile(
    path,
    `${ours}\n[tedge]\nconfig_path = "${fx.tedgeToml}"\n`,
  );
  return await loadConfig({ path, env: () => undefined });
}

async function loadError(fx: TedgeFixture, ours = ""): Promise<string> {
  try {
    await load(fx, ours);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.message;
  }
  assert.fail("expected a ConfigError");
}

Deno.test("loadConfig() reads a fresh thin-edge 2.x device from mappers/c8y/mapper.toml", async () => {
  await using fx = await copyTedgeFixture("fresh-2x");
  const config = await load(fx);
  const mapper = join(fx.dir, "mappers/c8y/mapper.toml");
  assert.equal(config.c8y.url, "https://fresh.tenant.example");
  assert.equal(config.c8y.httpUrl, "https://fresh.tenant.example");
  assert.equal(config.c8y.deviceId, "fresh-2x-device");
  assert.equal(config.c8y.auth, "jwt");
  assert.equal(config.mqtt.topicPrefix, "c8y");
  // thin-edge's trust: its default root_cert_path, the OS store
  assert.equal(config.c8y.rootCertPath, "/etc/ssl/certs");
  assert.equal(config.origins["c8y.root_cert_path"], "thin-edge's default");
  assert.equal(config.mqtt.tls, null);
  assert.equal(config.mqtt.auth, null);
  assert.deepEqual(
    [config.tedge.layout, config.tedge.mapperFile],
    ["mappers", mapper],
  );
  assert.equal(config.origins["c8y.url"], `${mapper} key url`);
  assert.equal(config.origins["c8y.http"], "c8y.url");
  assert.equal(
    config.origins["c8y.device_id"],
    `${join(fx.dir, "device-certs/tedge-certificate.pem")} (certificate CN)`,
  );
});

Deno.test("loadConfig() reads a migrated 1.x device: mapper.toml wins, tedge.toml keeps broker and proxy", async () => {
  await using fx = await copyTedgeFixture("migrated-1x");
  const config = await load(fx);
  const mapper = join(fx.dir, "mappers/c8y/mapper.toml");
  assert.equal(config.c8y.url, "https://migrated.tenant.example");
  assert.equal(config.c8y.rootCertPath, "/etc/ssl/certs");
  assert.equal(config.c8y.deviceId, "migrated-device");
  assert.equal(config.proxy.address, "http://proxy.example:3128");
  assert.equal(
    config.origins["proxy.address"],
    `${fx.tedgeToml} key proxy.address`,
  );
  // auto without thin-edge's credentials file: certificate, i.e. JWT
  assert.equal(config.c8y.auth, "jwt");
  assert.equal(config.c8y.credentialsPath, join(fx.dir, "credentials.toml"));
  assert.match(
    config.origins["c8y.auth"]!,
    /key auth_method \(auto: no credentials file\)$/,
  );
  assert.ok(config.origins["c8y.auth"]!.startsWith(mapper));

  // auto with thin-edge's credentials file (default path): basic
  await Deno.writeTextFile(
    join(fx.dir, "credentials.toml"),
    '[c8y]\nusername = "t7/dev"\npassword = "pw-not-shown"\n',
  );
  const basic = await load(fx);
  assert.equal(basic.c8y.auth, "basic");
  assert.deepEqual(basic.c8y.credentials, {
    username: "t7/dev",
    password: "pw-not-shown",
  });
});

Deno.test("loadConfig() takes each cloud profile from its own mappers/c8y.<profile>/mapper.toml", async () => {
  await using fx = await copyTedgeFixture("two-profiles");
  const main = await load(fx);
  assert.equal(main.c8y.url, "https://main.tenant.example");
  assert.equal(main.c8y.profile, "");
  assert.equal(main.c8y.deviceId, "profiles-device");
  // auth_method = "auto" and <tedge dir>/credentials.toml exists: basic
  assert.equal(main.c8y.auth, "basic");
  assert.equal(main.c8y.credentials?.username, "t100/device-user");
  // mqtt.client.port defaults to mqtt.bind.port, as in thin-edge
  assert.equal(main.mqtt.port, 1884);
  assert.equal(main.origins["mqtt.port"], `${fx.tedgeToml} key mqtt.bind.port`);

  const second = await load(fx, '[c8y]\nprofile = "second"\n');
  const secondFile = join(fx.dir, "mappers/c8y.second/mapper.toml");
  assert.equal(second.c8y.url, "https://second.tenant.example");
  assert.equal(second.c8y.httpUrl, "https://http.second.tenant.example:8443");
  assert.equal(second.c8y.deviceId, "second-device");
  assert.equal(second.c8y.auth, "jwt");
  assert.equal(second.c8y.profile, "second");
  assert.equal(second.mqtt.topicPrefix, "c8y-second");
  assert.equal(second.tedge.mapperFile, secondFile);
  assert.equal(second.origins["c8y.http"], `${secondFile} key http`);
  assert.equal(second.origins["c8y.device_id"], `${secondFile} key device.id`);

  // profile names are matched as thin-edge does: lowercased
  const staging = await load(fx, '[c8y]\nprofile = "Staging"\n');
  assert.equal(staging.c8y.url, "https://staging.tenant.example");
  assert.equal(staging.c8y.auth, "basic");
  assert.equal(staging.c8y.credentialsPath, join(fx.dir, "credentials.toml"));
  assert.equal(staging.c8y.rootCertPath, "/etc/ssl/certs");
  assert.equal(staging.mqtt.topicPrefix, "c8y-staging");

  const missing = await loadError(fx, '[c8y]\nprofile = "secnd"\n');
  assert.match(missing, /key c8y\.profile = "secnd" is invalid/);
  assert.ok(
    missing.includes(
      `${join(fx.dir, "mappers/c8y.secnd/mapper.toml")} does not exist`,
    ),
    missing,
  );
  assert.match(
    missing,
    /profiles that have one: second, staging \(did you mean second\?\)/,
  );
});

Deno.test("loadConfig() keeps reading tedge.toml [c8y] on a 1.x device that was never migrated", async () => {
  await using fx = await copyTedgeFixture("unmigrated-1x");
  const config = await load(fx);
  assert.equal(config.c8y.url, "https://legacy.tenant.example");
  assert.equal(config.c8y.deviceId, "legacy-device");
  assert.equal(config.c8y.rootCertPath, "/etc/ssl/certs");
  assert.equal(config.c8y.auth, "jwt");
  assert.deepEqual(
    [config.tedge.layout, config.tedge.mapperFile],
    ["tedge.toml", null],
  );
  assert.equal(config.origins["c8y.url"], `${fx.tedgeToml} key c8y.url`);

  const second = await load(fx, '[c8y]\nprofile = "second"\n');
  assert.equal(second.c8y.url, "https://legacy-second.tenant.example");
  assert.equal(second.c8y.deviceId, "legacy-second-device");
  assert.equal(second.mqtt.topicPrefix, "c8y-second");
});

Deno.test("loadConfig() reads broker TLS and login from tedge.toml mqtt.client.auth.*", async () => {
  await using fx = await copyTedgeFixture("broker-tls");
  const config = await load(fx);
  assert.equal(config.mqtt.host, "localhost");
  assert.equal(config.mqtt.port, 8883);
  assert.deepEqual(config.mqtt.tls, {
    caFile: join(fx.dir, "mqtt-certs/ca.pem"),
    caDir: null,
    certFile: join(fx.dir, "mqtt-certs/client.pem"),
    keyFile: join(fx.dir, "mqtt-certs/client.key"),
  });
  // the first line of the password file, as thin-edge reads it
  assert.deepEqual(config.mqtt.auth, {
    username: "tedge-client",
    password: "fixture-broker-password",
  });
  assert.equal(
    config.origins["mqtt.password_file"],
    `${fx.tedgeToml} key mqtt.client.auth.password_file`,
  );
  // our own [mqtt] keys win over tedge.toml's
  const own = await load(fx, '[mqtt]\nusername = "other"\n');
  assert.equal(own.mqtt.auth?.username, "other");
  assert.equal(own.mqtt.auth?.password, "fixture-broker-password");
});

Deno.test("loadConfig() names the file and key of bad broker settings, never the password", async () => {
  await using fx = await copyTedgeFixture("bad-broker-auth");
  const tedge = fx.tedgeToml;
  const first = await loadError(fx);
  assert.ok(
    first.includes(
      `${tedge}: key mqtt.client.auth.ca_file = "mqtt-certs/ca.pem" is invalid: expected an absolute path`,
    ),
    first,
  );
  const text = await Deno.readTextFile(tedge);
  await Deno.writeTextFile(
    tedge,
    text.replace('"mqtt-certs/ca.pem"', `"${fx.dir}/mqtt-certs/ca.pem"`),
  );
  const message = await loadError(fx);
  assert.ok(
    message.includes(
      `${tedge}: key mqtt.client.auth.cert_file is set without its pair`,
    ),
    message,
  );
  assert.ok(
    message.includes(
      `${tedge}: key mqtt.client.auth.password_file = "${
        join(fx.dir, "no-such-password-file")
      }" is invalid: expected an existing file`,
    ),
    message,
  );
  // and with the file in place, its content appears in no message
  await Deno.writeTextFile(join(fx.dir, "no-such-password-file"), "pw-42\n");
  const after = await loadError(fx);
  assert.ok(!after.includes("pw-42"), after);
});

Deno.test("loadConfig() names mapper.toml and the line of a TOML syntax error", async () => {
  await using fx = await copyTedgeFixture("bad-mapper-syntax");
  const message = await loadError(fx);
  assert.ok(
    message.startsWith(
      `${join(fx.dir, "mappers/c8y/mapper.toml")}: TOML syntax error at line 2`,
    ),
    message,
  );
});

Deno.test("loadConfig() names mapper.toml and each bad key", async () => {
  await using fx = await copyTedgeFixture("bad-mapper-values");
  const message = await loadError(fx);
  const mapper = join(fx.dir, "mappers/c8y/mapper.toml");
  for (
    const key of [
      'url = "ftp://bad.tenant.example" is invalid: expected an http:// or https:// URL',
      'bridge.topic_prefix = "c8y/#" is invalid: expected a non-empty MQTT topic',
      'auth_method = "password-please" is invalid: expected one of certificate, basic, auto',
    ]
  ) {
    assert.ok(message.includes(`${mapper}: key ${key}`), message);
  }
});

Deno.test("loadConfig() ignores tedge.toml [c8y] once any c8y mapper.toml exists", async () => {
  await using fx = await copyTedgeFixture("contradictory");
  // default connection: no mappers/c8y/mapper.toml, so thin-edge's defaults
  // (no url), not the left-over [c8y] of tedge.toml
  const noDefault = await loadError(fx);
  assert.ok(
    noDefault.includes(`or url in ${join(fx.dir, "mappers/c8y/mapper.toml")}`),
    noDefault,
  );
  assert.ok(!noDefault.includes("left-over"), noDefault);
  // a profile that only tedge.toml defines
  const other = await loadError(fx, '[c8y]\nprofile = "other"\n');
  assert.ok(
    other.includes(
      `${join(fx.dir, "mappers/c8y.other/mapper.toml")} does not exist`,
    ),
    other,
  );
  assert.match(other, /so tedge\.toml's \[c8y\] is not used/);
  // the profile that has its file
  const second = await load(fx, '[c8y]\nprofile = "second"\n');
  assert.equal(second.c8y.url, "https://second.tenant.example");
  assert.equal(second.c8y.deviceId, "contradictory-device");
  // and check says that tedge.toml's [c8y] is ignored
  assert.equal(second.tedge.tedgeC8yIgnored, true);
  assert.ok(
    describeOrigins(second).includes(
      `(thin-edge 2.x layout, ${fx.tedgeToml} [c8y] ignored as by thin-edge)`,
    ),
  );
  assert.equal(
    second.origins["c8y.device_id"],
    `${fx.tedgeToml} key device.id`,
  );
});

Deno.test("describeOrigins() names the layout and the file and key of each value, never a secret", async () => {
  await using fx = await copyTedgeFixture("broker-tls");
  const text = describeOrigins(await load(fx));
  const mapper = join(fx.dir, "mappers/c8y/mapper.toml");
  assert.ok(
    text.startsWith(
      `Cumulocity settings from ${mapper} (thin-edge 2.x layout): c8y.url from ${mapper} key url, `,
    ),
    text,
  );
  assert.ok(
    text.includes(`mqtt.port from ${fx.tedgeToml} key mqtt.client.port`),
    text,
  );
  assert.ok(text.includes("mqtt.password_file from"), text);
  assert.ok(
    text.includes("c8y.root_cert_path from thin-edge's default"),
    text,
  );
  assert.ok(!text.includes("mqtt.ca_dir"), text); // not set: not shown
  assert.ok(!text.includes("fixture-broker-password"), text);
  await using legacy = await copyTedgeFixture("unmigrated-1x");
  assert.match(
    describeOrigins(await load(legacy)),
    /^Cumulocity settings from \S+tedge\.toml \(thin-edge 1\.x layout/,
  );
});
