import assert from "node:assert/strict";
import mqtt from "mqtt";
import {
  type ClientSession,
  RemoteAccessSim,
  smartRest530,
  startBroker,
} from "../lib/sim/mod.ts";

// Self-signed EC certificate for 127.0.0.1 (CA:FALSE, valid until 2126),
// generated with openssl for the TLS test only.
const TEST_CERT = `-----BEGIN CERTIFICATE-----
MIIBvDCCAWKgAwIBAgIUJoZTp/D+towA3fz88y0B753ZlrkwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJMTI3LjAuMC4xMCAXDTI2MTEyNzAwNTcwNVoYDzIxMjYxMTAz
MDA1NzA1WjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAR28kqD6YXRlrCX90bAybcbQZbMhx9kewSkSc39QshhV8MXs7SR1L/h
h85jckaDyLQH4teSFDleVhTqdp6fzWoeo4GPMIGMMB0GA1UdDgQWBBRqvta/20iT
u8JTd9y9R39I9wzSSDAfBgNVHSMEGDAWgBRqvta/20iTu8JTd9y9R39I9wzSSDAa
BgNVHREEEzARhwR/AAABgglsb2NhbGhvc3QwDAYDVR0TAQH/BAIwADALBgNVHQ8E
BAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEwCgYIKoZIzj0EAwIDSAAwRQIgU5o3
XnbPpkkw3pKDs8zSc+HynVBNwAjgZoASnuP8Ti8CIQDMrQt3vjTncYfCrtS7z2AW
gWSFLfnBi6EaFBoxBvUWXQ==
-----END CERTIFICATE-----
`;
const TEST_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgDnKXZPGw1tkmwnbx
Krmpa8S9uIzqYa6A1zKv/3Z43NOhRANCAAR28kqD6YXRlrCX90bAybcbQZbMhx9k
ewSkSc39QshhV8MXs7SR1L/hh85jckaDyLQH4teSFDleVhTqdp6fzWoe
-----END PRIVATE KEY-----
`;

const AUTH = "Basic dDEwL3VzZXI6c2VjcmV0"; // t10/user:secret
const MiB = 1024 * 1024;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------
// helpers: a plain Deno WebSocket stands in for the device (our agent)

interface Device {
  readonly ws: WebSocket;
  /** Resolves on open, rejects on a failed handshake. */
  readonly opened: Promise<void>;
  /** Close event of the device's WebSocket (always fires). */
  readonly closed: Promise<CloseEvent>;
  /** Resolves with everything received once `n` bytes have arrived. */
  receive(n: number): Promise<Uint8Array>;
}

function deviceUrl(sim: RemoteAccessSim, key: string): string {
  return `${sim.url.replace(/^http/, "ws")}/service/remoteaccess/device/${
    encodeURIComponent(key)
  }`;
}

function connectDevice(
  sim: RemoteAccessSim,
  key: string,
  options: { authorization?: string; protocols?: string[]; echo?: boolean } =
    {},
): Device {
  const ws = new WebSocket(deviceUrl(sim, key), {
    protocols: options.protocols ?? ["binary"],
    headers: { Authorization: options.authorization ?? AUTH },
  });
  ws.binaryType = "arraybuffer";
  const opened = Promise.withResolvers<void>();
  opened.promise.catch(() => {});
  const closed = Promise.withResolvers<CloseEvent>();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let want: { n: number; resolve: (data: Uint8Array) => void } | null = null;
  const check = () => {
    if (want !== null && size >= want.n) {
      const { resolve } = want;
      want = null;
      resolve(concat(chunks));
    }
  };
  ws.onopen = () => opened.resolve();
  ws.onerror = () => opened.reject(new Error("device handshake failed"));
  ws.onclose = (event) => {
    opened.reject(new Error("device closed before open"));
    closed.resolve(event);
  };
  ws.onmessage = (event: MessageEvent<ArrayBuffer>) => {
    if (options.echo) {
      ws.send(event.data);
      return;
    }
    const chunk = new Uint8Array(event.data);
    chunks.push(chunk);
    size += chunk.byteLength;
    check();
  };
  return {
    ws,
    opened: opened.promise,
    closed: closed.promise,
    receive(n) {
      const { promise, resolve } = Promise.withResolvers<Uint8Array>();
      want = { n, resolve };
      check();
      return promise;
    },
  };
}

function randomBytes(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) {
    crypto.getRandomValues(bytes.subarray(i, Math.min(n, i + 65536)));
  }
  return bytes;
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

async function sha256(data: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    data as Uint8Array<ArrayBuffer>,
  );
  return Array.from(new Uint8Array(digest), (b) => b.toString(16)).join("");
}

async function readAll(
  stream: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return concat(chunks);
}

/** Reads from a TCP connection until EOF. */
async function readConn(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(65536);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return concat(chunks);
    chunks.push(buffer.slice(0, n));
  }
}

/** Reads from a TCP connection until `n` bytes have arrived. */
async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let offset = 0;
  while (offset < n) {
    const read = await conn.read(out.subarray(offset));
    if (read === null) throw new Error(`EOF after ${offset} of ${n} bytes`);
    offset += read;
  }
  return out;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.byteLength) {
    offset += await conn.write(data.subarray(offset, offset + 65536));
  }
}

/** Sends `data` from the device in 64 KiB frames. */
function sendFromDevice(ws: WebSocket, data: Uint8Array): void {
  for (let i = 0; i < data.byteLength; i += 65536) {
    ws.send(data.subarray(i, i + 65536));
  }
}

function upgradeRequest(key: string): Uint8Array {
  return encoder.encode(
    `GET /service/remoteaccess/device/${key} HTTP/1.1\r\n` +
      "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n" +
      `Authorization: ${AUTH}\r\n\r\n`,
  );
}

// ---------------------------------------------------------------------------
// broker

Deno.test("startBroker() relays a publish from one mqtt client to another", async () => {
  await using broker = await startBroker();
  assert.equal(broker.host, "127.0.0.1");
  assert.equal(broker.url, `mqtt://127.0.0.1:${broker.port}`);
  const subscriber = await mqtt.connectAsync(broker.url, {
    clientId: "sub",
    reconnectPeriod: 0,
  });
  const publisher = await mqtt.connectAsync(broker.url, {
    clientId: "pub",
    reconnectPeriod: 0,
  });
  try {
    await subscriber.subscribeAsync("c8y/s/ds", { qos: 1 });
    const received = new Promise<[string, string]>((resolve) =>
      subscriber.on(
        "message",
        (topic, payload) => resolve([topic, payload.toString()]),
      )
    );
    await publisher.publishAsync("c8y/s/ds", "530,dev,127.0.0.1,22,k", {
      qos: 1,
    });
    assert.deepEqual(await received, ["c8y/s/ds", "530,dev,127.0.0.1,22,k"]);
  } finally {
    await publisher.endAsync();
    await subscriber.endAsync();
  }
});

