/**
 * Test rig: embedded broker, cloud simulator, TCP targets and an MQTT
 * observer, each created with its cleanup registered on one stack.
 *
 * @module
 */
import mqtt from "mqtt";
import { noDelay } from "../lib/mqtt/link.ts";
import { type Config, parseConfig } from "../lib/config/config.ts";
import { type EmbeddedBroker, startBroker } from "../lib/sim/broker.ts";
import {
  RemoteAccessSim,
  type RemoteAccessSimOptions,
} from "../lib/sim/cloud.ts";

/** Builds a Config from TOML text the way loadConfig() would. */
export function testConfig(toml: string): Config {
  return parseConfig({
    file: "test.toml",
    text: toml,
    tedgeFile: null,
    tedgeText: null,
  });
}

/** TOML for an agent pointed at the rig's broker and simulator. */
export function rigToml(
  brokerPort: number,
  simUrl: string,
  options: { allow?: string[]; tunnel?: string; c8y?: string; log?: string } =
    {},
): string {
  const allow = (options.allow ?? ["127.0.0.1:*"]).map((a) => JSON.stringify(a))
    .join(", ");
  return `
[mqtt]
host = "127.0.0.1"
port = ${brokerPort}
client_id = "c8y-tunnel-test-${crypto.randomUUID().slice(0, 8)}"
[c8y]
url = "${simUrl}"
device_id = "test-device"
auth = "none"
${options.c8y ?? ""}
[tunnel]
allow = [${allow}]
${options.tunnel ?? ""}
[log]
level = "warn"
${options.log ?? ""}
`;
}

/** One message seen by the observer. */
export interface Seen {
  readonly topic: string;
  readonly payload: string;
}

/** An MQTT client that records what it sees and waits for messages. */
export class Observer {
  readonly client: mqtt.MqttClient;
  readonly seen: Seen[] = [];
  #waiters: { match: (m: Seen) => boolean; resolve: (m: Seen) => void }[] = [];

  private constructor(client: mqtt.MqttClient) {
    this.client = client;
    client.on("message", (topic, payload) => {
      const m = { topic, payload: new TextDecoder().decode(payload) };
      this.seen.push(m);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.match(m)) return true;
        w.resolve(m);
        return false;
      });
    });
  }

  /** Connects to the broker and subscribes to `topics`. */
  static async connect(port: number, topics: string[]): Promise<Observer> {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      clientId: `observer-${crypto.randomUUID().slice(0, 8)}`,
      reconnectPeriod: 100,
    });
    noDelay(client);
    client.on("connect", () => noDelay(client));
    const observer = new Observer(client);
    await client.subscribeAsync(topics, { qos: 1 });
    return observer;
  }

  /**
   * Connects with npm `mqtt` options (e.g. a TLS broker's
   * `clientOptions()`, see tests/mosquitto_tls.ts) and subscribes to `topics`.
   */
  static async connectWith(
    options: mqtt.IClientOptions,
    topics: string[],
  ): Promise<Observer> {
    const client = await mqtt.connectAsync({
      clientId: `observer-${crypto.randomUUID().slice(0, 8)}`,
      reconnectPeriod: 0,
      ...options,
    });
    const observer = new Observer(client);
    await client.subscribeAsync(topics, { qos: 1 });
    return observer;
  }

  /** Resolves with the first message (seen before or after the call) that matches. */
  waitFor(match: (m: Seen) => boolean): Promise<Seen> {
    const earlier = this.seen.find(match);
    if (earlier) return Promise.resolve(earlier);
    return new Promise((resolve) => this.#waiters.push({ match, resolve }));
  }

  /** Messages on `topic`, in order. */
  on(topic: string): string[] {
    return this.seen.filter((m) => m.topic === topic).map((m) => m.payload);
  }

  async publish(topic: string, payload: string): Promise<void> {
    await this.client.publishAsync(topic, payload, { qos: 1 });
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

/** A TCP server on loopback; `handle` runs per connection. */
export function tcpServer(
  handle: (conn: Deno.Conn) => Promise<void>,
): { port: number; accepted: () => number; close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  let accepted = 0;
  const loop = (async () => {
    for await (const conn of listener) {
      accepted++;
      conns.add(conn);
      const task = handle(conn).catch(() => {}).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed by the handler */ }
      });
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    accepted: () => accepted,
    close: async () => {
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

/** A connected loopback TCP pair: `near` for the code under test, `far` for the test. */
export async function tcpPair(): Promise<{ near: Deno.Conn; far: Deno.Conn }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const near = await Deno.connect({
    hostname: "127.0.0.1",
    port: (listener.addr as Deno.NetAddr).port,
  });
  const far = await accepted;
  listener.close();
  return { near, far };
}

/** Echoes every byte back. */
export async function echo(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return;
    let offset = 0;
    while (offset < n) offset += await conn.write(buffer.subarray(offset, n));
  }
}

/** Deterministic pseudo-random bytes (fast, no crypto). */
export function pseudoRandomBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * Reads an HTTP request head from `conn` up to and with its blank line, for
 * loopback stand-ins (proxies, raw WebSocket servers). When the peer closes
 * first: what came so far (without the blank line).
 */
export async function readHttpHead(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(64 * 1024);
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) break;
    head += new TextDecoder().decode(buffer.subarray(0, n));
  }
  return head;
}

