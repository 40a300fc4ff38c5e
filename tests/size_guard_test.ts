import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type InboundMessage,
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
  for (let i = head.length; i < packet.length; i++) packet[i] = i & 0xff;
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

/** A taken message, its payload copied (the filter's view is only valid during the call). */
interface Taken {
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly qos: number;
  readonly packetId: number;
}

/**
 * Feeds `stream` to a filter in pieces cut at `cuts`; returns what passed,
 * what was dropped and, with `take`, what was taken.
 */
function run(
  limit: number,
  stream: Uint8Array,
  cuts: readonly number[] = [],
  take = false,
): { passed: Uint8Array; dropped: OversizedMessage[]; taken: Taken[] } {
  const dropped: OversizedMessage[] = [];
  const taken: Taken[] = [];
  const onOversized = (m: OversizedMessage) => dropped.push(m);
  const filter = new PublishSizeFilter(limit, {
    onOversized,
    ...(take
      ? {
        take: (m: InboundMessage) =>
          taken.push({ ...m, payload: m.payload.slice() }),
      }
      : {}),
  });
  const out: Uint8Array[] = [];
  let from = 0;
  for (const cut of [...cuts].sort((a, b) => a - b).concat(stream.length)) {
    out.push(...filter.push(stream.subarray(from, cut)));
    from = cut;
  }
  return { passed: concat(out), dropped, taken };
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
  const filter = new PublishSizeFilter(limit, { onOversized: () => {} });
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

/** Packets for the property tests: PUBLISH descriptions and raw other packets. */
const anyPacket = fc.oneof(
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
type AnyPacket = typeof anyPacket extends fc.Arbitrary<infer T> ? T : never;

function bytesOf(p: AnyPacket): Uint8Array {
  return p instanceof Uint8Array
    ? p
    : publish(p.topic, p.bytes, p.qos, p.packetId);
}

/** The payload bytes of the PUBLISH that `p` describes. */
function payloadOf(
  p: Exclude<AnyPacket, Uint8Array>,
): Uint8Array {
  const packet = publish(p.topic, p.bytes, p.qos, p.packetId);
  return packet.slice(packet.length - p.bytes);
}

function droppedOf(packets: AnyPacket[], limit: number): OversizedMessage[] {
  return packets.flatMap((p) =>
    p instanceof Uint8Array || p.bytes <= limit ? [] : [{
      topic: p.topic,
      bytes: p.bytes,
      qos: p.qos,
      packetId: p.qos > 0 ? p.packetId : 0,
    }]
  );
}

/**
 * Checks `check` on any sequence of packets as one stream, cut into chunks
 * anywhere (300 runs).
 */
function anyStream(
  check: (packets: AnyPacket[], stream: Uint8Array, cuts: number[]) => void,
): void {
  fc.assert(
    fc.property(
      fc.array(anyPacket, { maxLength: 12 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      (packets, rawCuts) => {
        const stream = concat(packets.map(bytesOf));
        check(packets, stream, rawCuts.map((c) => c % (stream.length + 1)));
      },
    ),
    { numRuns: 300 },
  );
}

Deno.test("PublishSizeFilter: any packets, cut anywhere: exactly the small ones pass, the large ones are reported", () => {
  const limit = 300;
  anyStream((packets, stream, cuts) => {
    const { passed, dropped } = run(limit, stream, cuts);
    const expected = packets.filter((p) =>
      p instanceof Uint8Array || p.bytes <= limit
    ).map(bytesOf);
    assert.deepEqual(passed, concat(expected));
    assert.deepEqual(dropped, droppedOf(packets, limit));
  });
});

Deno.test("PublishSizeFilter with take: any packets, cut anywhere: the small PUBLISHes are taken whole and in order, the rest pass, the large are reported", () => {
  const limit = 300;
  anyStream((packets, stream, cuts) => {
    const { passed, dropped, taken } = run(limit, stream, cuts, true);
    assert.deepEqual(
      passed,
      concat(packets.filter((p) => p instanceof Uint8Array)),
    );
    assert.deepEqual(
      taken,
      packets.flatMap((p) =>
        p instanceof Uint8Array || p.bytes > limit ? [] : [{
          topic: p.topic,
          payload: payloadOf(p),
          qos: p.qos,
          packetId: p.qos > 0 ? p.packetId : 0,
        }]
      ),
    );
    assert.deepEqual(dropped, droppedOf(packets, limit));
  });
});

Deno.test("PublishSizeFilter with take: a PUBLISH whole in one chunk is handed over as a view into it (no copy)", () => {
  const chunk = concat([publish("c8y/s/ds", 50, 1, 9), publish("t", 5, 0)]);
  const views: Uint8Array[] = [];
  const filter = new PublishSizeFilter(100, {
    onOversized: () => {},
    take: (m) => views.push(m.payload),
  });
  assert.deepEqual(filter.push(chunk), []);
  assert.equal(views.length, 2);
  for (const view of views) assert.equal(view.buffer, chunk.buffer);
});

Deno.test("PublishSizeFilter with take: a QoS 2 PUBLISH passes through (the client runs its exchange)", () => {
  const qos2 = publish("c8y/s/ds", 10, 1, 3);
  qos2[0] = 0x34; // QoS 2
  const { passed, taken } = run(100, qos2, [3], true);
  assert.deepEqual(passed, qos2);
  assert.deepEqual(taken, []);
});

Deno.test("PublishSizeFilter with take: a PUBLISH whose topic runs past its packet goes to the client, and then everything does", () => {
  const bad = new Uint8Array([0x30, 0x03, 0x00, 0x09, 0x61]); // topic of 9 bytes in 3
  const next = publish("t", 2, 0);
  for (const cuts of [[], [2], [4]]) {
    const { passed, taken } = run(100, concat([bad, next]), cuts, true);
    assert.deepEqual(passed, concat([bad, next]));
    assert.deepEqual(taken, []);
  }
});