Deno.test("startBroker() close() disconnects every client and is idempotent", async () => {
  const broker = await startBroker();
  const client = await mqtt.connectAsync(broker.url, {
    clientId: "c1",
    reconnectPeriod: 0,
  });
  const clientClosed = new Promise<void>((resolve) =>
    client.once("close", () => resolve())
  );
  // a connection that never sends CONNECT is unknown to aedes
  const raw = await Deno.connect({ hostname: "127.0.0.1", port: broker.port });
  const rawEof = raw.read(new Uint8Array(16));

  await broker.close();
  await broker.close();
  await clientClosed;
  await client.endAsync(true);
  assert.equal(await rawEof, null);
  raw.close();
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port: broker.port }),
  );
});

// ---------------------------------------------------------------------------
// device endpoint

Deno.test("RemoteAccessSim.start() serves plain http on 127.0.0.1 by default", async () => {
  await using sim = await RemoteAccessSim.start();
  assert.match(sim.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const response = await fetch(`${sim.url}/elsewhere`);
  await response.body?.cancel();
  assert.equal(response.status, 404);
  assert.equal(sim.handshakes.length, 0);
});

Deno.test("RemoteAccessSim.start() rejects a certificate without key and a port in use", async () => {
  await assert.rejects(
    RemoteAccessSim.start({ cert: TEST_CERT }),
    TypeError,
  );
  await using sim = await RemoteAccessSim.start();
  await assert.rejects(
    RemoteAccessSim.start({ port: port(sim) }),
    new RegExp(`127\\.0\\.0\\.1:${port(sim)}`),
  );
});

Deno.test("RemoteAccessSim.handshakes records authorization and protocols and answers subprotocol binary", async () => {
  await using sim = await RemoteAccessSim.start();
  const session = sim.openSession();
  const device = connectDevice(sim, session.key);
  await device.opened;
  await session.connected;
  assert.equal(device.ws.protocol, "binary");
  assert.equal(sim.handshakes.length, 1);
  const handshake = sim.handshakes[0]!;
  assert.equal(handshake.key, session.key);
  assert.equal(handshake.authorization, AUTH);
  assert.deepEqual(handshake.protocols, ["binary"]);
  assert.equal(handshake.status, 101);
  assert.ok(handshake.time > 0 && handshake.time <= performance.now());
  session.close();
  assert.equal((await device.closed).code, 1000);
});

Deno.test("RemoteAccessSim answers no subprotocol when the device asks for none", async () => {
  await using sim = await RemoteAccessSim.start();
  const session = sim.openSession();
  const device = connectDevice(sim, session.key, { protocols: [] });
  await device.opened;
  assert.equal(device.ws.protocol, "");
  assert.deepEqual(sim.handshakes[0]?.protocols, []);
  device.ws.close(); // no code: the close frame carries none (1005)
  await device.closed;
  assert.deepEqual(await session.closed, { code: 1005, reason: "" });
});

Deno.test("RemoteAccessSim.refuse() answers the status and the device sees an error", async () => {
  await using sim = await RemoteAccessSim.start();
  for (const status of [401, 404, 503]) {
    const session = sim.openSession();
    sim.refuse(session.key, status);
    const device = connectDevice(sim, session.key);
    await assert.rejects(device.opened);
    await device.closed;
    const handshake = await sim.waitForHandshake(session.key);
    assert.equal(handshake.status, status);
    await session[Symbol.asyncDispose]();
  }
  assert.throws(() => sim.refuse("k", 101), RangeError);
});

Deno.test("RemoteAccessSim answers 404 for an unknown key and 409 for a key in use", async () => {
  await using sim = await RemoteAccessSim.start();
  const unknown = connectDevice(sim, "no-such-key");
  await assert.rejects(unknown.opened);
  await unknown.closed;
  assert.equal((await sim.waitForHandshake("no-such-key")).status, 404);

  const session = sim.openSession();
  const first = connectDevice(sim, session.key);
  await first.opened;
  const second = connectDevice(sim, session.key);
  await assert.rejects(second.opened);
  await second.closed;
  assert.deepEqual(sim.handshakes.map((h) => h.status), [404, 101, 409]);
  first.ws.close();
  await first.closed;
  await session.closed;
});

Deno.test("RemoteAccessSim.start() authorize() decides between 401 and upgrade", async () => {
  await using sim = await RemoteAccessSim.start({
    authorize: (authorization) => authorization === "Bearer good",
  });
  const session = sim.openSession();
  const bad = connectDevice(sim, session.key, {
    authorization: "Bearer bad",
  });
  await assert.rejects(bad.opened);
  await bad.closed;
  const good = connectDevice(sim, session.key, {
    authorization: "Bearer good",
  });
  await good.opened;
  assert.deepEqual(sim.handshakes.map((h) => h.status), [401, 101]);
  assert.equal(sim.handshakes[0]?.authorization, "Bearer bad");
  session.close();
  await good.closed;
});

Deno.test("RemoteAccessSim.hang() accepts the connection but never answers the handshake", async () => {
  const sim = await RemoteAccessSim.start();
  sim.hang("slow-key");
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: port(sim) });
  try {
    await conn.write(upgradeRequest("slow-key"));
    const handshake = await sim.waitForHandshake("slow-key");
    assert.equal(handshake.status, 0);
    assert.equal(handshake.authorization, AUTH);
    let answered = false;
    const buffer = new Uint8Array(4096);
    const reply = conn.read(buffer).then((n) => {
      answered = true;
      return n;
    });
    // A later request is served completely while the first one still waits.
    const response = await fetch(
      `${sim.url}/service/remoteaccess/device/other`,
    );
    await response.body?.cancel();
    assert.equal(response.status, 400);
    assert.equal(answered, false);
    // Closing the simulator releases it with 503.
    await sim.close();
    const n = await reply;
    assert.ok(n !== null);
    assert.match(decoder.decode(buffer.subarray(0, n)), /^HTTP\/1\.1 503/);
  } finally {
    conn.close();
    await sim.close();
  }
});

