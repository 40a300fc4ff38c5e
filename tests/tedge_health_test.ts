/**
 * Health as thin-edge services do it (tedge_health_ext, tedge_api
 * health.rs), on a real mosquitto with the daemon as its own process: the
 * registration thin-edge's entity store expects (`@parent`, `type` from
 * tedge.toml `service.type`), answers to the service's and the device-wide
 * health check, tedge.toml's `mqtt.topic_root` and `mqtt.device_topic_id`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { serviceRegistration } from "../lib/mqtt/link.ts";
import { topicsFor } from "../lib/mqtt/topics.ts";
import { Observer, testConfig } from "./harness.ts";
import {
  installed,
  spawnDaemon,
  type Started,
  startTempMosquitto,
} from "./system_helpers.ts";

const HAVE_MOSQUITTO = installed("/usr/sbin/mosquitto");
const BASE = `[c8y]
url = "http://127.0.0.1:1"
device_id = "health-device"
auth = "none"
`;

Deno.test("serviceRegistration() is byte for byte what thin-edge's own services publish", () => {
  // tedge_health_ext/src/tests.rs: the registration of service "test".
  const config = testConfig(`${BASE}[health]\nservice_name = "test"\n`);
  assert.equal(
    serviceRegistration(config),
    '{"@parent":"device/main//","@type":"service","name":"test","type":"service"}',
  );
});

Deno.test("topicsFor() puts the service under mqtt.device_topic_id and mqtt.topic_root of tedge.toml", () => {
  const config = testConfig(
    `${BASE}[health]\ntopic_root = "acme"\ndevice_topic_id = "device/gw1//"\n`,
  );
  const topics = topicsFor(config);
  assert.equal(topics.service, "acme/device/gw1/service/c8y-tunnel");
  assert.equal(
    topics.health,
    "acme/device/gw1/service/c8y-tunnel/status/health",
  );
  assert.deepEqual(topics.healthChecks, [
    "acme/device/gw1/service/c8y-tunnel/cmd/health/check",
    "acme/device/gw1///cmd/health/check",
  ]);
  assert.throws(
    () => testConfig(`${BASE}[health]\ndevice_topic_id = "custom/x/y/z"\n`),
    /health\.device_topic_id.*device\/<id>\/\//,
  );
});

/** mosquitto + `c8y-tunnel run` with a tedge.toml, torn down together. */
async function startDaemon(
  tedgeToml: string,
): Promise<
  { port: number; agent: Started; observer: Observer } & AsyncDisposable
> {
  const mosquitto = await startTempMosquitto("c8y-tunnel-health-");
  const { dir, port } = mosquitto;
  const observer = await Observer.connect(port, ["#"]);
  const tedge = join(dir, "tedge.toml");
  await Deno.writeTextFile(tedge, tedgeToml);
  const config = join(dir, "config.toml");
  await Deno.writeTextFile(
    config,
    `[mqtt]\nhost = "127.0.0.1"\nport = ${port}\n${BASE}[tedge]\nconfig_path = "${tedge}"\n`,
  );
  const agent = spawnDaemon(config);
  return {
    port,
    agent,
    observer,
    async [Symbol.asyncDispose]() {
      await agent.stop("SIGKILL");
      await observer.close();
      await mosquitto[Symbol.asyncDispose]();
    },
  };
}

Deno.test({
  name:
    "run answers the service's and the device-wide health check by publishing health up again",
  ignore: !HAVE_MOSQUITTO,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = await startDaemon("");
    const health = "te/device/main/service/c8y-tunnel/status/health";
    const ups = () =>
      rig.observer.on(health).filter((p) => JSON.parse(p).status === "up");
    await rig.observer.waitFor((m) => m.topic === health);
    const before = ups().length;
    await rig.observer.publish(
      "te/device/main/service/c8y-tunnel/cmd/health/check",
      "{}",
    );
    await rig.observer.waitFor(() => ups().length >= before + 1);
    await rig.observer.publish("te/device/main///cmd/health/check", "");
    await rig.observer.waitFor(() => ups().length >= before + 2);
    const last = JSON.parse(ups().at(-1)!);
    assert.equal(last.pid, rig.agent.process.pid);
    assert.equal(typeof last.time, "number");
  },
});

Deno.test({
  name:
    "run takes topic root, device topic id and service type from tedge.toml (mqtt.topic_root, mqtt.device_topic_id, service.type)",
  ignore: !HAVE_MOSQUITTO,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = await startDaemon(
      '[mqtt]\ntopic_root = "tedge"\ndevice_topic_id = "device/gw1//"\n[service]\ntype = "systemd"\n',
    );
    const service = "tedge/device/gw1/service/c8y-tunnel";
    const registration = await rig.observer.waitFor((m) => m.topic === service);
    assert.deepEqual(JSON.parse(registration.payload), {
      "@parent": "device/gw1//",
      "@type": "service",
      name: "c8y-tunnel",
      type: "systemd",
    });
    const up = await rig.observer.waitFor((m) =>
      m.topic === `${service}/status/health`
    );
    assert.equal(JSON.parse(up.payload).status, "up");
    await rig.observer.publish("tedge/device/gw1///cmd/health/check", "");
    await rig.observer.waitFor((m) =>
      m.topic === `${service}/status/health` &&
      rig.observer.on(`${service}/status/health`).length >= 2
    );
    assert.ok(!rig.observer.seen.some((m) => m.topic.startsWith("te/")));
  },
});
