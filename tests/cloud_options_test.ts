/**
 * Cloud leg options: an HTTP CONNECT proxy (a small recording proxy here),
 * extra CA certificates against a local wss:// simulator with a self-signed
 * CA, and JWT caching (a burst of sessions asks the bridge once).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Agent } from "../lib/daemon/agent.ts";
import { dialThroughProxy } from "../lib/cloud/http_connect.ts";
import { errorReason } from "../lib/cloud/leg.ts";
import { openWebSocketWithClient } from "../lib/cloud/runtime_websocket.ts";
import { loadCaCerts } from "../lib/config/ca_certs.ts";
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
} from "./harness.ts";
import { HAVE_OPENSSL, makeTestPki } from "./test_pki.ts";

// ---------------------------------------------------------------- helpers

if (!HAVE_OPENSSL) console.log("SKIP: TLS tests need openssl");

/** A small HTTP CONNECT proxy on loopback that records each request head. */
interface TestProxy {
  readonly url: string;
  readonly requests: string[];
  close(): Promise<void>;
}

function connectProxy(options: { status?: number } = {}): TestProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const requests: string[] = [];
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const serve = async (conn: Deno.Conn) => {
    const head = await readHttpHead(conn);
    if (!head.includes("\r\n\r\n")) return;
    requests.push(head.slice(0, head.indexOf("\r\n\r\n")));
    const [method, target] = head.split(" ");
    const status = options.status ?? 200;
    if (method !== "CONNECT" || status !== 200 || target === undefined) {
      await conn.write(
        new TextEncoder().encode(
          `HTTP/1.1 ${
            method === "CONNECT" ? status : 405
          } Refused\r\nContent-Length: 0\r\n\r\n`,
        ),
      );
      return;
    }
    const colon = target.lastIndexOf(":");
    const upstream = await Deno.connect({
      hostname: target.slice(0, colon),
      port: Number(target.slice(colon + 1)),
    });
    conns.add(upstream);
    await conn.write(
      new TextEncoder().encode("HTTP/1.1 200 Connection established\r\n\r\n"),
    );
    await Promise.allSettled([
      conn.readable.pipeTo(upstream.writable),
      upstream.readable.pipeTo(conn.writable),
    ]);
  };
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const task = serve(conn).catch(() => {}).finally(() => {
        for (const c of [conn]) {
          try {
            c.close();
          } catch { /* closed by pipeTo */ }
        }
      });
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    requests,
    async close() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
      await loop;
      await Promise.allSettled([...tasks]);
    },
  };
}

/** Runs one session through the agent and checks bytes both ways. */
async function roundTrip(rig: Rig, targetPort: number): Promise<void> {
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", targetPort);
  await session.connected;
  await rig.status("503,c8y_RemoteAccessConnect");
  const data = pseudoRandomBytes(2 * 1024 * 1024, 11);
  const reader = session.received.getReader();
  const back = readBytes(reader, data.length);
  session.send(data);
  assert.equal(await sha256(await back), await sha256(data));
  reader.releaseLock();
  session.close();
  await session.closed;
}

// ---------------------------------------------------------------- proxy and CA