Deno.test("RemoteAccessSim.waitForHandshake() works before and after the handshake, and honours its signal", async () => {
  await using sim = await RemoteAccessSim.start();
  const session = sim.openSession();
  const early = sim.waitForHandshake(session.key);
  const device = connectDevice(sim, session.key);
  await device.opened;
  assert.equal((await early).status, 101);
  // the next one has not happened yet
  const controller = new AbortController();
  const next = sim.waitForHandshake(session.key, { signal: controller.signal });
  controller.abort(new Error("gave up"));
  await assert.rejects(next, /gave up/);
  // a later call sees a handshake that already happened
  const again = connectDevice(sim, session.key);
  await again.closed;
  assert.equal((await sim.waitForHandshake(session.key)).status, 409);
  session.close();
  await device.closed;
  const pending = assert.rejects(
    sim.waitForHandshake("never"),
    /simulator closed/,
  );
  await sim.close();
  await pending;
});

Deno.test("RemoteAccessSim serves wss with cert and key", async () => {
  await using sim = await RemoteAccessSim.start({
    cert: TEST_CERT,
    key: TEST_KEY,
  });
  assert.match(sim.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const session = sim.openSession();
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: port(sim),
    caCerts: [TEST_CERT],
  });
  try {
    await conn.write(upgradeRequest(session.key));
    await session.connected;
    const buffer = new Uint8Array(4096);
    const n = await conn.read(buffer);
    assert.ok(n !== null);
    const head = decoder.decode(buffer.subarray(0, n));
    assert.match(head, /^HTTP\/1\.1 101/);
    assert.match(head, /sec-websocket-protocol: binary/i);
  } finally {
    conn.close();
  }
  assert.equal((await session.closed).code, 1006);
});

