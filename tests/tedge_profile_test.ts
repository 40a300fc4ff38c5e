/**
 * Cloud profiles in plugin mode (issue 9 point 4), end to end: a thin-edge
 * 2.x device with the default connection and profile `second`
 * (`mappers/c8y.second/mapper.toml`), a real mosquitto, a bridge stand-in
 * per topic prefix, and the simulator over wss:// with a CA the test makes.
 * `connect` run like a profile's mapper runs it (TEDGE_CLOUD_PROFILE) uses
 * that profile's tenant, prefix and CA, and hands over only to a daemon of
 * the same profile.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { RemoteAccessSim } from "../lib/sim/cloud.ts";
import { echo, Observer, tcpServer } from "./harness.ts";
import { killSession, runLikeMapper } from "./mapper_emulator.ts";
import { HAVE_TLS_TOOLS } from "./mosquitto_tls.ts";
import { makeTestPki } from "./test_pki.ts";
import { bridgeStandIn } from "./jwt_bridge.ts";
import {
  connectCommand,
  spawnDaemon,
  startTempMosquitto,
} from "./system_helpers.ts";

Deno.test({
  name:
    "connect run by a profile's mapper (TEDGE_CLOUD_PROFILE) uses that profile's tenant, prefix and CA, and hands over only to that profile's daemon",
  ignore: !HAVE_TLS_TOOLS,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using pki = await makeTestPki();
    await using mosquitto = await startTempMosquitto("c8y-tunnel-profile-");
    const { dir, port } = mosquitto;
    const sim = await RemoteAccessSim.start({
      cert: pki.server.cert,
      key: pki.server.key,
    });
    const target = tcpServer(echo);
    const mainBridge = await bridgeStandIn(port, {
      prefix: "c8y",
      token: "token-of-c8y",
    });
    const secondBridge = await bridgeStandIn(port, {
      prefix: "c8y-second",
      token: "token-of-c8y-second",
    });
    const observer = await Observer.connect(port, ["te/#"]);
    const stops: (() => Promise<unknown>)[] = [];
    try {
      // thin-edge 2.x layout: the default connection and profile "second".
      const tedge = join(dir, "tedge");
      await Deno.mkdir(join(tedge, "mappers", "c8y"), { recursive: true });
      await Deno.mkdir(join(tedge, "mappers", "c8y.second"));
      await Deno.writeTextFile(
        join(tedge, "tedge.toml"),
        `[config]\nversion = "2"\n[mqtt.client]\nhost = "127.0.0.1"\nport = ${port}\n`,
      );
      await Deno.writeTextFile(
        join(tedge, "mappers", "c8y", "mapper.toml"),
        'url = "127.0.0.1:9"\nauth_method = "certificate"\n[device]\nid = "main-device"\n',
      );
      const simHost = new URL(sim.url).host;
      await Deno.writeTextFile(
        join(tedge, "mappers", "c8y.second", "mapper.toml"),
        `url = "${simHost}"\nauth_method = "certificate"\nroot_cert_path = "${pki.caPath}"\n` +
          `[device]\nid = "second-device"\n[bridge]\ntopic_prefix = "c8y-second"\n`,
      );
      // One config for every connection: nothing pins the tenant.
      const config = join(dir, "config.toml");
      await Deno.writeTextFile(
        config,
        `[tunnel]\nallow = ["127.0.0.1:${target.port}"]\n` +
          `[tedge]\nconfig_path = "${join(tedge, "tedge.toml")}"\n`,
      );
      const command = connectCommand(config);
      const connect = async () => {
        const session = sim.openSession();
        const run = await runLikeMapper(
          command,
          `530,second-device,127.0.0.1,${target.port},${session.key}`,
          { profile: "second", timeoutS: 60 },
        );
        killSession(run.stdout);
        assert.equal(run.code, 0, run.stderr);
        await session.connected;
        const handshake = sim.handshakes.find((h) => h.key === session.key);
        session.close();
        await session.closed;
        return { run, handshake };
      };

      // No daemon: connect serves it itself, with profile second's JWT (its
      // bridge prefix), tenant and CA (wss:// with the test CA).
      const alone = await connect();
      assert.match(alone.run.stdout, /in process \d+/);
      assert.equal(
        alone.handshake?.authorization,
        `Bearer ${secondBridge.token}`,
      );
      assert.equal(mainBridge.requests(), 0);

      // The default connection's daemon is not this profile's: no handoff.
      const mainDaemon = spawnDaemon(config, {});
      stops.push(() => mainDaemon.stop());
      await observer.waitFor((m) =>
        m.topic === "te/device/main/service/c8y-tunnel/status/health" &&
        m.payload.includes('"up"')
      );
      const notHanded = await connect();
      assert.match(notHanded.run.stdout, /in process \d+/);

      // Profile second's daemon (c8y-tunnel@second) takes it.
      const secondDaemon = spawnDaemon(config, {
        TEDGE_CLOUD_PROFILE: "second",
      });
      stops.push(() => secondDaemon.stop());
      await observer.waitFor((m) =>
        m.topic ===
          "te/device/main/service/c8y-tunnel@second/status/health" &&
        m.payload.includes('"up"')
      );
      const handed = await connect();
      assert.match(handed.run.stdout, /handed to the c8y-tunnel daemon/);
      assert.equal(
        handed.handshake?.authorization,
        `Bearer ${secondBridge.token}`,
      );
      assert.equal(mainBridge.requests(), 0);
    } finally {
      for (const stop of stops.reverse()) await stop();
      await observer.close();
      await mainBridge.close();
      await secondBridge.close();
      await target.close();
      await sim.close();
    }
  },
});
