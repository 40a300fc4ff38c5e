/**
 * JSON operations on `<prefix>/devicecontrol/notifications` (reported by id)
 * and child devices (status on `<prefix>/s/us/<child>`), end to end on the
 * embedded broker and the simulator.
 */
import assert from "node:assert/strict";
import { Agent } from "../lib/daemon/agent.ts";
import {
  echo,
  readBytes,
  type Rig,
  rigToml,
  startRig,
  tcpServer,
  testConfig,
} from "./harness.ts";

const NOTIFICATIONS = "c8y/devicecontrol/notifications";

function jsonOperation(
  id: string | number,
  key: string,
  host: string,
  port: number | string,
  externalId = "test-device",
): string {
  return JSON.stringify({
    id,
    deviceId: "10200",
    externalSource: { externalId, type: "c8y_Serial" },
    c8y_RemoteAccessConnect: { hostname: host, port, connectionKey: key },
    description: "Connect to remote access server",
  });
}

async function startAgent(
  rig: Rig,
  allow?: string[],
): Promise<Agent> {
  const agent = new Agent(
    testConfig(
      rigToml(rig.broker.port, rig.sim.url, allow ? { allow } : {}),
    ),
  );
  rig.defer(() => agent.close());
  await agent.ready;
  return agent;
}

/** Sends "ping" over an open session and expects it back from the echo target. */
async function pingPong(
  session: ReturnType<Rig["sim"]["openSession"]>,
): Promise<void> {
  const reader = session.received.getReader();
  const back = readBytes(reader, 4);
  session.send(new TextEncoder().encode("ping"));
  assert.equal(new TextDecoder().decode(await back), "ping");
  reader.releaseLock();
}

/**
 * Sends a request the agent refuses at once (port 0) on the JSON topic and
 * waits for its 505: the agent handles messages in order, so everything
 * published before has been handled. Its own statuses go to a child topic.
 */
async function settle(rig: Rig): Promise<void> {
  const id = String(Math.floor(Math.random() * 1e9));
  await rig.observer.publish(
    NOTIFICATIONS,
    jsonOperation(id, `settle-${id}`, "127.0.0.1", 0, "settle-marker"),
  );
  await rig.observer.waitFor((m) =>
    m.topic === "c8y/s/us/settle-marker" && m.payload.startsWith(`505,${id},`)
  );
}

Deno.test("Agent serves a JSON c8y_RemoteAccessConnect: 504,<id> then 506,<id>, port as a numeric string", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  await startAgent(rig);
  const session = rig.sim.openSession();
  await rig.observer.publish(
    NOTIFICATIONS,
    jsonOperation("4711", session.key, "127.0.0.1", String(target.port)),
  );
  await rig.status("504,4711");
  await session.connected;
  await rig.status("506,4711");
  await pingPong(session);
  assert.deepEqual(rig.observer.on("c8y/s/us"), ["504,4711", "506,4711"]);
  session.close();
  await session.closed;
});

Deno.test('Agent reports a refused JSON operation as 505,<id>,"<reason>" without connecting', async () => {
  await using rig = await startRig();
  await startAgent(rig, ["127.0.0.1:22"]);
  await rig.observer.publish(
    NOTIFICATIONS,
    jsonOperation(42, "json-refused", "127.0.0.2", 2222),
  );
  await rig.status("504,42");
  await rig.status('505,42,"target 127.0.0.2:2222 is not in tunnel.allow"');
  assert.equal(rig.sim.handshakes.length, 0);
});

Deno.test("Agent ignores other operations on devicecontrol/notifications quietly", async () => {
  await using rig = await startRig();
  const agent = await startAgent(rig);
  await rig.observer.publish(
    NOTIFICATIONS,
    JSON.stringify({
      id: "77",
      externalSource: { externalId: "test-device", type: "c8y_Serial" },
      c8y_Restart: {},
    }),
  );
  await settle(rig);
  assert.deepEqual(rig.observer.on("c8y/s/us"), []);
  assert.equal(agent.sessionCount, 0);
});

Deno.test("Agent treats one connection key delivered as 530 and as JSON as one session", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  await startAgent(rig);
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  await rig.observer.publish(
    NOTIFICATIONS,
    jsonOperation("900", session.key, "127.0.0.1", target.port),
  );
  await session.connected;
  await rig.status("503,c8y_RemoteAccessConnect");
  await settle(rig);
  assert.equal(rig.sim.handshakes.length, 1);
  assert.equal(target.accepted(), 1);
  assert.deepEqual(rig.observer.on("c8y/s/us"), [
    "501,c8y_RemoteAccessConnect",
    "503,c8y_RemoteAccessConnect",
  ]);
  await pingPong(session);
  session.close();
  await session.closed;
});

Deno.test("Agent serves a 530 for a child device and reports on c8y/s/us/<child>", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  await startAgent(rig);
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port, "child-plc-1");
  await rig.status("501,c8y_RemoteAccessConnect", "child-plc-1");
  await session.connected;
  await rig.status("503,c8y_RemoteAccessConnect", "child-plc-1");
  await pingPong(session);
  assert.deepEqual(rig.observer.on("c8y/s/us"), []);
  session.close();
  await session.closed;
});

Deno.test("Agent serves a JSON operation for a child device and reports by id on its topic", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  await startAgent(rig);
  const session = rig.sim.openSession();
  await rig.observer.publish(
    NOTIFICATIONS,
    jsonOperation(5150, session.key, "127.0.0.1", target.port, "child-2"),
  );
  await rig.status("504,5150", "child-2");
  await session.connected;
  await rig.status("506,5150", "child-2");
  assert.deepEqual(rig.observer.on("c8y/s/us"), []);
  session.close();
  await session.closed;
});

Deno.test("Agent applies tunnel.allow to child devices too: 501 then 502 on the child's topic", async () => {
  await using rig = await startRig();
  await startAgent(rig, ["127.0.0.1:22"]);
  await rig.request530("child-refused", "127.0.0.2", 502, "child-plc-1");
  await rig.status("501,c8y_RemoteAccessConnect", "child-plc-1");
  await rig.status(
    '502,c8y_RemoteAccessConnect,"target 127.0.0.2:502 is not in tunnel.allow"',
    "child-plc-1",
  );
  assert.equal(rig.sim.handshakes.length, 0);
});
