import assert from "node:assert/strict";
import {
  Agent,
  type AgentDeps,
  SESSION_ENDED,
  type SessionEndedEvent,
} from "../lib/daemon/agent.ts";
import type { Config } from "../lib/config/config.ts";
import {
  echo,
  pseudoRandomBytes,
  readBytes,
  readHttpHead,
  type Rig,
  rigToml,
  sha256,
  startRig,
  tcpServer,
  testConfig,
  webSocketAnswer,
} from "./harness.ts";

const EXECUTING = "501,c8y_RemoteAccessConnect";
const SUCCESSFUL = "503,c8y_RemoteAccessConnect";

/** Starts an agent on the rig (by default with the rig's plain config) and registers its shutdown. */
async function startAgent(
  rig: Rig,
  config: Config = testConfig(rigToml(rig.broker.port, rig.sim.url)),
  deps: AgentDeps = {},
): Promise<Agent> {
  const agent = new Agent(config, deps);
  rig.defer(() => agent.close());
  await agent.ready;
  return agent;
}

function failedWith(rig: Rig, fragment: string) {
  return rig.observer.waitFor((m) =>
    m.topic === "c8y/s/us" &&
    m.payload.startsWith("502,c8y_RemoteAccessConnect,") &&
    m.payload.includes(fragment)
  );
}

/** A loopback port with nothing listening on it. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

Deno.test("Agent serves a 530: 501, then 503, then 16 MiB each way intact", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  await startAgent(rig, testConfig(rigToml(rig.broker.port, rig.sim.url)));

  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  await session.connected;
  await rig.status(SUCCESSFUL);
  const statuses = rig.observer.on("c8y/s/us");
  assert.deepEqual(statuses.slice(0, 2), [EXECUTING, SUCCESSFUL]);

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

Deno.test("Agent dispatches sessionended with the summary once it has forgotten the session", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const agent = await startAgent(rig);
  const ended = new Promise<SessionEndedEvent>((resolve) =>
    agent.addEventListener(
      SESSION_ENDED,
      (event) => resolve(event as SessionEndedEvent),
      { once: true },
    )
  );
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  await session.connected;
  await rig.status(SUCCESSFUL);
  assert.equal(agent.sessionCount, 1);
  const reader = session.received.getReader();
  session.send(new TextEncoder().encode("ping"));
  await readBytes(reader, 4);
  reader.releaseLock();
  session.close();
  const { detail } = await ended;
  assert.equal(detail.key, session.key);
  assert.equal(detail.state, "closed");
  assert.equal(detail.toTarget, 4);
  assert.equal(detail.fromTarget, 4);
  assert.equal(agent.sessionCount, 0);
  await agent.idle();
  await session.closed;
});

Deno.test("Agent reports a refused target as 502 naming it", async () => {
  await using rig = await startRig();
  await startAgent(rig, testConfig(rigToml(rig.broker.port, rig.sim.url)));
  const port = closedPort();
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", port);
  const failed = await failedWith(rig, `127.0.0.1:${port}`);
  assert.match(failed.payload, /connection refused/);
  assert.deepEqual(rig.observer.on("c8y/s/us"), [EXECUTING, failed.payload]);
});

Deno.test("Agent refuses a target outside tunnel.allow without connecting to it", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const config = testConfig(
    rigToml(rig.broker.port, rig.sim.url, { allow: ["127.0.0.1:1"] }),
  );
  await startAgent(rig, config);
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  await failedWith(
    rig,
    `target 127.0.0.1:${target.port} is not in tunnel.allow`,
  );
  assert.equal(target.accepted(), 0);
  assert.equal(rig.sim.handshakes.length, 0);
});

Deno.test("Agent reports a cloud 401 as 502 and closes the target connection", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  await startAgent(rig, testConfig(rigToml(rig.broker.port, rig.sim.url)));
  const key = crypto.randomUUID();
  rig.sim.refuse(key, 401);
  await rig.request530(key, "127.0.0.1", target.port);
  const failed = await failedWith(rig, "HTTP 401");
  assert.match(failed.payload, /c8y\.auth/);
});

Deno.test("Agent fails a session whose cloud handshake hangs after tunnel.connect_timeout", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const config = testConfig(
    rigToml(rig.broker.port, rig.sim.url, { tunnel: "connect_timeout = 0.5" }),
  );
  await startAgent(rig, config);
  const key = crypto.randomUUID();
  rig.sim.hang(key);
  const started = performance.now();
  await rig.request530(key, "127.0.0.1", target.port);
  const failed = await failedWith(rig, "connect timeout");
  const elapsed = performance.now() - started;
  assert.match(
    failed.payload,
    /cloud did not connect within 0.5 s \(tunnel.connect_timeout\)/,
  );
  assert.ok(
    elapsed >= 450,
    `failed after ${elapsed} ms, before the 500 ms limit`,
  );
  // Generous upper bound: a loaded machine delays timers, but not by seconds.
  assert.ok(elapsed < 5000, `failed after ${elapsed} ms`);
});

Deno.test("Agent opens one WebSocket for a connection key delivered twice", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  await startAgent(rig, testConfig(rigToml(rig.broker.port, rig.sim.url)));
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  await rig.request530(session.key, "127.0.0.1", target.port);
  await rig.observer.publish(
    "c8y/devicecontrol/notifications",
    JSON.stringify({
      id: "4711",
      externalSource: { externalId: "test-device", type: "c8y_Serial" },
      c8y_RemoteAccessConnect: {
        hostname: "127.0.0.1",
        port: target.port,
        connectionKey: session.key,
      },
    }),
  );
  await session.connected;
  await rig.status(SUCCESSFUL);
  // A later, distinct request proves the duplicates were processed (in order) before it.
  const other = rig.sim.openSession();
  await rig.request530(other.key, "127.0.0.1", target.port);
  await other.connected;
  await rig.observer.waitFor((m) =>
    m.topic === "c8y/s/us" && m.payload === SUCCESSFUL &&
    rig.observer.on("c8y/s/us").length >= 4
  );
  assert.equal(
    rig.sim.handshakes.filter((h) => h.key === session.key).length,
    1,
  );
  assert.deepEqual(rig.observer.on("c8y/s/us"), [
    EXECUTING,
    SUCCESSFUL,
    EXECUTING,
    SUCCESSFUL,
  ]);
  session.close();
  other.close();
  await Promise.all([session.closed, other.closed]);
});

Deno.test("Agent refuses a session beyond tunnel.max_sessions", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const config = testConfig(
    rigToml(rig.broker.port, rig.sim.url, { tunnel: "max_sessions = 1" }),
  );
  const agent = await startAgent(rig, config);
  const first = rig.sim.openSession();
  await rig.request530(first.key, "127.0.0.1", target.port);
  await first.connected;
  await rig.status(SUCCESSFUL);
  const second = rig.sim.openSession();
  await rig.request530(second.key, "127.0.0.1", target.port);
  await failedWith(rig, "session limit reached (tunnel.max_sessions = 1)");
  assert.equal(agent.sessionCount, 1);
  first.close();
  await first.closed;
});

Deno.test("Agent closes the target connection when the cloud drops mid-stream", async () => {
  await using rig = await startRig();
  let targetSawEnd!: (v: "eof" | "error") => void;
  const ended = new Promise<"eof" | "error">((resolve) =>
    targetSawEnd = resolve
  );
  const target = tcpServer(async (conn) => {
    const buffer = new Uint8Array(1024);
    try {
      while ((await conn.read(buffer)) !== null) { /* keep reading */ }
      targetSawEnd("eof");
    } catch {
      targetSawEnd("error");
    }
  });
  rig.defer(() => target.close());
  await startAgent(rig, testConfig(rigToml(rig.broker.port, rig.sim.url)));
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  await session.connected;
  await rig.status(SUCCESSFUL);
  session.send(new Uint8Array(1000));
  session.drop();
  assert.equal(await ended, "eof");
});

