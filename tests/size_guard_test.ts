import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type OversizedMessage,
  pubAck,
  PublishSizeFilter,
  remainingLength,
} from "../lib/mqtt/size_guard.ts";

const encoder = new TextEncoder();

/** An MQTT 3.1.1 PUBLISH packet. */
function publish(
  topic: string,
  payloadBytes: number,
  qos: 0 | 1,
  packetId = 1,
): Uint8Array {
  const name = encoder.encode(topic);
  const id = qos > 0 ? [packetId >> 8, packetId & 0xff] : [];
  const length = 2 + name.length + id.length + payloadBytes;
  const head = [
    0x30 | (qos << 1),
    ...remainingLength(length),
    name.length >> 8,
    name.length & 0xff,
    ...name,
    ...id,
  ];
  const packet = new Uint8Array(head.length + payloadBytes);
  packet.set(head);
  packet.fill(0x61, head.length);
  return packet;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Feeds `stream` to a filter in pieces cut at `cuts`; returns what passed and what was dropped. */
function run(
  limit: number,
  stream: Uint8Array,
  cuts: readonly number[] = [],
): { passed: Uint8Array; dropped: OversizedMessage[] } {
  const dropped: OversizedMessage[] = [];
  const filter = new PublishSizeFilter(limit, (m) => dropped.push(m));
  const out: Uint8Array[] = [];
  let from = 0;
  for (const cut of [...cuts].sort((a, b) => a - b).concat(stream.length)) {
    out.push(...filter.push(stream.subarray(from, cut)));
    from = cut;
  }
  return { passed: concat(out), dropped };
}

Deno.test("PublishSizeFilter passes packets within the limit byte for byte", () => {
  const packets = concat([
    new Uint8Array([0x20, 0x02, 0x00, 0x00]), // CONNACK
    publish("c8y/s/ds", 100, 1, 7),
    new Uint8Array([0xd0, 0x00]), // PINGRESP
    publish("c8y/s/ds", 1000, 0),
  ]);
  const { passed, dropped } = run(1000, packets);
  assert.deepEqual(passed, packets);
  assert.deepEqual(dropped, []);
});

Deno.test("PublishSizeFilter drops a PUBLISH over the limit and reports topic, size, QoS and id", () => {
  const big = publish("c8y/devicecontrol/notifications", 5000, 1, 0x1234);
  const after = publish("c8y/s/ds", 10, 0);
  const { passed, dropped } = run(4096, concat([big, after]));
  assert.deepEqual(passed, after);
  assert.deepEqual(dropped, [{
    topic: "c8y/devicecontrol/notifications",
    bytes: 5000,
    qos: 1,
    packetId: 0x1234,
  }]);
});

Deno.test("PublishSizeFilter passes a PUBLISH whose payload is exactly the limit (its packet is larger)", () => {
  const packet = publish("a/long/topic/name", 4096, 1);
  const { passed, dropped } = run(4096, packet, [1, 2, 3, 10]);
  assert.deepEqual(passed, packet);
  assert.deepEqual(dropped, []);
});

Deno.test("PublishSizeFilter never holds more than a header and a topic of a dropped message", () => {
  const limit = 1024;
  const filter = new PublishSizeFilter(limit, () => {});
  // A 64 MiB PUBLISH announced, then fed 1 MiB at a time: nothing passes.
  const announce = new Uint8Array([
    0x30,
    ...remainingLength(2 + 1 + 64 * 1024 * 1024),
    0,
    1,
    0x74,
  ]);
  assert.deepEqual(filter.push(announce), []);
  const chunk = new Uint8Array(1024 * 1024);
  for (let i = 0; i < 64; i++) assert.deepEqual(filter.push(chunk), []);
  const next = publish("x", 3, 0);
  assert.deepEqual(concat(filter.push(next)), next);
});

Deno.test("PublishSizeFilter gives up filtering (passes all) on a malformed remaining length", () => {
  const garbage = new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff, 0x01, 9, 9]);
  const { passed, dropped } = run(16, garbage);
  assert.deepEqual(passed, garbage);
  assert.deepEqual(dropped, []);
});

Deno.test("pubAck() encodes a PUBACK for the packet id", () => {
  assert.deepEqual(pubAck(0x0102), new Uint8Array([0x40, 2, 1, 2]));
});

Deno.test("PublishSizeFilter: any packets, cut anywhere: exactly the small ones pass, the large ones are reported", () => {
  const limit = 300;
  const packet = fc.oneof(
    fc.record({
      topic: fc.string({ minLength: 1, maxLength: 40 }),
      bytes: fc.integer({ min: 0, max: 700 }),
      qos: fc.constantFrom(0 as const, 1 as const),
      packetId: fc.integer({ min: 1, max: 65535 }),
    }),
    fc.constantFrom(
      new Uint8Array([0x90, 0x03, 0, 1, 1]), // SUBACK
      new Uint8Array([0x40, 0x02, 0, 5]), // PUBACK
      new Uint8Array([0xd0, 0x00]), // PINGRESP
    ),
  );
  fc.assert(
    fc.property(
      fc.array(packet, { maxLength: 12 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      (packets, rawCuts) => {
        const bytes = packets.map((p) =>
          p instanceof Uint8Array
            ? p
            : publish(p.topic, p.bytes, p.qos, p.packetId)
        );
        const stream = concat(bytes);
        const cuts = rawCuts.map((c) => c % (stream.length + 1));
        const { passed, dropped } = run(limit, stream, cuts);
        const expected = packets.filter((p) =>
          p instanceof Uint8Array || p.bytes <= limit
        ).map((p) =>
          p instanceof Uint8Array
            ? p
            : publish(p.topic, p.bytes, p.qos, p.packetId)
        );
        assert.deepEqual(passed, concat(expected));
        assert.deepEqual(
          dropped,
          packets.flatMap((p) =>
            p instanceof Uint8Array || p.bytes <= limit ? [] : [{
              topic: p.topic,
              bytes: p.bytes,
              qos: p.qos,
              packetId: p.qos > 0 ? p.packetId : 0,
            }]
          ),
        );
      },
    ),
    { numRuns: 300 },
  );
});