/** The `101 Switching Protocols` answer (subprotocol `binary`) to the WebSocket handshake in `head` (RFC 6455 §4.2.2). */
export async function webSocketAnswer(head: string): Promise<Uint8Array> {
  const key = /sec-websocket-key: *(\S+)/i.exec(head)?.[1] ?? "";
  const digest = await crypto.subtle.digest(
    "SHA-1",
    new TextEncoder().encode(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
  );
  const accept = btoa(String.fromCharCode(...new Uint8Array(digest)));
  return new TextEncoder().encode(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: binary\r\n\r\n`,
  );
}

/** Hex SHA-256 of some bytes. */
export async function sha256(data: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    data as Uint8Array<ArrayBuffer>,
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** Reads a stream to its end into one array. */
export async function readAll(
  stream: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of stream) {
    chunks.push(chunk);
    total += chunk.length;
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Reads from a stream until `n` bytes came (or it ended). */
export async function readBytes(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  n: number,
): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let offset = 0;
  while (offset < n) {
    const { value, done } = await reader.read();
    if (done) return out.subarray(0, offset);
    out.set(value.subarray(0, n - offset), offset);
    offset += value.length;
  }
  return out;
}

/** Broker + simulator + observer, torn down together. */
export interface Rig extends AsyncDisposable {
  readonly broker: EmbeddedBroker;
  readonly sim: RemoteAccessSim;
  readonly observer: Observer;
  /** Publishes a 530 for `key` on c8y/s/ds. */
  request530(
    key: string,
    host: string,
    port: number,
    deviceId?: string,
  ): Promise<void>;
  /** Waits for a status line on c8y/s/us (or a child's topic). */
  status(payload: string, deviceId?: string): Promise<Seen>;
  /** Adds a cleanup step, run in reverse order. */
  defer(fn: () => Promise<void> | void): void;
}

/** Starts a broker, a simulator and an observer of status and health topics. */
export async function startRig(
  simOptions: RemoteAccessSimOptions = {},
): Promise<Rig> {
  const cleanups: (() => Promise<void> | void)[] = [];
  const broker = await startBroker();
  cleanups.push(() => broker.close());
  const sim = await RemoteAccessSim.start(simOptions);
  cleanups.push(() => sim.close());
  const observer = await Observer.connect(broker.port, [
    "c8y/s/us",
    "c8y/s/us/+",
    "c8y/s/uat",
    "te/#",
  ]);
  cleanups.push(() => observer.close());
  return {
    broker,
    sim,
    observer,
    request530: (key, host, port, deviceId = "test-device") =>
      observer.publish("c8y/s/ds", `530,${deviceId},${host},${port},${key}`),
    status: (payload, deviceId) => {
      const topic = deviceId ? `c8y/s/us/${deviceId}` : "c8y/s/us";
      return observer.waitFor((m) =>
        m.topic === topic && m.payload === payload
      );
    },
    defer: (fn) => cleanups.push(fn),
    async [Symbol.asyncDispose]() {
      for (const fn of cleanups.reverse()) await fn();
    },
  };
}

/**
 * A broker that accepts one client, answers its CONNECT with a CONNACK and
 * then acknowledges nothing (a SUBACK or PUBACK that never comes).
 */
export function muteBroker(): { readonly port: number } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    const buffer = new Uint8Array(4096);
    try {
      await conn.read(buffer); // CONNECT
      await conn.write(new Uint8Array([0x20, 0x02, 0x00, 0x00])); // CONNACK
      while ((await conn.read(buffer)) !== null) {
        // SUBSCRIBE, PUBLISH, …: never answered
      }
    } catch {
      // the client reset the connection
    } finally {
      conn.close();
    }
  })();
  return {
    port: listener.addr.port,
    async [Symbol.asyncDispose]() {
      listener.close();
      await served.catch(() => {});
    },
  };
}
