import assert from "node:assert/strict";
import { Agent } from "../lib/agent.ts";
import {
  echo,
  pseudoRandomBytes,
  readBytes,
  rigToml,
  sha256,
  startRig,
  tcpServer,
  testConfig,
} from "./harness.ts";

Deno.test("Agent serves a 530: 501, then 503, then bytes both ways", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const agent = new Agent(testConfig(rigToml(rig.broker.port, rig.sim.url)));
  rig.defer(() => agent.close());
  await agent.ready;

  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  await rig.status("501,c8y_RemoteAccessConnect");
  await session.connected;
  await rig.status("503,c8y_RemoteAccessConnect");

  const data = pseudoRandomBytes(16 * 1024 * 1024, 7);
  const reader = session.received.getReader();
  const received = readBytes(reader, data.length);
  session.send(data);
  const back = await received;
  assert.equal(back.length, data.length);
  assert.equal(await sha256(back), await sha256(data));
  reader.releaseLock();
  session.close();
  await session.closed;
});
