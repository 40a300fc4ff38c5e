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
import mqtt from "mqtt";
import { RemoteAccessSim } from "../lib/sim/cloud.ts";
import { quoteWords } from "../lib/util/shell_words.ts";
import { echo, tcpServer } from "./harness.ts";
import { runLikeMapper } from "./mapper_emulator.ts";
import {
  HAVE_TLS_TOOLS,
  startTlsMosquitto,
  type TlsMosquitto,
} from "./mosquitto_tls.ts";
import { spawn } from "./system_helpers.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const DENO = Deno.execPath();

/** A client of the TLS broker that records messages and waits for one. */
async function watch(broker: TlsMosquitto, topics: string[]) {
  const client = await mqtt.connectAsync({
    ...broker.clientOptions(),
    clientId: `watch-${crypto.randomUUID().slice(0, 8)}`,
    reconnectPeriod: 0,
  });
  const seen: { topic: string; payload: string }[] = [];
  const waiters: (() => void)[] = [];
  client.on("message", (topic, payload) => {
    seen.push({ topic, payload: new TextDecoder().decode(payload) });
    for (const wake of waiters.splice(0)) wake();
  });
  await client.subscribeAsync(topics, { qos: 1 });
  return {
    seen,
    async waitFor(match: (m: { topic: string; payload: string }) => boolean) {
      for (;;) {
        const found = seen.find(match);
        if (found) return found;
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    },
    publish: (topic: string, payload: string) =>
      client.publishAsync(topic, payload, { qos: 1 }),
    close: () => client.endAsync(true),
  };
}

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

Deno.test({
  name:
    "run serves a 530 through a TLS broker with a password file (tedge.toml mqtt.client.auth.ca_file, username, password_file), never logging the password",
  ignore: !HAVE_TLS_TOOLS,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using broker = await startTlsMosquitto();
    const sim = await RemoteAccessSim.start();
    const target = tcpServer(echo);
    const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-tls-" });
    const observer = await watch(broker, ["c8y/s/us", "te/#"]);
    const config = await writeConfig(
      dir,
      sim.url,
      tedgeToml(broker, {
        ca_file: broker.pki.caPath,
        username: broker.username,
        password_file: broker.passwordFile,
      }),
    );
    const agent = spawn(DENO, [
      "run",
      "--allow-all",
      MAIN,
      "run",
      "--config",
      config,
    ]);
    try {
      const health = "te/device/main/service/c8y-tunnel/status/health";
      await observer.waitFor((m) =>
        m.topic === health && JSON.parse(m.payload).status === "up"
      );
      const session = sim.openSession();
      await observer.publish(
        "c8y/s/ds",
        `530,tls-device,127.0.0.1,${target.port},${session.key}`,
      );
      await observer.waitFor((m) =>
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
    } finally {
      await agent.stop("SIGKILL");
      await observer.close();
      await target.close();
      await sim.close();
      await Deno.remove(dir, { recursive: true });
    }
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
    const sim = await RemoteAccessSim.start();
    const target = tcpServer(echo);
    const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-tls-" });
    const caDir = join(dir, "cas");
    await Deno.mkdir(caDir);
    await Deno.copyFile(broker.pki.caPath, join(caDir, "broker-ca.pem"));
    await Deno.writeTextFile(join(caDir, "README"), "not a certificate\n");
    const observer = await watch(broker, ["te/#"]);
    const config = await writeConfig(
      dir,
      sim.url,
      tedgeToml(broker, {
        ca_dir: caDir,
        cert_file: broker.pki.client.certPath,
        key_file: broker.pki.client.keyPath,
        username: broker.username,
        password_file: broker.passwordFile,
      }),
    );
    const agent = spawn(DENO, [
      "run",
      "--allow-all",
      MAIN,
      "run",
      "--config",
      config,
    ]);
    try {
      await observer.waitFor((m) =>
        m.topic === "te/device/main/service/c8y-tunnel/status/health" &&
        JSON.parse(m.payload).status === "up"
      );
      const session = sim.openSession();
      const run = await runLikeMapper(
        quoteWords([
          DENO,
          "run",
          "--allow-all",
          MAIN,
          "connect",
          "--config",
          config,
        ]),
        `530,tls-device,127.0.0.1,${target.port},${session.key}`,
        { timeoutS: 60 },
      );
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /handed to the c8y-tunnel daemon/);
      await session.connected;
      session.close();
      await session.closed;
      assert.ok(!run.stderr.includes(broker.password));
      assert.ok(!agent.output().includes(broker.password));
    } finally {
      await agent.stop("SIGKILL");
      await observer.close();
      await target.close();
      await sim.close();
      await Deno.remove(dir, { recursive: true });
    }
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
        const out = await new Deno.Command(DENO, {
          args: ["run", "--allow-all", MAIN, "check", "--config", config],
          stdout: "piped",
          stderr: "piped",
        }).output();
        return new TextDecoder().decode(out.stdout) +
          new TextDecoder().decode(out.stderr);
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
