/**
 * MqttLink (lib/mqtt/link.ts) against mosquitto with its default
 * configuration (Nagle on, as thin-edge ships it): which connection carries
 * what, read from the broker's own log.
 */
import assert from "node:assert/strict";
import { MqttLink } from "../lib/mqtt/link.ts";
import { logger } from "../lib/util/log.ts";
import { Observer, rigToml, testConfig } from "./harness.ts";
import { freePort, installed, spawn, waitForPort } from "./system_helpers.ts";

const MOSQUITTO = "/usr/sbin/mosquitto";

/** mosquitto as shipped (no `set_tcp_nodelay`), logging every packet to stdout. */
async function defaultMosquitto(dir: string, port: number) {
  const conf = `${dir}/mosquitto.conf`;
  await Deno.writeTextFile(
    conf,
    `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stdout\nlog_type all\n`,
  );
  const broker = spawn(MOSQUITTO, ["-c", conf]);
  await waitForPort(port);
  return broker;
}

Deno.test("MqttLink.publish() sends statuses (QoS 1) on a connection of its own in daemon mode, requests come on the other", async (t) => {
  if (!installed(MOSQUITTO)) {
    await t.step({ name: "mosquitto is not installed", ignore: true, fn() {} });
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-link-" });
  const port = freePort();
  const broker = await defaultMosquitto(dir, port);
  const observer = await Observer.connect(port, ["c8y/s/us"]);
  const config = testConfig(rigToml(port, "http://127.0.0.1:1"));
  const id = config.mqtt.clientId;
  const requests: string[] = [];
  const request = Promise.withResolvers<void>();
  const link = MqttLink.connect({
    config,
    log: logger("test"),
    onMessage: (_topic, payload) => {
      requests.push(payload);
      request.resolve();
    },
    health: true,
    operations: true,
  });
  try {
    await link.ready;
    await observer.publish("c8y/s/ds", "530,test-device,127.0.0.1,22,key-1");
    await request.promise;
    await link.publish("c8y/s/us", "503,c8y_RemoteAccessConnect");
    await observer.waitFor((m) => m.payload.startsWith("503,"));
  } finally {
    await link.close();
    await observer.close();
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
  assert.deepEqual(requests, ["530,test-device,127.0.0.1,22,key-1"]);
  const log = broker.output();
  assert.match(
    log,
    new RegExp(`Sending PUBLISH to ${id} \\(d0, q1.*'c8y/s/ds'`),
  );
  assert.match(log, new RegExp(`Received PUBACK from ${id} `));
  assert.match(
    log,
    new RegExp(`Received PUBLISH from ${id}-out \\(d0, q1.*'c8y/s/us'`),
  );
  assert.match(log, new RegExp(`Sending PUBACK to ${id}-out `));
  assert.doesNotMatch(
    log,
    new RegExp(`Received PUBLISH from ${id} .*c8y/s/us`),
  );
  // The last will (health down) stays on the request connection.
  assert.match(
    log,
    new RegExp(`as ${id} \\(.*\\)\\.\\n.*Will message specified`),
  );
  assert.match(log, new RegExp(`as ${id}-out \\(.*\\)\\.\\n.*No will message`));
});

Deno.test("MqttLink in connect mode (no operations) uses one connection", async (t) => {
  if (!installed(MOSQUITTO)) {
    await t.step({ name: "mosquitto is not installed", ignore: true, fn() {} });
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-link-" });
  const port = freePort();
  const broker = await defaultMosquitto(dir, port);
  const config = testConfig(rigToml(port, "http://127.0.0.1:1"));
  const id = `${config.mqtt.clientId}-connect`;
  const link = MqttLink.connect({
    config,
    log: logger("test"),
    onMessage: () => {},
    health: false,
    operations: false,
    clientId: id,
  });
  try {
    await link.ready;
    await link.publish("c8y/s/uat", "");
  } finally {
    await link.close();
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
  const log = broker.output();
  assert.match(
    log,
    new RegExp(`Received PUBLISH from ${id} \\(d0, q1.*'c8y/s/uat'`),
  );
  assert.doesNotMatch(log, new RegExp(`${id}-out`));
});