Deno.test("Agent closes the WebSocket after the target's last bytes arrived", async () => {
  await using rig = await startRig();
  const goodbye = pseudoRandomBytes(3 * 1024 * 1024, 3);
  const target = tcpServer(async (conn) => {
    let offset = 0;
    while (offset < goodbye.length) {
      offset += await conn.write(goodbye.subarray(offset));
    }
    conn.close();
  });
  rig.defer(() => target.close());
  await startAgent(rig, testConfig(rigToml(rig.broker.port, rig.sim.url)));
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  const chunks: Uint8Array[] = [];
  for await (const chunk of session.received) chunks.push(chunk);
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    all.set(c, offset);
    offset += c.length;
  }
  assert.equal(await sha256(all), await sha256(goodbye));
  assert.deepEqual(await session.closed, {
    code: 1000,
    reason: "target closed",
  });
});

Deno.test("Agent survives 200 malformed payloads and then serves a good request", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  await startAgent(rig, testConfig(rigToml(rig.broker.port, rig.sim.url)));
  const garbage = [
    "",
    "530",
    "530,,,,",
    "530,test-device,127.0.0.1,70000,k1",
    "530,test-device,,22,k2",
    "530,dev/ice,127.0.0.1,22,k3",
    '530,"unterminated',
    "\u0000\u0001\u0002",
    "{not json",
    "530,test-device,127.0.0.1,abc,",
  ];
  for (let i = 0; i < 200; i++) {
    const bytes = pseudoRandomBytes(40 + (i % 60), i + 1);
    const payload = i % 2 === 0
      ? garbage[i % garbage.length]!
      : new TextDecoder().decode(bytes);
    await rig.observer.publish(
      i % 3 === 0 ? "c8y/devicecontrol/notifications" : "c8y/s/ds",
      payload,
    );
  }
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  await session.connected;
  await rig.status(SUCCESSFUL);
  const reader = session.received.getReader();
  session.send(new TextEncoder().encode("ping"));
  assert.equal(new TextDecoder().decode(await readBytes(reader, 4)), "ping");
  reader.releaseLock();
  session.close();
  await session.closed;
});

function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