// ---------------------------------------------------------------------------
// in-process sessions

Deno.test("RemoteAccessSim.openSession() carries 4 MiB each way intact", async () => {
  await using sim = await RemoteAccessSim.start();
  const session = sim.openSession();
  const device = connectDevice(sim, session.key);
  await device.opened;
  await session.connected;
  const up = randomBytes(4 * MiB);
  const down = randomBytes(4 * MiB);
  const receivedBySession = readAll(session.received);
  const receivedByDevice = device.receive(down.byteLength);
  sendFromDevice(device.ws, up);
  for (let i = 0; i < down.byteLength; i += 65536) {
    session.send(down.subarray(i, i + 65536));
  }
  assert.equal(await sha256(await receivedByDevice), await sha256(down));
  device.ws.close(1000, "done");
  assert.equal(await sha256(await receivedBySession), await sha256(up));
  assert.deepEqual(await session.closed, { code: 1000, reason: "done" });
  await device.closed;
});

Deno.test("ClientSession.send() queues bytes until the device connects and delivers them in order", async () => {
  await using sim = await RemoteAccessSim.start();
  const session = sim.openSession("fixed-key");
  assert.equal(session.key, "fixed-key");
  const parts = [encoder.encode("first,"), randomBytes(MiB + 17)];
  const reused = encoder.encode("third");
  session.send(parts[0]!);
  session.send(parts[1]!);
  session.send(reused);
  reused.fill(0); // the queue holds a copy
  const expected = concat([...parts, encoder.encode("third")]);
  const device = connectDevice(sim, session.key);
  const received = device.receive(expected.byteLength);
  await session.connected;
  assert.equal(await sha256(await received), await sha256(expected));
  session.close();
  await device.closed;
});

