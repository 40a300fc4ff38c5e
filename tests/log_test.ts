import assert from "node:assert/strict";
import { Agent } from "../lib/daemon/agent.ts";
import { setupLogging } from "../lib/util/log.ts";
import {
  echo,
  readBytes,
  rigToml,
  startRig,
  tcpServer,
  testConfig,
} from "./harness.ts";

const PASSWORD = "pa55-W0rd-never-logged";
const TOKEN_SECRET = "tok3n-signature-never-logged";

Deno.test("Agent never writes a password or token into a log line, even at debug level", async () => {
  const lines: string[] = [];
  setupLogging({
    level: "debug",
    format: "json",
    write: (line) => lines.push(line),
  });
  try {
    await using rig = await startRig();
    const target = tcpServer(echo);
    rig.defer(() => target.close());
    const payload = btoa(
      JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600 }),
    ).replace(/=+$/, "");
    const token = `eyJhbGciOiJub25lIn0.${payload}.${TOKEN_SECRET}`;
    rig.observer.client.on("message", (topic) => {
      if (topic === "c8y/s/uat") {
        rig.observer.publish("c8y/s/dat", `71,${token}`);
      }
    });
    const base = testConfig(rigToml(rig.broker.port, rig.sim.url));
    // One agent with a JWT, one with Basic credentials, both at debug level.
    for (
      const c8y of [
        { ...base.c8y, auth: "jwt" as const },
        {
          ...base.c8y,
          auth: "basic" as const,
          credentials: { username: "t1/bob", password: PASSWORD },
        },
      ]
    ) {
      const agent = new Agent({
        ...base,
        c8y,
        mqtt: { ...base.mqtt, clientId: `log-${c8y.auth}` },
      });
      rig.defer(() => agent.close());
      await agent.ready;
      const session = rig.sim.openSession();
      await rig.request530(session.key, "127.0.0.1", target.port);
      await session.connected;
      const reader = session.received.getReader();
      session.send(new Uint8Array([1, 2, 3]));
      await readBytes(reader, 3);
      reader.releaseLock();
      session.close();
      await session.closed;
      // A refused handshake logs its reason too.
      const refused = crypto.randomUUID();
      rig.sim.refuse(refused, 401);
      await rig.request530(refused, "127.0.0.1", target.port);
      await rig.observer.waitFor((m) =>
        m.payload.includes("HTTP 401") && rig.observer.seen.indexOf(m) >= 0
      );
      await agent.close();
    }
    const all = lines.join("");
    assert.ok(
      lines.length > 10,
      `expected debug logging, got ${lines.length} lines`,
    );
    assert.ok(!all.includes(PASSWORD), "password in a log line");
    assert.ok(!all.includes(TOKEN_SECRET), "token in a log line");
    assert.ok(
      !all.includes(btoa(`t1/bob:${PASSWORD}`)),
      "basic credentials in a log line",
    );
    assert.ok(!all.includes(payload), "token payload in a log line");
  } finally {
    setupLogging({ level: "error", format: "text" });
  }
});