Deno.test({
  name:
    "Agent opens a wss:// cloud leg through an HTTP CONNECT proxy with credentials, trusting c8y.root_cert_path",
  ignore: !HAVE_OPENSSL,
  async fn() {
    await using pki = await makeTestPki();
    await using rig = await startRig({
      cert: pki.server.cert,
      key: pki.server.key,
    });
    const proxy = connectProxy();
    rig.defer(() => proxy.close());
    const target = tcpServer(echo);
    rig.defer(() => target.close());
    assert.match(rig.sim.url, /^https:/);
    const config = testConfig(
      rigToml(rig.broker.port, rig.sim.url, {
        c8y: `root_cert_path = "${pki.caPath}"`,
      }) +
        `[proxy]\naddress = "${proxy.url}"\nusername = "proxy-user"\npassword = "proxy-secret"\n`,
    );
    const agent = new Agent(config);
    rig.defer(() => agent.close());
    await agent.ready;

    await roundTrip(rig, target.port);
    assert.equal(proxy.requests.length, 1);
    const [requestLine, ...headers] = proxy.requests[0]!.split("\r\n");
    const simPort = new URL(rig.sim.url).port;
    assert.equal(requestLine, `CONNECT 127.0.0.1:${simPort} HTTP/1.1`);
    assert.ok(
      headers.some((h) =>
        h.toLowerCase() ===
          `proxy-authorization: basic ${btoa("proxy-user:proxy-secret")}`
            .toLowerCase()
      ),
      headers.join("\n"),
    );
  },
});

Deno.test({
  name:
    "Agent trusts a CA directory in c8y.root_cert_path for a wss:// simulator (no proxy)",
  ignore: !HAVE_OPENSSL,
  async fn() {
    await using pki = await makeTestPki();
    await using rig = await startRig({
      cert: pki.server.cert,
      key: pki.server.key,
    });
    const target = tcpServer(echo);
    rig.defer(() => target.close());
    const caDir = join(pki.dir, "cas");
    await Deno.mkdir(caDir);
    await Deno.copyFile(pki.caPath, join(caDir, "test-ca.crt"));
    await Deno.writeTextFile(join(caDir, "README"), "not a certificate\n");
    const agent = new Agent(
      testConfig(
        rigToml(rig.broker.port, rig.sim.url, {
          c8y: `root_cert_path = "${caDir}"`,
        }),
      ),
    );
    rig.defer(() => agent.close());
    await agent.ready;
    await roundTrip(rig, target.port);
  },
});

Deno.test({
  name:
    "Agent reports 502 naming c8y.root_cert_path when the cloud's CA is not trusted",
  ignore: !HAVE_OPENSSL,
  async fn() {
    await using pki = await makeTestPki();
    await using rig = await startRig({
      cert: pki.server.cert,
      key: pki.server.key,
    });
    const target = tcpServer(echo);
    rig.defer(() => target.close());
    const agent = new Agent(
      testConfig(rigToml(rig.broker.port, rig.sim.url)),
    );
    rig.defer(() => agent.close());
    await agent.ready;
    const session = rig.sim.openSession();
    rig.defer(async () => await session[Symbol.asyncDispose]());
    await rig.request530(session.key, "127.0.0.1", target.port);
    const failed = await rig.observer.waitFor((m) =>
      m.topic === "c8y/s/us" && m.payload.startsWith("502,")
    );
    assert.match(failed.payload, /c8y\.root_cert_path/);
  },
});

Deno.test({
  name:
    "Agent reports 502 naming proxy.username when the proxy refuses the credentials (407)",
  ignore: !HAVE_OPENSSL,
  async fn() {
    await using pki = await makeTestPki();
    await using rig = await startRig({
      cert: pki.server.cert,
      key: pki.server.key,
    });
    const proxy = connectProxy({ status: 407 });
    rig.defer(() => proxy.close());
    const target = tcpServer(echo);
    rig.defer(() => target.close());
    const agent = new Agent(
      testConfig(
        rigToml(rig.broker.port, rig.sim.url, {
          c8y: `root_cert_path = "${pki.caPath}"`,
        }) +
          `[proxy]\naddress = "${proxy.url}"\nusername = "u"\npassword = "wrong-secret"\n`,
      ),
    );
    rig.defer(() => agent.close());
    await agent.ready;
    const session = rig.sim.openSession();
    rig.defer(async () => await session[Symbol.asyncDispose]());
    await rig.request530(session.key, "127.0.0.1", target.port);
    const failed = await rig.observer.waitFor((m) =>
      m.topic === "c8y/s/us" && m.payload.startsWith("502,")
    );
    assert.match(failed.payload, /HTTP 407.*proxy\.username/);
    assert.doesNotMatch(failed.payload, /wrong-secret/);
  },
});