Deno.test("ClientSession.close() before the device connects delivers the queue, then closes", async () => {
  await using sim = await RemoteAccessSim.start();
  const session = sim.openSession();
  session.send(encoder.encode("last words"));
  session.close(3001, "bye");
  session.send(encoder.encode("discarded"));
  const device = connectDevice(sim, session.key);
  const received = device.receive(10);
  const closeEvent = await device.closed;
  assert.equal(decoder.decode(await received), "last words");
  assert.equal(closeEvent.code, 3001);
  assert.equal(closeEvent.reason, "bye");
  assert.deepEqual(await session.closed, { code: 3001, reason: "bye" });
});

Deno.test("ClientSession.close() sends a close frame after the bytes already sent", async () => {
  await using sim = await RemoteAccessSim.start();
  const session = sim.openSession();
  const device = connectDevice(sim, session.key);
  await session.connected;
  const data = randomBytes(2 * MiB);
  const received = device.receive(data.byteLength);
  session.send(data);
  session.close();
  assert.equal(await sha256(await received), await sha256(data));
  assert.equal((await device.closed).code, 1000);
  assert.deepEqual(await session.closed, { code: 1000, reason: "" });
  assert.deepEqual(await readAll(session.received), new Uint8Array());
});

Deno.test("ClientSession.received delivers every byte before it ends when the device closes", async () => {
  await using sim = await RemoteAccessSim.start();
  const session = sim.openSession();
  const device = connectDevice(sim, session.key);
  await device.opened;
  const data = randomBytes(MiB);
  sendFromDevice(device.ws, data);
  device.ws.close(4000, "target closed");
  assert.equal(
    await sha256(await readAll(session.received)),
    await sha256(data),
  );
  assert.deepEqual(await session.closed, {
    code: 4000,
    reason: "target closed",
  });
  await device.closed;
  // sending after the close is discarded, like WebSocket.send
  session.send(encoder.encode("late"));
});

Deno.test("ClientSession.drop() closes the device with 1011", async () => {
  await using sim = await RemoteAccessSim.start();
  const session = sim.openSession();
  const device = connectDevice(sim, session.key);
  await session.connected;
  session.drop();
  assert.equal((await device.closed).code, 1011);
  assert.equal((await session.closed).code, 1011);
});

Deno.test("ClientSession disposal before the device connects rejects connected and forgets the key", async () => {
  await using sim = await RemoteAccessSim.start();
  const session: ClientSession = sim.openSession();
  await session[Symbol.asyncDispose]();
  await assert.rejects(session.connected, /before the device connected/);
  assert.equal((await session.closed).code, 1006);
  const device = connectDevice(sim, session.key);
  await assert.rejects(device.opened);
  await device.closed;
  assert.equal((await sim.waitForHandshake(session.key)).status, 404);
});

Deno.test("RemoteAccessSim.close() closes connected devices with 1001 and is idempotent", async () => {
  const sim = await RemoteAccessSim.start();
  const session = sim.openSession();
  const device = connectDevice(sim, session.key);
  await session.connected;
  await Promise.all([sim.close(), sim.close()]);
  assert.equal((await device.closed).code, 1001);
  assert.equal((await session.closed).code, 1001);
  assert.throws(() => sim.openSession(), /simulator is closed/);
  assert.throws(() => sim.listen({ onRequest() {} }), /simulator is closed/);
});

// ---------------------------------------------------------------------------
// TCP listener

function port(sim: RemoteAccessSim): number {
  return Number(new URL(sim.url).port);
}

Deno.test("RemoteAccessSim.listen() bridges a TCP client to an echoing device", async () => {
  await using sim = await RemoteAccessSim.start();
  const devices: Device[] = [];
  const keys: string[] = [];
  await using listener = sim.listen({
    onRequest(key) {
      keys.push(key);
      devices.push(connectDevice(sim, key, { echo: true }));
    },
  });
  assert.equal(listener.hostname, "127.0.0.1");
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.port,
  });
  const data = randomBytes(4 * MiB);
  const echoed = readExactly(conn, data.byteLength);
  await writeAll(conn, data);
  assert.equal(await sha256(await echoed), await sha256(data));
  conn.close();
  const device = devices[0]!;
  const closeEvent = await device.closed;
  assert.equal(closeEvent.code, 1000);
  assert.equal(keys.length, 1);
  assert.match(keys[0]!, /^[0-9a-f-]{36}$/);
  assert.equal((await sim.waitForHandshake(keys[0]!)).status, 101);
});

