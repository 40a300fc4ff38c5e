/**
 * The JWT request race (issue 9 point 8): the request on `<prefix>/s/uat`
 * goes out only once the subscription to `<prefix>/s/dat` is acknowledged,
 * so a bridge that answers at once is heard; and it is asked again within
 * `c8y.jwt_timeout` when no answer came. The bridge is a stand-in client on
 * a real mosquitto that answers instantly (or ignores the first requests).
 */
import assert from "node:assert/strict";
import type { Config } from "../lib/config/config.ts";
import { MqttLink } from "../lib/mqtt/link.ts";
import { MqttOnce } from "../lib/mqtt/once.ts";
import { RemoteAccessSim } from "../lib/sim/cloud.ts";
import { logger } from "../lib/util/log.ts";
import { echo, rigToml, tcpServer, testConfig } from "./harness.ts";
import { bridgeStandIn } from "./jwt_bridge.ts";
import { runLikeMapper } from "./mapper_emulator.ts";
import {
  connectCommand,
  installed,
  startTempMosquitto,
} from "./system_helpers.ts";

const HAVE_MOSQUITTO = installed("/usr/sbin/mosquitto");

function jwtConfig(port: number, simUrl: string, jwtTimeout = 3) {
  return rigToml(port, simUrl).replace(
    'auth = "none"',
    `auth = "jwt"\njwt_timeout = ${jwtTimeout}`,
  );
}

/** An MqttLink that only asks for JWTs (no health, no operations). */
function jwtLink(config: Config): MqttLink {
  return MqttLink.connect({
    config,
    log: logger("mqtt"),
    onMessage: () => {},
    health: false,
    operations: false,
  });
}

Deno.test({
  name:
    "MqttLink.requestJwt() right after connecting is answered by a bridge that answers at once",
  ignore: !HAVE_MOSQUITTO,
  async fn() {
    await using broker = await startTempMosquitto("c8y-tunnel-jwt-");
    await using bridge = await bridgeStandIn(broker.port);
    const config = testConfig(jwtConfig(broker.port, "http://127.0.0.1:1"));
    await using link = jwtLink(config);
    // Asked before the link has even connected: the request must wait for
    // the subscription to <prefix>/s/dat.
    const token = await link.requestJwt(AbortSignal.timeout(10_000));
    assert.equal(token, bridge.token);
    assert.equal(bridge.requests(), 1);
  },
});

Deno.test({
  name:
    "MqttLink.requestJwt() asks again within c8y.jwt_timeout when the first request is not answered",
  ignore: !HAVE_MOSQUITTO,
  async fn() {
    await using broker = await startTempMosquitto("c8y-tunnel-jwt-");
    await using bridge = await bridgeStandIn(broker.port, { ignoreFirst: 1 });
    const config = testConfig(jwtConfig(broker.port, "http://127.0.0.1:1", 3));
    await using link = jwtLink(config);
    await link.ready;
    const token = await link.requestJwt(AbortSignal.timeout(10_000));
    assert.equal(token, bridge.token);
    assert.equal(bridge.requests(), 2);
  },
});

Deno.test({
  name:
    "MqttOnce.jwt() asks again within its time when the first request is not answered",
  ignore: !HAVE_MOSQUITTO,
  async fn() {
    await using broker = await startTempMosquitto("c8y-tunnel-jwt-");
    await using bridge = await bridgeStandIn(broker.port, { ignoreFirst: 2 });
    const config = testConfig(jwtConfig(broker.port, "http://127.0.0.1:1"));
    await using once = await MqttOnce.connect(config, {
      purpose: "test",
      timeoutMs: 5000,
    });
    await once.subscribe([once.topics.jwtResponse]);
    assert.equal(await once.jwt(3000), bridge.token);
    assert.equal(bridge.requests(), 3);
  },
});

Deno.test({
  name:
    "connect in plugin mode (no daemon) gets its JWT from a bridge that answers at once and reports 503",
  ignore: !HAVE_MOSQUITTO,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using broker = await startTempMosquitto("c8y-tunnel-jwt-");
    await using bridge = await bridgeStandIn(broker.port);
    const sim = await RemoteAccessSim.start();
    const target = tcpServer(echo);
    const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-jwt-" });
    try {
      const tedgeToml = `${dir}/tedge.toml`;
      await Deno.writeTextFile(tedgeToml, "");
      const configPath = `${dir}/config.toml`;
      await Deno.writeTextFile(
        configPath,
        jwtConfig(broker.port, sim.url, 5) +
          `[tedge]\nconfig_path = "${tedgeToml}"\n`,
      );
      const session = sim.openSession();
      const run = await runLikeMapper(
        connectCommand(configPath),
        `530,test-device,127.0.0.1,${target.port},${session.key}`,
        { timeoutS: 60 },
      );
      const pid = /in process (\d+)/.exec(run.stdout)?.[1];
      assert.equal(run.code, 0, run.stderr);
      await session.connected;
      const handshake = sim.handshakes.find((h) => h.key === session.key);
      assert.equal(handshake?.authorization, `Bearer ${bridge.token}`);
      assert.equal(bridge.requests(), 1);
      session.close();
      await session.closed;
      if (pid) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch { /* ended with its session */ }
      }
    } finally {
      await target.close();
      await sim.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
