/**
 * MqttLink when the broker numbers QoS 1 messages and drops them (as
 * mosquitto does with its queue for the client full, docs/hostile-mqtt.md):
 * the link says so in its log and, past half of mosquitto's in-flight
 * slots, connects again. The broker here is a minimal MQTT 3.1.1 peer on
 * loopback that skips packet ids on purpose, which mosquitto does only
 * under a flood that outruns its client.
 */
import assert from "node:assert/strict";
import { MqttLink } from "../lib/mqtt/link.ts";
import { remainingLength } from "../lib/mqtt/size_guard.ts";
import { logger, setupLogging } from "../lib/util/log.ts";
import { deadline } from "../lib/util/deadline.ts";
import { rigToml, testConfig } from "./harness.ts";

const encoder = new TextEncoder();

/** A QoS 1 PUBLISH of `text` on `topic` with packet id `id`. */
function publish(topic: string, text: string, id: number): Uint8Array {
  const name = encoder.encode(topic);
  const payload = encoder.encode(text);
  const body = [
    name.length >> 8,
    name.length & 0xff,
    ...name,
    id >> 8,
    id & 0xff,
    ...payload,
  ];
  return new Uint8Array([0x32, ...remainingLength(body.length), ...body]);
}

/** Reads whole MQTT packets from `conn` (type byte and body). */
async function* packets(
  conn: Deno.Conn,
): AsyncGenerator<{ type: number; body: Uint8Array }> {
  let buffered = new Uint8Array(0);
  const chunk = new Uint8Array(16 * 1024);
  for (;;) {
    // A whole packet buffered: hand it over.
    let length = 0;
    let factor = 1;
    let i = 1;
    let complete = false;
    for (; i < buffered.length && i <= 4; i++) {
      length += (buffered[i]! & 0x7f) * factor;
      factor *= 128;
      if (!(buffered[i]! & 0x80)) {
        complete = buffered.length >= i + 1 + length;
        break;
      }
    }
    if (complete) {
      yield {
        type: buffered[0]! >> 4,
        body: buffered.slice(i + 1, i + 1 + length),
      };
      buffered = buffered.slice(i + 1 + length);
      continue;
    }
    const n = await conn.read(chunk);
    if (n === null) return;
    const next = new Uint8Array(buffered.length + n);
    next.set(buffered);
    next.set(chunk.subarray(0, n), buffered.length);
    buffered = next;
  }
}

/** The client id in a CONNECT's body (MQTT 3.1.1: after the 10-byte variable header). */
function clientIdOf(body: Uint8Array): string {
  const length = (body[10]! << 8) | body[11]!;
  return new TextDecoder().decode(body.subarray(12, 12 + length));
}

Deno.test("MqttLink: QoS 1 messages the broker numbered and dropped are logged, and after 10 the link connects again", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const config = testConfig(rigToml(port, "http://127.0.0.1:1"));
  const mainId = config.mqtt.clientId;
  const lines: string[] = [];
  setupLogging({ level: "warn", format: "text", write: (l) => lines.push(l) });
  const connects: string[] = [];
  const received: string[] = [];
  const secondConnect = Promise.withResolvers<void>();
  const conns: Deno.Conn[] = [];
  /** Plays the broker on one connection. */
  const serve = async (conn: Deno.Conn) => {
    let id = "";
    try {
      for await (const packet of packets(conn)) {
        if (packet.type === 1) { // CONNECT
          id = clientIdOf(packet.body);
          connects.push(id);
          await conn.write(new Uint8Array([0x20, 0x02, 0x00, 0x00]));
          if (
            id === mainId && connects.filter((c) => c === mainId).length === 2
          ) {
            secondConnect.resolve();
          }
        } else if (packet.type === 8) { // SUBSCRIBE: grant QoS 1 to each filter
          const topics = packet.body.length - 2;
          const granted: number[] = [];
          for (let at = 2; at < 2 + topics;) {
            const n = (packet.body[at]! << 8) | packet.body[at + 1]!;
            at += 2 + n + 1;
            granted.push(1);
          }
          await conn.write(
            new Uint8Array([
              0x90,
              2 + granted.length,
              packet.body[0]!,
              packet.body[1]!,
              ...granted,
            ]),
          );
          if (id === mainId && connects.length <= 2) {
            // Ids 1 and 2, then 4 (3 dropped), then 14 (5..13 dropped):
            // ten lost in all.
            for (const n of [1, 2, 4, 14]) {
              await conn.write(publish("c8y/s/ds", `511,dev,${n}`, n));
            }
          }
        } else if (packet.type === 4) { // PUBACK
          received.push(`puback ${(packet.body[0]! << 8) | packet.body[1]!}`);
        } else if (packet.type === 12) { // PINGREQ
          await conn.write(new Uint8Array([0xd0, 0x00]));
        } else if (packet.type === 14) { // DISCONNECT
          return;
        }
      }
    } catch {
      // the link closed this connection
    } finally {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  };
  const serving: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      serving.push(serve(conn));
    }
  })();
  const link = MqttLink.connect({
    config,
    log: logger("test"),
    onMessage: (_topic, payload) => received.push(payload),
    health: false,
    operations: true,
  });
  try {
    await deadline(
      secondConnect.promise,
      10_000,
      "the link did not connect again",
    );
    const warnings = lines.filter((l) => l.includes("QoS 1 message(s)"));
    assert.equal(warnings.length, 2, warnings.join("\n"));
    assert.match(
      warnings[0]!,
      /dropped 1 QoS 1 message\(s\) .*\(1 on this connection\)/,
    );
    assert.match(
      warnings[1]!,
      /dropped 9 QoS 1 message\(s\) .*\(10 on this connection\).*reconnecting/,
    );
    assert.ok(!warnings[0]!.includes("reconnecting"));
    // What did arrive was handled, although the connection it came on was
    // closed right after the last of it.
    await deadline(
      (async () => {
        while (!received.includes("511,dev,14")) {
          await new Promise((r) => setTimeout(r, 10));
        }
      })(),
      10_000,
      `the messages that came were not all handled: ${received.join(" ")}`,
    );
    assert.deepEqual(received.filter((r) => r.startsWith("511")), [
      "511,dev,1",
      "511,dev,2",
      "511,dev,4",
      "511,dev,14",
    ]);
  } finally {
    await link.close();
    setupLogging({ level: "error", format: "text" });
    listener.close();
    await accepting.catch(() => {});
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // closed
      }
    }
    await Promise.all(serving);
  }
});
