/**
 * The MQTT client's connection (lib/mqtt/socket.ts, `brokerStream`) ends
 * as a `net.Socket` does: "close" exactly once on destroy or on the
 * broker's EOF, the connection freed even while the reader is held by
 * backpressure or the connection is still opening, and writes never cut
 * into each other. Against a real mosquitto and real TCP peers; Deno's
 * resource and op sanitizers stay on, so a leaked connection fails a test.
 */
import assert from "node:assert/strict";
import type { Duplex } from "node:stream";
import type { MqttClient } from "mqtt";
import { connectMqtt } from "../lib/mqtt/link.ts";
import { brokerStream } from "../lib/mqtt/socket.ts";
import {
  type InboundMessage,
  type OversizedMessage,
  remainingLength,
} from "../lib/mqtt/size_guard.ts";
import { deadline } from "../lib/util/deadline.ts";
import { freePort, startMosquitto } from "./system_helpers.ts";

/**
 * Generous bound for things that happen at once: the bug this guards
 * against held a client for the broker's 90 s keepalive.
 */
const PROMPTLY_MS = 10_000;

/** Counts a stream's "close" events. */
function closeCounter(stream: Duplex): () => number {
  let closes = 0;
  stream.on("close", () => closes++);
  return () => closes;
}

/** The next "close" of `stream` (resolves at once when already closed). */
function closedEvent(stream: Duplex): Promise<void> {
  if (stream.closed) return Promise.resolve();
  return new Promise((resolve) => stream.once("close", () => resolve()));
}

/** Resolves once `condition()` holds, checking on each macrotask turn. */
async function until(condition: () => boolean, what: string): Promise<void> {
  const end = Date.now() + PROMPTLY_MS;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** A TCP peer on loopback that accepts one connection. */
function peer():
  & { port: number; accepted: Promise<Deno.Conn> }
  & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    accepted,
    [Symbol.asyncDispose]: async () => {
      listener.close();
      try {
        (await accepted).close();
      } catch {
        // closed by the test, or never accepted
      }
    },
  };
}

/** True once the peer's side sees our close: EOF or a reset. */
async function peerSeesClose(conn: Deno.Conn): Promise<boolean> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    while ((await conn.read(buffer)) !== null) {
      // skip what was in flight
    }
  } catch {
    // a reset: we closed with unread data
  }
  return true;
}

/** A brokerStream over `open` with no size limit (the filter passes everything). */
function unguarded(open: () => Promise<Deno.Conn>) {
  return brokerStream({
    open,
    maxPayloadBytes: Infinity,
    onOversized: () => {},
  });
}

