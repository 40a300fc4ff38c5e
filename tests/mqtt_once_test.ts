/**
 * The broker's topic names (lib/mqtt/topics.ts) and the one-shot client
 * (lib/mqtt/once.ts) that `connect` and `check` use, against the embedded
 * broker.
 */
import assert from "node:assert/strict";
import { MqttOnce, parseHealth } from "../lib/mqtt/once.ts";
import { topicsFor } from "../lib/mqtt/topics.ts";
import { parseJwtAnswer } from "../lib/mqtt/jwt.ts";
import { startBroker } from "../lib/sim/broker.ts";
import { muteBroker, Observer, rigToml, testConfig } from "./harness.ts";

Deno.test("topicsFor() names every topic from the config, the status topic per device", () => {
  const config = testConfig(
    rigToml(1883, "http://127.0.0.1:1").replace(
      "[mqtt]",
      '[mqtt]\ntopic_prefix = "edge"',
    ),
  );
  const topics = topicsFor(config);
  assert.equal(topics.smartRestIn, "edge/s/ds");
  assert.equal(topics.operationsIn, "edge/devicecontrol/notifications");
  assert.equal(topics.jwtRequest, "edge/s/uat");
  assert.equal(topics.jwtResponse, "edge/s/dat");
  assert.equal(topics.statusOut("test-device"), "edge/s/us");
  assert.equal(topics.statusOut("child-1"), "edge/s/us/child-1");
  assert.equal(topics.service, "te/device/main/service/c8y-tunnel");
  assert.equal(
    topics.health,
    "te/device/main/service/c8y-tunnel/status/health",
  );
  assert.equal(topics.handoffRequests, "c8y-tunnel/connect/request/+");
  assert.equal(topics.handoffRequest("id"), "c8y-tunnel/connect/request/id");
  assert.equal(topics.handoffResult("id"), "c8y-tunnel/connect/result/id");
});

Deno.test("parseJwtAnswer() takes the token of a 71 line only", () => {
  assert.equal(parseJwtAnswer('71,"a.b.c"\n'), "a.b.c");
  assert.equal(parseJwtAnswer("71,a.b.c"), "a.b.c");
  assert.equal(parseJwtAnswer("71,"), undefined);
  assert.equal(parseJwtAnswer("70,a.b.c"), undefined);
});

Deno.test("parseHealth() reads up with its pid, anything else as down, nothing as none", () => {
  assert.deepEqual(parseHealth('{"status":"up","pid":42}'), {
    status: "up",
    pid: 42,
  });
  assert.deepEqual(parseHealth('{"status":"down"}'), { status: "down" });
  assert.deepEqual(parseHealth("{"), { status: "down" });
  assert.deepEqual(parseHealth(undefined), { status: "none" });
});

Deno.test("MqttOnce.connect() fails naming the cause when nothing listens", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const config = testConfig(rigToml(port, "http://127.0.0.1:1"));
  await assert.rejects(
    MqttOnce.connect(config, { purpose: "test", timeoutMs: 2000 }),
    /ECONNREFUSED|refused/i,
  );
});

Deno.test("MqttOnce reads the retained health, skips noise before the JWT answer, and queues messages in order", async () => {
  await using broker = await startBroker();
  const config = testConfig(rigToml(broker.port, "http://127.0.0.1:1"));
  const topics = topicsFor(config);
  const bridge = await Observer.connect(broker.port, [topics.jwtRequest]);
  try {
    await bridge.client.publishAsync(
      topics.health,
      '{"status":"up","pid":7}',
      { qos: 1, retain: true },
    );
    await using once = await MqttOnce.connect(config, {
      purpose: "test",
      timeoutMs: 2000,
    });
    await once.subscribe([topics.health, topics.jwtResponse, "test/+"]);
    assert.deepEqual(await once.health(2000), { status: "up", pid: 7 });
    // The bridge answers the request with noise first, then the token.
    const asked = bridge.waitFor((m) => m.topic === topics.jwtRequest);
    const token = once.jwt(5000);
    await asked;
    await bridge.client.publishAsync(topics.jwtResponse, "41,other", {
      qos: 1,
    });
    await bridge.client.publishAsync(topics.jwtResponse, "71,x.y.z", {
      qos: 1,
    });
    assert.equal(await token, "x.y.z");
    await bridge.client.publishAsync("test/a", "1", { qos: 1 });
    await bridge.client.publishAsync("test/a", "2", { qos: 1 });
    assert.equal(await once.next("test/a", 2000), "1");
    assert.equal(await once.next("test/a", 2000), "2");
    assert.equal(await once.next("test/a", 1), undefined);
  } finally {
    await bridge.close();
  }
});

Deno.test("MqttOnce skips messages over mqtt.max_payload on the socket and reads on past them", async () => {
  await using broker = await startBroker();
  const config = testConfig(
    rigToml(broker.port, "http://127.0.0.1:1").replace(
      "[mqtt]",
      "[mqtt]\nmax_payload = 16384",
    ),
  );
  assert.equal(config.mqtt.maxPayloadBytes, 16384);
  const sender = await Observer.connect(broker.port, ["sender/#"]);
  try {
    await using once = await MqttOnce.connect(config, {
      purpose: "test",
      timeoutMs: 2000,
    });
    await once.subscribe(["test/+"]);
    // QoS 1: the guard acknowledges the skipped one, the broker moves on.
    await sender.client.publishAsync("test/a", "x".repeat(64 * 1024), {
      qos: 1,
    });
    await sender.client.publishAsync("test/a", "small", { qos: 1 });
    assert.equal(await once.next("test/a", 2000), "small");
    await once.publish("test/b", "still connected");
  } finally {
    await sender.close();
  }
});

Deno.test("MqttOnce's subscribe and publish give up naming what the broker left unacknowledged", async () => {
  await using mute = muteBroker();
  const config = testConfig(rigToml(mute.port, "http://127.0.0.1:1"));
  {
    await using once = await MqttOnce.connect(config, {
      purpose: "test",
      timeoutMs: 300,
    });
    await assert.rejects(
      once.subscribe(["test/a", "test/b"]),
      /did not acknowledge the subscription to test\/a, test\/b within 0\.3 s/,
    );
    await assert.rejects(
      once.publish("test/c", "x"),
      /did not acknowledge a message on test\/c within 0\.3 s/,
    );
  }
});