Deno.test("Agent returns to its baseline of open file descriptors after 200 sessions", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const agent = await startAgent(rig);
  const warmUp = async (i: number) => {
    const session = rig.sim.openSession();
    await rig.request530(session.key, "127.0.0.1", target.port);
    await session.connected;
    const reader = session.received.getReader();
    session.send(new Uint8Array([i & 0xff]));
    assert.equal((await readBytes(reader, 1))[0], i & 0xff);
    reader.releaseLock();
    session.close();
    await session.closed;
  };
  await warmUp(0);
  await agent.idle();
  const baseline = openFds();
  for (let i = 1; i <= 200; i++) await warmUp(i);
  // Sessions end asynchronously after the close frame: wait for the agent's
  // session-ended events until it holds none.
  await agent.idle();
  assert.equal(agent.sessionCount, 0);
  const fds = openFds();
  assert.ok(fds <= baseline + 2, `open fds ${fds}, baseline ${baseline}`);
});

Deno.test("Agent sends Basic credentials and the binary subprotocol", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const config = testConfig(rigToml(rig.broker.port, rig.sim.url));
  const basic = {
    ...config,
    c8y: {
      ...config.c8y,
      auth: "basic" as const,
      credentials: { username: "t1/alice", password: "s3cret:pw" },
    },
  };
  await startAgent(rig, basic);
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  const handshake = await rig.sim.waitForHandshake(session.key);
  assert.equal(handshake.authorization, `Basic ${btoa("t1/alice:s3cret:pw")}`);
  assert.deepEqual(handshake.protocols, ["binary"]);
  await session.connected;
  session.close();
  await session.closed;
});

Deno.test("Agent fetches a JWT over MQTT and sends it as a Bearer token", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const payload = btoa(
    JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600 }),
  )
    .replace(/=+$/, "");
  const token = `eyJhbGciOiJub25lIn0.${payload}.sig`;
  rig.observer.client.on("message", (topic) => {
    if (topic === "c8y/s/uat") rig.observer.publish("c8y/s/dat", `71,${token}`);
  });
  const config = testConfig(
    rigToml(rig.broker.port, rig.sim.url, { c8y: "" }).replace(
      'auth = "none"',
      'auth = "jwt"',
    ),
  );
  await startAgent(rig, config);
  const sessions = [
    rig.sim.openSession(),
    rig.sim.openSession(),
    rig.sim.openSession(),
  ];
  for (const s of sessions) {
    await rig.request530(s.key, "127.0.0.1", target.port);
  }
  for (const s of sessions) {
    const handshake = await rig.sim.waitForHandshake(s.key);
    assert.equal(handshake.authorization, `Bearer ${token}`);
    assert.deepEqual(handshake.protocols, ["binary"]);
    await s.connected;
  }
  // A burst of sessions asks the broker once: the token is cached until near its exp.
  assert.equal(rig.observer.on("c8y/s/uat").length, 1);
  for (const s of sessions) s.close();
  await Promise.all(sessions.map((s) => s.closed));
});

Deno.test("Agent reports 502 naming c8y.jwt_timeout when no JWT comes", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const config = testConfig(
    rigToml(rig.broker.port, rig.sim.url, { c8y: "jwt_timeout = 0.3" }).replace(
      'auth = "none"',
      'auth = "jwt"',
    ),
  );
  await startAgent(rig, config);
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  await failedWith(rig, "c8y.jwt_timeout");
  assert.equal(target.accepted() <= 1, true);
});

/** A cloud on raw TCP that accepts every WebSocket handshake, then sends `bytes`. */
function hostileCloud(bytes: Uint8Array) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      await conn.write(await webSocketAnswer(await readHttpHead(conn)));
      await conn.write(bytes).catch(() => {});
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    async close() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed by the agent */ }
      }
      await loop;
    },
  };
}

Deno.test("Agent survives a cloud that sends garbage frames: the session ends, the target is closed, the next request works", async () => {
  await using rig = await startRig();
  let targetClosed!: () => void;
  const closedByAgent = new Promise<void>((resolve) => targetClosed = resolve);
  const target = tcpServer(async (conn) => {
    const buffer = new Uint8Array(1024);
    try {
      while ((await conn.read(buffer)) !== null) { /* read until closed */ }
    } finally {
      targetClosed();
    }
  });
  rig.defer(() => target.close());
  const cloud = hostileCloud(
    new Uint8Array([
      0x83,
      0x7f,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      1,
      2,
    ]),
  );
  rig.defer(() => cloud.close());
  const config = testConfig(rigToml(rig.broker.port, cloud.url));
  const agent = await startAgent(rig, config);
  await rig.request530(crypto.randomUUID(), "127.0.0.1", target.port);
  await rig.status(SUCCESSFUL);
  await closedByAgent;
  await agent.idle();
  // Still serving: the next request is answered.
  const before = rig.observer.on("c8y/s/us").length;
  await rig.request530(crypto.randomUUID(), "127.0.0.1", target.port);
  await rig.observer.waitFor((m) =>
    m.topic === "c8y/s/us" && rig.observer.on("c8y/s/us").length >= before + 2
  );
  assert.deepEqual(rig.observer.on("c8y/s/us").slice(before, before + 2), [
    EXECUTING,
    SUCCESSFUL,
  ]);
});