Deno.test("Agent tunnels a ws:// cloud leg through the proxy with CONNECT too", async () => {
  await using rig = await startRig();
  const proxy = connectProxy();
  rig.defer(() => proxy.close());
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const agent = new Agent(
    testConfig(
      rigToml(rig.broker.port, rig.sim.url) +
        `[proxy]\naddress = "${proxy.url}"\n`,
    ),
  );
  rig.defer(() => agent.close());
  await agent.ready;
  await roundTrip(rig, target.port);
  const simPort = new URL(rig.sim.url).port;
  assert.equal(
    proxy.requests[0]?.split("\r\n")[0],
    `CONNECT 127.0.0.1:${simPort} HTTP/1.1`,
  );
  assert.ok(
    !proxy.requests[0]?.toLowerCase().includes("proxy-authorization"),
    "no credentials configured, none sent",
  );
});

Deno.test("dialThroughProxy() names proxy.address when the proxy cannot be reached", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (closed.addr as Deno.NetAddr).port;
  closed.close();
  await assert.rejects(
    dialThroughProxy(
      { url: `http://127.0.0.1:${port}` },
      "127.0.0.1",
      443,
      new AbortController().signal,
    ),
    new RegExp(
      `cannot reach proxy http://127\\.0\\.0\\.1:${port} \\(proxy\\.address\\)`,
    ),
  );
});

Deno.test({
  name:
    "openWebSocketWithClient() (the https:// proxy fallback) carries bytes both ways through a CONNECT proxy with extra CAs",
  ignore: !HAVE_OPENSSL,
  async fn() {
    await using pki = await makeTestPki();
    await using rig = await startRig({
      cert: pki.server.cert,
      key: pki.server.key,
    });
    const proxy = connectProxy();
    rig.defer(() => proxy.close());
    const open = openWebSocketWithClient({
      proxy: { url: proxy.url, basicAuth: { username: "u", password: "p" } },
      caCerts: [await Deno.readTextFile(pki.caPath)],
    });
    const session = rig.sim.openSession();
    const url = `${
      rig.sim.url.replace(/^https/, "wss")
    }/service/remoteaccess/device/${session.key}`;
    const leg = await open(url, {
      headers: new Headers(),
      signal: new AbortController().signal,
    });
    await session.connected;
    assert.equal(leg.protocol, "binary");
    assert.match(
      proxy.requests[0] ?? "",
      /^CONNECT 127\.0\.0\.1:\d+ HTTP\/1\.1/,
    );

    const data = pseudoRandomBytes(512 * 1024, 5);
    const received = session.received.getReader();
    const atSim = readBytes(received, data.length);
    for (let at = 0; at < data.length;) {
      const space = leg.sendSpace();
      const n = Math.min(space.length, data.length - at);
      space.set(data.subarray(at, at + n));
      await leg.send(n);
      at += n;
    }
    assert.equal(await sha256(await atSim), await sha256(data));
    received.releaseLock();

    session.send(data);
    const back = new Uint8Array(data.length);
    let total = 0;
    while (total < data.length) {
      const bytes = await leg.receive();
      if (bytes === null) break;
      back.set(bytes, total);
      total += bytes.length;
    }
    assert.equal(await sha256(back), await sha256(data));
    leg.close("test done");
    assert.equal((await leg.closed).code, 1000);
    await session.closed;
  },
});

