/**
 * MqttLink (lib/mqtt/link.ts) against mosquitto with its default
 * configuration (Nagle on, as thin-edge ships it): which connection carries
 * what, read from the broker's own log.
 */
import assert from "node:assert/strict";
import type { Config } from "../lib/config/config.ts";
import { MqttLink, type MqttLinkOptions } from "../lib/mqtt/link.ts";
import { logger } from "../lib/util/log.ts";
import { Observer, rigToml, testConfig } from "./harness.ts";
import { freePort, MOSQUITTO_RUNNING, spawn } from "./system_helpers.ts";

/**
 * Runs `body` against a fresh mosquitto as shipped (no `set_tcp_nodelay`)
 * that logs every packet; returns its log once it has stopped.
 */
async function withDefaultMosquitto(
  body: (port: number, config: Config) => Promise<void>,
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-link-" });
  const port = freePort();
  const conf = `${dir}/mosquitto.conf`;
  await Deno.writeTextFile(
    conf,
    `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type all\n`,
  );
  const broker = spawn("/usr/sbin/mosquitto", ["-c", conf]);
  try {
    await broker.waitForOutput(MOSQUITTO_RUNNING);
    await body(port, testConfig(rigToml(port, "http://127.0.0.1:1")));
  } finally {
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
  return broker.output();
}

/** An MqttLink with a quiet logger; `onMessage` defaults to ignoring. */
function link(
  config: Config,
  options: Partial<MqttLinkOptions> & Pick<MqttLinkOptions, "operations">,
): MqttLink {
  return MqttLink.connect({
    config,
    log: logger("test"),
    onMessage: () => {},
    health: options.operations,
    ...options,
  });
}

Deno.test("MqttLink.publish() sends statuses (QoS 1) on a connection of its own in daemon mode, requests come on the other", async () => {
  const requests: string[] = [];
  let id = "";
  const log = await withDefaultMosquitto(async (port, config) => {
    id = config.mqtt.clientId;
    const observer = await Observer.connect(port, ["c8y/s/us"]);
    const request = Promise.withResolvers<void>();
    const daemon = link(config, {
      operations: true,
      onMessage: (_topic, payload) => {
        requests.push(payload);
        request.resolve();
      },
    });
    try {
      await daemon.ready;
      await observer.publish("c8y/s/ds", "530,test-device,127.0.0.1,22,key-1");
      await request.promise;
      await daemon.publish("c8y/s/us", "503,c8y_RemoteAccessConnect");
      await observer.waitFor((m) => m.payload.startsWith("503,"));
    } finally {
      await daemon.close();
      await observer.close();
    }
  });
  assert.deepEqual(requests, ["530,test-device,127.0.0.1,22,key-1"]);
  const line = (text: string) => assert.match(log, new RegExp(text));
  line(`Sending PUBLISH to ${id} \\(d0, q1.*'c8y/s/ds'`);
  line(`Received PUBACK from ${id} `);
  line(`Received PUBLISH from ${id}-out \\(d0, q1.*'c8y/s/us'`);
  line(`Sending PUBACK to ${id}-out `);
  assert.doesNotMatch(log, new RegExp(`Received PUBLISH from ${id} .*s/us`));
  // The last will (health down) stays on the request connection.
  line(`as ${id} \\(.*\\)\\.\\n.*Will message specified`);
  line(`as ${id}-out \\(.*\\)\\.\\n.*No will message`);
});

Deno.test("MqttLink in connect mode (no operations) uses one connection", async () => {
  let id = "";
  const log = await withDefaultMosquitto(async (_port, config) => {
    id = `${config.mqtt.clientId}-connect`;
    const client = link(config, { operations: false, clientId: id });
    try {
      await client.ready;
      await client.publish("c8y/s/uat", "");
    } finally {
      await client.close();
    }
  });
  assert.match(
    log,
    new RegExp(`Received PUBLISH from ${id} \\(d0, q1.*'c8y/s/uat'`),
  );
  assert.doesNotMatch(log, new RegExp(`${id}-out`));
});
