/**
 * Batched JSON operations: Cumulocity delivers the operations that queued
 * while the device was offline in one message, one JSON object per line.
 * Each is served and reported by id; one bad line drops nothing else.
 */
import assert from "node:assert/strict";
import { Agent } from "../lib/daemon/agent.ts";
import { jsonOperationLines } from "../lib/protocol/operations.ts";
import { RemoteAccessSim } from "../lib/sim/cloud.ts";
import { echo, Observer, rigToml, tcpServer, testConfig } from "./harness.ts";
import { freePort, installed, startMosquitto } from "./system_helpers.ts";

const HAVE_MOSQUITTO = installed("/usr/sbin/mosquitto");

Deno.test("jsonOperationLines() splits one object per line and keeps a whole document whole", () => {
  assert.deepEqual(jsonOperationLines('{"id":"1"}'), ['{"id":"1"}']);
  assert.deepEqual(
    jsonOperationLines('{"id":"1"}\n{"id":"2"}\r\n\n{bad\n'),
    ['{"id":"1"}', '{"id":"2"}', "{bad"],
  );
  const pretty = JSON.stringify({ id: "1", a: { b: 2 } }, null, 2);
  assert.deepEqual(jsonOperationLines(pretty), [pretty]);
});

function op(
  id: string,
  device: string,
  port: number,
  key: string,
): Record<string, unknown> {
  return {
    id,
    status: "PENDING",
    externalSource: { externalId: device, type: "c8y_Serial" },
    c8y_RemoteAccessConnect: {
      hostname: "127.0.0.1",
      port,
      connectionKey: key,
    },
    description: "Connect to remote access server",
  };
}

Deno.test({
  name:
    "Agent serves every operation of a batched devicecontrol message; a bad line drops none of the others (mosquitto)",
  ignore: !HAVE_MOSQUITTO,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-batch-" });
    const port = freePort();
    const mosquitto = await startMosquitto(dir, port);
    const sim = await RemoteAccessSim.start();
    const target = tcpServer(echo);
    const observer = await Observer.connect(port, ["c8y/s/us", "c8y/s/us/+"]);
    const agent = new Agent(
      testConfig(
        rigToml(port, sim.url, { allow: [`127.0.0.1:${target.port}`] }),
      ),
    );
    try {
      await agent.ready;
      const main = sim.openSession();
      const child = sim.openSession();
      const lines = [
        JSON.stringify(op("101", "test-device", target.port, main.key)),
        "{this is not json",
        JSON.stringify(op("102", "test-device", 2, crypto.randomUUID())),
        JSON.stringify({
          id: "103",
          c8y_Restart: {},
          externalSource: { externalId: "test-device", type: "c8y_Serial" },
        }),
        JSON.stringify(op("104", "child-1", target.port, child.key)),
      ];
      await observer.publish(
        "c8y/devicecontrol/notifications",
        lines.join("\n"),
      );
      await observer.waitFor((m) =>
        m.topic === "c8y/s/us" && m.payload === "506,101"
      );
      await observer.waitFor((m) =>
        m.topic === "c8y/s/us/child-1" && m.payload === "506,104"
      );
      const refused = await observer.waitFor((m) =>
        m.topic === "c8y/s/us" && m.payload.startsWith("505,102,")
      );
      assert.match(refused.payload, /127\.0\.0\.1:2 is not in tunnel\.allow/);
      await main.connected;
      await child.connected;
      const mainStatus = observer.on("c8y/s/us");
      assert.ok(mainStatus.includes("504,101"));
      assert.ok(mainStatus.includes("504,102"));
      assert.ok(!mainStatus.some((p) => p.includes(",103")));
      assert.deepEqual(observer.on("c8y/s/us/child-1"), ["504,104", "506,104"]);
      for (const session of [main, child]) {
        session.close();
        await session.closed;
      }
    } finally {
      await agent.close();
      await observer.close();
      await target.close();
      await sim.close();
      await mosquitto.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