Deno.test("RemoteAccessSim.listen() gives every TCP connection its own key", async () => {
  await using sim = await RemoteAccessSim.start();
  const keys: string[] = [];
  await using listener = sim.listen({
    onRequest(key) {
      keys.push(key);
      connectDevice(sim, key, { echo: true });
    },
  });
  const conns = await Promise.all(
    [1, 2, 3].map(() =>
      Deno.connect({ hostname: "127.0.0.1", port: listener.port })
    ),
  );
  await Promise.all(conns.map(async (conn, i) => {
    const message = encoder.encode(`hello ${i}`);
    await writeAll(conn, message);
    assert.deepEqual(await readExactly(conn, message.byteLength), message);
  }));
  assert.equal(new Set(keys).size, 3);
  for (const conn of conns) conn.close();
  await Promise.all(keys.map(async (key) => {
    assert.equal((await sim.waitForHandshake(key)).status, 101);
  }));
});

Deno.test("RemoteAccessSim.listen() queues client bytes until the device connects", async () => {
  await using sim = await RemoteAccessSim.start();
  const requested = Promise.withResolvers<string>();
  await using listener = sim.listen({ onRequest: requested.resolve });
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.port,
  });
  try {
    // more than the pre-connect bound: the simulator stops reading, then resumes
    const data = randomBytes(3 * MiB);
    await writeAll(conn, data.subarray(0, 65536));
    const rest = writeAll(conn, data.subarray(65536));
    const device = connectDevice(sim, await requested.promise);
    assert.equal(
      await sha256(await device.receive(data.byteLength)),
      await sha256(data),
    );
    await rest;
    device.ws.close();
    await device.closed;
  } finally {
    conn.close();
  }
});

Deno.test("RemoteAccessSim.listen() closes the TCP client after the device's last bytes", async () => {
  await using sim = await RemoteAccessSim.start();
  const data = randomBytes(MiB);
  const devices: Device[] = [];
  await using listener = sim.listen({
    onRequest(key) {
      const device = connectDevice(sim, key);
      devices.push(device);
      device.opened.then(() => {
        sendFromDevice(device.ws, data);
        device.ws.close(1000, "target closed");
      });
    },
  });
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.port,
  });
  try {
    assert.equal(await sha256(await readConn(conn)), await sha256(data));
    await devices[0]!.closed;
  } finally {
    conn.close();
  }
});

Deno.test("RemoteAccessSim.listen() close() ends its sessions and stops accepting", async () => {
  await using sim = await RemoteAccessSim.start();
  const devices: Device[] = [];
  const listener = sim.listen({
    onRequest(key) {
      devices.push(connectDevice(sim, key, { echo: true }));
    },
  });
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.port,
  });
  try {
    await writeAll(conn, encoder.encode("ping"));
    assert.equal(decoder.decode(await readExactly(conn, 4)), "ping");
    await listener.close();
    await listener.close();
    assert.equal((await devices[0]!.closed).code, 1001);
    assert.deepEqual(await readConn(conn), new Uint8Array());
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port: listener.port }),
    );
  } finally {
    conn.close();
  }
});

Deno.test("RemoteAccessSim.listen() closes the connection when onRequest throws", async () => {
  await using sim = await RemoteAccessSim.start();
  const errors: string[] = [];
  await using listener = sim.listen({
    onRequest() {
      throw new Error("broker down");
    },
    onError(error, key) {
      errors.push(`${key}: ${(error as Error).message}`);
    },
  });
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.port,
  });
  try {
    assert.deepEqual(await readConn(conn), new Uint8Array());
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /: broker down$/);
  } finally {
    conn.close();
  }
});

// ---------------------------------------------------------------------------

Deno.test("smartRest530() joins the fields and quotes where CSV needs it", () => {
  assert.equal(
    smartRest530("my-device", "127.0.0.1", 22, "eb5e9d13"),
    "530,my-device,127.0.0.1,22,eb5e9d13",
  );
  assert.equal(
    smartRest530('odd,"dev"', "::1", 5900, "k"),
    '530,"odd,""dev""",::1,5900,k',
  );
});
