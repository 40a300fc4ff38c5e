/**
 * A local broker with TLS and a password (issue 9 point 6): the settings of
 * tedge.toml `mqtt.client.port` and `mqtt.client.auth.*` (ca_file, ca_dir,
 * cert_file, key_file, username, password_file) are honoured by the daemon's
 * link and by the one-shot client of `connect` and `check`, against a real
 * mosquitto that speaks only TLS and wants the password; the password never
 * appears in a log line.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { RemoteAccessSim } from "../lib/sim/cloud.ts";
import { echo, Observer, tcpServer } from "./harness.ts";
import { runLikeMapper } from "./mapper_emulator.ts";
import {
  HAVE_TLS_TOOLS,
  startTlsMosquitto,
  type TlsMosquitto,
} from "./mosquitto_tls.ts";
import {
  connectCommand,
  runCli,
  spawnDaemon,
  type Started,
} from "./system_helpers.ts";

/** Our config (no [mqtt] table: the broker comes from tedge.toml) and a tedge.toml. */
async function writeConfig(
  dir: string,
  simUrl: string,
  tedgeToml: string,
  extra = "",
): Promise<string> {
  const tedge = join(dir, "tedge.toml");
  await Deno.writeTextFile(tedge, tedgeToml);
  const path = join(dir, "config.toml");
  await Deno.writeTextFile(
    path,
    `[c8y]\nurl = "${simUrl}"\ndevice_id = "tls-device"\nauth = "none"\n` +
      `[tunnel]\nallow = ["127.0.0.1:*"]\n[log]\nlevel = "debug"\n` +
      `[tedge]\nconfig_path = "${tedge}"\n${extra}`,
  );
  return path;
}

function tedgeToml(
  broker: TlsMosquitto,
  auth: Record<string, string>,
): string {
  return `[mqtt.client]\nhost = "127.0.0.1"\nport = ${broker.port}\n` +
    `[mqtt.client.auth]\n` +
    Object.entries(auth).map(([k, v]) => `${k} = "${v}"`).join("\n") + "\n";
}

/** The simulator, an echo target, a temp dir and an observer of the TLS broker; dispose stops the daemon too. */
async function deviceRig(broker: TlsMosquitto, topics: string[]) {
  const sim = await RemoteAccessSim.start();
  const target = tcpServer(echo);
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-tls-" });
  const observer = await Observer.connectWith(broker.clientOptions(), topics);
  let agent: Started | undefined;
  return {
    sim,
    target,
    dir,
    observer,
    /** Starts `run` with `auth` as tedge.toml's `[mqtt.client.auth]` and waits for its health `up`. */
    async startDaemon(
      auth: Record<string, string>,
    ): Promise<{ config: string; agent: Started }> {
      const config = await writeConfig(dir, sim.url, tedgeToml(broker, auth));
      agent = spawnDaemon(config);
      await observer.waitFor((m) =>
        m.topic === "te/device/main/service/c8y-tunnel/status/health" &&
        JSON.parse(m.payload).status === "up"
      );
      return { config, agent };
    },
    async [Symbol.asyncDispose]() {
      await agent?.stop("SIGKILL");
      await observer.close();
      await target.close();
      await sim.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test({
  name:
    "run serves a 530 through a TLS broker with a password file (tedge.toml mqtt.client.auth.ca_file, username, password_file), never logging the password",
  ignore: !HAVE_TLS_TOOLS,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using broker = await startTlsMosquitto();
    await using rig = await deviceRig(broker, ["c8y/s/us", "te/#"]);
    const { agent } = await rig.startDaemon({
      ca_file: broker.pki.caPath,
      username: broker.username,
      password_file: broker.passwordFile,
    });
    const session = rig.sim.openSession();
    await rig.observer.publish(
      "c8y/s/ds",
      `530,tls-device,127.0.0.1,${rig.target.port},${session.key}`,
    );
    await rig.observer.waitFor((m) =>
      m.topic === "c8y/s/us" && m.payload === "503,c8y_RemoteAccessConnect"
    );
    await session.connected;
    session.close();
    await session.closed;
    const status = await agent.stop("SIGTERM");
    assert.equal(status.code, 0, agent.output());
    assert.match(agent.output(), /mqtts:\/\/127\.0\.0\.1:\d+/);
    assert.ok(
      !agent.output().includes(broker.password),
      "the broker password appeared in the log",
    );
  },
});

Deno.test({
  name:
    "connect hands over to a daemon, both on a TLS broker that wants a client certificate (ca_dir, cert_file, key_file)",
  ignore: !HAVE_TLS_TOOLS,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using broker = await startTlsMosquitto({ requireCertificate: true });
    await using rig = await deviceRig(broker, ["te/#"]);
    const caDir = join(rig.dir, "cas");
    await Deno.mkdir(caDir);
    await Deno.copyFile(broker.pki.caPath, join(caDir, "broker-ca.pem"));
    await Deno.writeTextFile(join(caDir, "README"), "not a certificate\n");
    const { config, agent } = await rig.startDaemon({
      ca_dir: caDir,
      cert_file: broker.pki.client.certPath,
      key_file: broker.pki.client.keyPath,
      username: broker.username,
      password_file: broker.passwordFile,
    });
    const session = rig.sim.openSession();
    const run = await runLikeMapper(
      connectCommand(config),
      `530,tls-device,127.0.0.1,${rig.target.port},${session.key}`,
      { timeoutS: 60 },
    );
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /handed to the c8y-tunnel daemon/);
    await session.connected;
    session.close();
    await session.closed;
    assert.ok(!run.stderr.includes(broker.password));
    assert.ok(!agent.output().includes(broker.password));
  },
});

Deno.test({
  name:
    "check reports a wrong broker password as a FAIL line without the password, and a missing CA file naming its key",
  ignore: !HAVE_TLS_TOOLS,
  async fn() {
    await using broker = await startTlsMosquitto();
    const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-tls-" });
    try {
      const wrong = join(dir, "wrong-password");
      const secret = `not-${broker.password}`;
      await Deno.writeTextFile(wrong, `${secret}\n`);
      const config = await writeConfig(
        dir,
        "http://127.0.0.1:1",
        tedgeToml(broker, {
          ca_file: broker.pki.caPath,
          username: broker.username,
          password_file: wrong,
        }),
      );
      const check = async () => {
        const out = await runCli(["check", "--config", config]);
        return out.stdout + out.stderr;
      };
      const text = await check();
      assert.match(
        text,
        /FAIL\s+broker: cannot connect to mqtts:\/\/127\.0\.0\.1:\d+: .*Not authorized.*check mqtt\.username and mqtt\.password_file/,
      );
      assert.ok(!text.includes(secret), text);

      await writeConfig(
        dir,
        "http://127.0.0.1:1",
        tedgeToml(broker, { ca_file: join(dir, "missing-ca.pem") }),
      );
      const missing = await check();
      assert.match(missing, /mqtt\.ca_file.*missing-ca\.pem.*no such file/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