Deno.test("loadCaCerts() names c8y.root_cert_path for a missing path, a file without certificates and an empty directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-ca-" });
  try {
    await assert.rejects(
      loadCaCerts(join(dir, "absent.pem")),
      /c8y\.root_cert_path = ".*absent\.pem": no such file or directory/,
    );
    await Deno.writeTextFile(join(dir, "x.pem"), "hello\n");
    await assert.rejects(
      loadCaCerts(join(dir, "x.pem")),
      /holds no PEM certificate/,
    );
    const empty = join(dir, "empty");
    await Deno.mkdir(empty);
    await assert.rejects(loadCaCerts(empty), /holds no PEM certificate/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("errorReason() gives plain words for refused and reset, and names the setting for a certificate, an HTTP status or a proxy refusal", () => {
  assert.equal(
    errorReason(new Deno.errors.ConnectionRefused("os error 111")),
    "connection refused",
  );
  assert.equal(
    errorReason(new Deno.errors.ConnectionReset("os error 104")),
    "connection reset",
  );
  assert.match(
    errorReason(new Error("invalid peer certificate: UnknownIssuer")),
    /UnknownIssuer: set c8y\.root_cert_path/,
  );
  assert.match(
    errorReason(new Error("Invalid status code: 403 Forbidden")),
    /HTTP 403.*Remote Access permission/,
  );
  assert.match(
    errorReason(new Error("Proxy Authentication Required")),
    /HTTP 407.*proxy\.username/,
  );
  assert.equal(
    errorReason("idle for 60 s (tunnel.idle_timeout)"),
    "idle for 60 s (tunnel.idle_timeout)",
  );
});

// ---------------------------------------------------------------- JWT cache

/** A JWT-shaped token (unsigned; the agent never verifies it) expiring at `exp`. */
function fakeJwt(exp: number): string {
  const part = (value: unknown) =>
    btoa(JSON.stringify(value)).replace(/=+$/, "").replace(/\+/g, "-")
      .replace(/\//g, "_");
  return `${part({ alg: "none" })}.${
    part({ exp, sub: "device_test" })
  }.signature`;
}

/** Answers every `c8y/s/uat` with `71,<token()>`, like the thin-edge bridge. */
function fakeBridge(rig: Rig, token: () => string): void {
  rig.observer.client.on("message", (topic) => {
    if (topic === "c8y/s/uat") {
      rig.observer.publish("c8y/s/dat", `71,${token()}`).catch(() => {});
    }
  });
}

Deno.test("Agent asks the bridge for a JWT once for a burst of sessions, and again once it nears exp", async () => {
  await using rig = await startRig({
    authorize: (authorization) => authorization?.startsWith("Bearer ") ?? false,
  });
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  let exp = Math.floor(Date.now() / 1000) + 3600;
  fakeBridge(rig, () => fakeJwt(exp));
  const agent = new Agent(
    testConfig(
      rigToml(rig.broker.port, rig.sim.url, { c8y: "" }).replace(
        'auth = "none"',
        'auth = "jwt"',
      ),
    ),
  );
  rig.defer(() => agent.close());
  await agent.ready;

  const burst = Array.from({ length: 8 }, () => rig.sim.openSession());
  for (const session of burst) {
    await rig.request530(session.key, "127.0.0.1", target.port);
  }
  await Promise.all(burst.map((session) => session.connected));
  const requests = () => rig.observer.on("c8y/s/uat").length;
  assert.equal(requests(), 1);
  for (const handshake of rig.sim.handshakes) {
    assert.equal(handshake.authorization, `Bearer ${fakeJwt(exp)}`);
  }

  // A token with less than a minute left is not reused.
  const later = rig.sim.openSession();
  await rig.request530(later.key, "127.0.0.1", target.port);
  await later.connected;
  assert.equal(requests(), 1);
  exp = Math.floor(Date.now() / 1000) + 30;
  // Renew the cached token to one that is about to expire.
  const renew = rig.sim.openSession();
  await rig.observer.publish("c8y/s/dat", `71,${fakeJwt(exp)}`);
  await rig.request530(renew.key, "127.0.0.1", target.port);
  await renew.connected;
  assert.equal(requests(), 2);

  for (const session of [...burst, later, renew]) {
    session.close();
    await session.closed;
  }
});