Deno.test("an MQTT client over brokerStream closes at once on every end, forced or graceful, and mosquitto sees it go", async () => {
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-socket-" });
  const port = freePort();
  const mosquitto = await startMosquitto(dir, port);
  try {
    const rounds = 24;
    for (let i = 0; i < rounds; i++) {
      const forced = i % 2 === 0;
      const clientId = `socket-test-${i}`;
      const client = connectMqtt({
        host: "127.0.0.1",
        port,
        clientId,
        clean: true,
        reconnectPeriod: 0,
        guard: { maxPayloadBytes: 1024, onOversized: () => {} },
      });
      await deadline(
        new Promise<void>((resolve) => client.once("connect", () => resolve())),
        PROMPTLY_MS,
        `round ${i}: no CONNACK`,
      );
      const closes = closeCounter(client.stream);
      const closed = closedEvent(client.stream);
      // Traffic both ways first: a message to ourselves and its PUBACK.
      const topic = `socket-test/${i}`;
      await client.subscribeAsync(topic, { qos: 1 });
      const echoed = new Promise<void>((resolve) =>
        client.once("message", () => resolve())
      );
      await client.publishAsync(topic, "x".repeat(100), { qos: 1 });
      await deadline(echoed, PROMPTLY_MS, `round ${i}: no message`);

      await deadline(
        client.endAsync(forced),
        PROMPTLY_MS,
        `round ${i} (${forced ? "forced" : "graceful"}): end() hung`,
      );
      await deadline(closed, PROMPTLY_MS, `round ${i}: no close`);
      // The broker's side is gone too (it logs each client's going).
      await mosquitto.waitForOutput(
        new RegExp(`Client ${clientId} (closed its connection|disconnected)`),
        PROMPTLY_MS,
      );
      // One more macrotask turn: a second "close" would have come by now.
      await new Promise((resolve) => setTimeout(resolve, 0));
      assert.equal(closes(), 1, `round ${i}: "close" events`);
    }
  } finally {
    await mosquitto.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a reader held by backpressure: destroy() closes once and frees the connection", async () => {
  await using tcp = peer();
  const stream = unguarded(() =>
    Deno.connect({ hostname: "127.0.0.1", port: tcp.port })
  );
  const closes = closeCounter(stream);
  const server = await tcp.accepted;
  // Nobody reads the stream: it buffers up to its high-water mark, then
  // stops reading the connection (the rest waits in the kernel).
  const sent = server.write(new Uint8Array(1024 * 1024)).catch(() => 0);
  await until(
    () => stream.readableLength >= stream.readableHighWaterMark,
    "the stream's buffer to fill",
  );
  const closed = closedEvent(stream);
  stream.destroy();
  await deadline(closed, PROMPTLY_MS, "no close after destroy()");
  await sent;
  assert.ok(await deadline(peerSeesClose(server), PROMPTLY_MS, "peer"));
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(closes(), 1);
});

Deno.test("a reader held by backpressure sees the peer's EOF once it reads again: all bytes, end, one close", async () => {
  await using tcp = peer();
  const stream = unguarded(() =>
    Deno.connect({ hostname: "127.0.0.1", port: tcp.port })
  );
  const closes = closeCounter(stream);
  const server = await tcp.accepted;
  const total = 512 * 1024;
  const sent = (async () => {
    let at = 0;
    const data = new Uint8Array(total);
    while (at < total) at += await server.write(data.subarray(at));
    await server.closeWrite();
  })();
  await until(
    () => stream.readableLength >= stream.readableHighWaterMark,
    "the stream's buffer to fill",
  );
  const ended = new Promise<void>((resolve) => stream.once("end", resolve));
  const closed = closedEvent(stream);
  let received = 0;
  stream.on("data", (chunk: Uint8Array) => received += chunk.length);
  await deadline(sent, PROMPTLY_MS, "the peer's writes");
  await deadline(ended, PROMPTLY_MS, "no end after the peer's EOF");
  await deadline(closed, PROMPTLY_MS, "no close after end");
  assert.equal(received, total);
  // Our side closed the connection (allowHalfOpen: false, as net.Socket).
  assert.ok(await deadline(peerSeesClose(server), PROMPTLY_MS, "peer"));
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(closes(), 1);
});

Deno.test("brokerStream destroyed while its connection is still opening: one close, no connect, the connection closed once open", async () => {
  await using tcp = peer();
  const release = Promise.withResolvers<void>();
  const stream = unguarded(async () => {
    await release.promise;
    return await Deno.connect({ hostname: "127.0.0.1", port: tcp.port });
  });
  const closes = closeCounter(stream);
  let connected = false;
  stream.on("connect", () => connected = true);
  const closed = closedEvent(stream);
  stream.destroy();
  await deadline(closed, PROMPTLY_MS, "no close after destroy()");
  release.resolve();
  const server = await tcp.accepted;
  assert.ok(await deadline(peerSeesClose(server), PROMPTLY_MS, "peer"));
  assert.equal(connected, false);
  assert.equal(closes(), 1);
});

Deno.test("brokerStream whose connection is refused: an error with a code, then one close", async () => {
  const port = freePort();
  const stream = unguarded(() => Deno.connect({ hostname: "127.0.0.1", port }));
  const closes = closeCounter(stream);
  const failed = new Promise<Error & { code?: string }>((resolve) =>
    stream.once("error", resolve)
  );
  const closed = closedEvent(stream);
  const error = await deadline(failed, PROMPTLY_MS, "no error");
  await deadline(closed, PROMPTLY_MS, "no close after the error");
  assert.equal(error.code, "ECONNREFUSED");
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(closes(), 1);
});

/**
 * A connection that takes at most 3 bytes per write, a turn apart, and
 * serves reads from `incoming`: partial writes, as a busy socket makes them.
 */
function slowConn(incoming: Uint8Array[], perWrite = 3): {
  conn: Deno.Conn;
  written: number[];
  writes: number[];
} {
  const written: number[] = [];
  /** Length of the data of each write() call. */
  const writes: number[] = [];
  let more = Promise.withResolvers<void>();
  const conn = {
    async write(data: Uint8Array) {
      writes.push(data.length);
      await Promise.resolve();
      const n = Math.min(perWrite, data.length);
      written.push(...data.subarray(0, n));
      return n;
    },
    async read(buffer: Uint8Array) {
      while (incoming.length === 0) await more.promise;
      const chunk = incoming.shift()!;
      buffer.set(chunk);
      return chunk.length;
    },
    closeWrite: () => Promise.resolve(),
    close() {
      incoming.push(new Uint8Array(0));
      more.resolve();
      more = Promise.withResolvers<void>();
    },
  };
  return { conn: conn as unknown as Deno.Conn, written, writes };
}

Deno.test("brokerStream queues the size filter's PUBACK behind a write in progress: no write cuts into another", async () => {
  const incoming: Uint8Array[] = [];
  const { conn, written } = slowConn(incoming);
  const oversized = Promise.withResolvers<void>();
  const stream = brokerStream({
    open: () => Promise.resolve(conn),
    maxPayloadBytes: 10,
    onOversized: () => oversized.resolve(),
  });
  const closed = closedEvent(stream);
  stream.write(new Uint8Array(60).fill(0xaa));
  // A QoS 1 PUBLISH (id 0x1234) with 100 bytes of payload, over the limit.
  const topic = new TextEncoder().encode("t");
  const body = [0, topic.length, ...topic, 0x12, 0x34, ...new Uint8Array(100)];
  incoming.push(
    new Uint8Array([0x32, ...remainingLength(body.length), ...body]),
  );
  await deadline(oversized.promise, PROMPTLY_MS, "the filter did not report");
  await until(() => written.length === 64, "both writes");
  stream.destroy();
  await closed;
  assert.deepEqual(written, [
    ...new Array(60).fill(0xaa),
    0x40,
    0x02,
    0x12,
    0x34,
  ]);
});

Deno.test("brokerStream sends a packet that MQTT.js writes in pieces (cork/uncork) in one write", async () => {
  const { conn, written, writes } = slowConn([], Infinity);
  const stream = unguarded(() => Promise.resolve(conn));
  const closed = closedEvent(stream);
  // A PUBLISH as mqtt-packet writes it: header, length, topic, payload.
  stream.cork();
  for (const piece of [[0x30], [0x05], [0x00, 0x01], [0x74], [0x68, 0x69]]) {
    stream.write(new Uint8Array(piece));
  }
  stream.uncork();
  await until(() => written.length === 7, "the packet");
  stream.destroy();
  await closed;
  assert.deepEqual(writes, [7]);
  assert.deepEqual(written, [0x30, 0x05, 0x00, 0x01, 0x74, 0x68, 0x69]);
});

/**
 * A mosquitto (with `extraConfig` in its configuration), a client of it
 * whose guard takes its messages, subscribed to `filter`, and a plain
 * publisher; disposing stops all three.
 */
async function takingClient(options: {
  readonly filter: string;
  readonly onMessage: (message: InboundMessage) => void;
  readonly onOversized?: (message: OversizedMessage) => void;
  readonly extraConfig?: readonly string[];
  readonly keepalive?: number;
}): Promise<
  { client: MqttClient; publisher: MqttClient } & AsyncDisposable
> {
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-socket-" });
  const port = freePort();
  const mosquitto = await startMosquitto(dir, port, options.extraConfig);
  const common = { host: "127.0.0.1", port, clean: true, reconnectPeriod: 0 };
  const client = connectMqtt({
    ...common,
    clientId: "socket-test-take",
    ...(options.keepalive ? { keepalive: options.keepalive } : {}),
    guard: {
      maxPayloadBytes: 1024,
      onOversized: options.onOversized ?? (() => {}),
      onMessage: options.onMessage,
    },
  });
  const publisher = connectMqtt({
    ...common,
    clientId: "socket-test-publisher",
  });
  const dispose = async () => {
    await Promise.all([client.endAsync(true), publisher.endAsync(true)]);
    await mosquitto.stop();
    await Deno.remove(dir, { recursive: true });
  };
  try {
    await deadline(
      new Promise<void>((resolve) => client.once("connect", () => resolve())),
      PROMPTLY_MS,
      "no CONNACK",
    );
    await client.subscribeAsync(options.filter, { qos: 1 });
  } catch (error) {
    await dispose();
    throw error;
  }
  return { client, publisher, [Symbol.asyncDispose]: dispose };
}

Deno.test("a client whose guard takes messages gets each from the socket in order, acknowledges QoS 1 ones, and MQTT.js sees none", async () => {
  const taken: { topic: string; text: string; qos: number }[] = [];
  const oversized: OversizedMessage[] = [];
  // One QoS 1 message in flight at a time: the next comes only after our
  // PUBACK of the last, so receiving them all shows every PUBACK went out.
  await using clients = await takingClient({
    filter: "take/#",
    extraConfig: ["max_inflight_messages 1"],
    onOversized: (m) => oversized.push(m),
    onMessage: (m) =>
      taken.push({
        topic: m.topic,
        text: new TextDecoder().decode(m.payload),
        qos: m.qos,
      }),
  });
  const { client, publisher } = clients;
  let emitted = 0;
  client.on("message", () => emitted++);
  const sent: { topic: string; text: string; qos: 0 | 1 }[] = [
    { topic: "take/a", text: "first", qos: 1 },
    { topic: "take/b", text: "second", qos: 0 },
    { topic: "take/c", text: "x".repeat(1024), qos: 1 },
    { topic: "take/big", text: "y".repeat(5000), qos: 1 },
    { topic: "take/d", text: "é ü", qos: 1 },
    { topic: "take/e", text: "", qos: 0 },
    { topic: "take/f", text: "last", qos: 1 },
  ];
  for (const m of sent) {
    await publisher.publishAsync(m.topic, m.text, { qos: m.qos });
  }
  await until(() => taken.length === 6, "six messages taken");
  assert.deepEqual(taken, sent.filter((m) => m.topic !== "take/big"));
  assert.equal(oversized.length, 1);
  const [{ packetId, ...big }] = oversized as [OversizedMessage];
  assert.deepEqual(big, { topic: "take/big", bytes: 5000, qos: 1 });
  assert.ok(packetId > 0, "the QoS 1 message's packet id");
  assert.equal(emitted, 0, 'MQTT.js "message" events');
  // The client still works: its own publish is acknowledged by the broker.
  await deadline(
    client.publishAsync("other/topic", "ok", { qos: 1 }),
    PROMPTLY_MS,
    "no PUBACK for the client's own publish",
  );
});

Deno.test("a client whose guard takes messages keeps its connection past several keepalive periods while messages stream in (PINGRESP reaches MQTT.js)", async () => {
  let taken = 0;
  await using clients = await takingClient({
    filter: "keepalive/#",
    keepalive: 1,
    onMessage: () => taken++,
  });
  const { client, publisher } = clients;
  let closes = 0;
  let pingResponses = 0;
  client.on("close", () => closes++);
  client.on("packetreceive", (packet) => {
    if (packet.cmd === "pingresp") pingResponses++;
  });
  // Messages keep coming for three keepalive periods: MQTT.js never sees
  // them, so only the PINGRESPs passed on to it keep it from timing out.
  let sent = 0;
  while (pingResponses < 3) {
    assert.ok(sent < 100, `${pingResponses} PINGRESPs in 10 s`);
    await publisher.publishAsync(`keepalive/${sent++}`, "x", { qos: 1 });
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await until(() => taken === sent, "every message taken");
  assert.equal(closes, 0, "the client's connection closed");
  assert.ok(client.connected);
});
