/**
 * Property tests of the WebSocket client's framing (lib/cloud/websocket.ts)
 * with fast-check: valid frame streams, the same streams with one byte
 * mutated, and random bytes, read through an in-memory connection in random
 * chunk sizes. A small reference decoder (RFC 6455 §5, as the client must
 * apply it) says what may be delivered and how the connection must end.
 *
 * Properties: nothing but a CloudProtocolError comes out of receive(); the
 * bytes delivered are exactly the binary payloads before the first invalid
 * frame; the connection ends with the code the reference expects; no close
 * code an endpoint must not send is ever sent.
 *
 * @module
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { CloudProtocolError } from "../lib/cloud/leg.ts";
import {
  isValidCloseCode,
  MAX_RECEIVE_FRAME_BYTES,
  WebSocketClient,
} from "../lib/cloud/websocket.ts";
import { closeFrame, concat, frame } from "./hostile_frames.ts";

/** How a frame stream must end. */
type Outcome =
  | { readonly kind: "close"; readonly code: number; readonly echo: boolean }
  | { readonly kind: "fail"; readonly code: number }
  | { readonly kind: "eof" };

/** The reference: binary payload bytes deliverable, and the outcome. */
function reference(b: Uint8Array): { delivered: Uint8Array; outcome: Outcome } {
  const out: number[] = [];
  const done = (outcome: Outcome) => ({
    delivered: new Uint8Array(out),
    outcome,
  });
  const fail = (code = 1002) => done({ kind: "fail", code });
  let at = 0;
  let message: "none" | "binary" | "text" = "none";
  let utf8: TextDecoder | null = null;
  while (true) {
    if (b.length - at < 2) return done({ kind: "eof" });
    const b0 = b[at]!;
    const b1 = b[at + 1]!;
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    const len7 = b1 & 0x7f;
    if (b0 & 0x70) return fail();
    if ((opcode > 2 && opcode < 8) || opcode > 10) return fail();
    if (b1 & 0x80) return fail();
    if (opcode >= 8 && (!fin || len7 > 125)) return fail();
    const headerLength = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0);
    if (b.length - at < headerLength) return done({ kind: "eof" });
    const view = new DataView(b.buffer, b.byteOffset + at);
    let length = len7;
    if (len7 === 126) length = view.getUint16(2);
    if (len7 === 127) {
      const big = view.getBigUint64(2);
      if (big >= 1n << 63n) return fail();
      if (big > BigInt(MAX_RECEIVE_FRAME_BYTES)) return fail(1009);
      length = Number(big);
    }
    if (length > MAX_RECEIVE_FRAME_BYTES) return fail(1009);
    const start = at + headerLength;
    if (opcode >= 8) {
      if (b.length - start < length) return done({ kind: "eof" });
      const payload = b.subarray(start, start + length);
      at = start + length;
      if (opcode !== 8) continue;
      if (length === 1) return fail();
      const code = length === 0 ? 1005 : (payload[0]! << 8) | payload[1]!;
      if (length > 0 && !isValidCloseCode(code)) return fail();
      try {
        new TextDecoder("utf-8", { fatal: true }).decode(payload.subarray(2));
      } catch {
        return fail(1007);
      }
      return done({ kind: "close", code, echo: length > 0 });
    }
    if (opcode === 0 && message === "none") return fail();
    if (opcode !== 0 && message !== "none") return fail();
    const kind: "none" | "binary" | "text" = opcode === 0
      ? message
      : opcode === 1
      ? "text"
      : "binary";
    message = fin ? "none" : kind;
    if (opcode === 1) utf8 = new TextDecoder("utf-8", { fatal: true });
    const piece = b.subarray(start, Math.min(start + length, b.length));
    const complete = piece.length === length;
    if (kind === "text") {
      try {
        utf8!.decode(piece, { stream: true });
        if (complete && fin) utf8!.decode();
      } catch {
        return fail(1007);
      }
    } else {
      out.push(...piece);
    }
    if (!complete) return done({ kind: "eof" });
    at = start + length;
  }
}

/** An in-memory connection: reads `bytes` in chunks of the given sizes, then EOF; records writes. */
class MemoryConn {
  readonly written: Uint8Array[] = [];
  #at = 0;
  #turn = 0;
  #closed = false;
  constructor(
    private readonly bytes: Uint8Array,
    private readonly chunks: readonly number[],
  ) {}

  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed || this.#at >= this.bytes.length) {
      return Promise.resolve(null);
    }
    const size = this.chunks[this.#turn++ % this.chunks.length]!;
    const n = Math.min(size, p.length, this.bytes.length - this.#at);
    p.set(this.bytes.subarray(this.#at, this.#at + n));
    this.#at += n;
    return Promise.resolve(n);
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource("closed"));
    }
    this.written.push(p.slice());
    return Promise.resolve(p.length);
  }

  close(): void {
    this.#closed = true;
  }

  /** The client's frames (unmasked): opcode and payload. */
  frames(): { opcode: number; payload: Uint8Array }[] {
    const all = concat(...this.written);
    const frames: { opcode: number; payload: Uint8Array }[] = [];
    let at = 0;
    while (at < all.length) {
      const len7 = all[at + 1]! & 0x7f;
      const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
      const view = new DataView(all.buffer, all.byteOffset + at);
      const length = ext === 0
        ? len7
        : ext === 2
        ? view.getUint16(2)
        : Number(view.getBigUint64(2));
      const key = all.subarray(at + 2 + ext, at + 6 + ext);
      const payload = all.slice(at + 6 + ext, at + 6 + ext + length);
      for (let i = 0; i < payload.length; i++) {
        payload[i] = payload[i]! ^ key[i & 3]!;
      }
      frames.push({ opcode: all[at]! & 0x0f, payload });
      at += 6 + ext + length;
    }
    return frames;
  }
}

/** Runs the client over `bytes` and checks it against the reference. */
async function check(bytes: Uint8Array, chunks: readonly number[]) {
  const conn = new MemoryConn(bytes, chunks);
  const client = new WebSocketClient(
    conn,
    "binary",
    new Uint8Array(8 * 1024),
    0,
    0,
  );
  const got: Uint8Array[] = [];
  let error: unknown = null;
  try {
    while (true) {
      const data = await client.receive();
      if (data === null) break;
      got.push(data.slice());
    }
  } catch (thrown) {
    error = thrown;
  }
  const info = await client.closed;
  const expected = reference(bytes);
  assert.deepEqual(concat(...got), expected.delivered, "delivered bytes");
  const closes = conn.frames().filter((f) => f.opcode === 0x8);
  for (const close of closes) {
    if (close.payload.length >= 2) {
      const code = (close.payload[0]! << 8) | close.payload[1]!;
      assert.ok(isValidCloseCode(code), `sent close code ${code}`);
    }
  }
  const sentCode = closes[0] && closes[0].payload.length >= 2
    ? (closes[0].payload[0]! << 8) | closes[0].payload[1]!
    : null;
  const outcome = expected.outcome;
  if (outcome.kind === "fail") {
    assert.ok(error instanceof CloudProtocolError, `threw ${error}`);
    assert.equal(error.code, outcome.code);
    assert.equal(sentCode, outcome.code);
    assert.equal(info.code, outcome.code);
  } else {
    assert.equal(error, null, `threw ${error}`);
    if (outcome.kind === "close") {
      assert.equal(info.code, outcome.code);
      assert.equal(sentCode, outcome.echo ? outcome.code : null);
      assert.equal(closes.length, 1);
    } else {
      assert.equal(info.code, 1006);
      assert.equal(closes.length, 0);
    }
  }
}

const payload = fc.uint8Array({ maxLength: 300 });
/** One message of a valid stream, as frames (pings may sit between fragments). */
const message = fc.oneof(
  fc.record({
    kind: fc.constantFrom("binary" as const, "text" as const),
    parts: fc.array(payload, { minLength: 1, maxLength: 3 }),
    text: fc.string({ maxLength: 60 }),
    pingBetween: fc.boolean(),
  }).map(({ kind, parts, text, pingBetween }) => {
    if (kind === "text") {
      // Valid UTF-8, cut anywhere (characters may span fragments).
      const bytes = new TextEncoder().encode(text);
      const cut = Math.floor(bytes.length / 2);
      parts = [bytes.subarray(0, cut), bytes.subarray(cut)];
    }
    return concat(
      ...parts.flatMap((part, i) => [
        frame(i === 0 ? (kind === "text" ? 0x1 : 0x2) : 0x0, part, {
          fin: i === parts.length - 1,
          long: part.length % 7 === 3,
        }),
        ...(pingBetween && i < parts.length - 1 ? [frame(0x9, "p")] : []),
      ]),
    );
  }),
  fc.uint8Array({ maxLength: 125 }).map((p) => frame(0xa, p)),
);
const ending = fc.oneof(
  fc.constant(new Uint8Array(0)),
  fc.constant(frame(0x8, new Uint8Array(0))),
  fc.constantFrom(1000, 1001, 1011, 3000, 4999).map((code) =>
    closeFrame(code, [0x62, 0x79, 0x65])
  ),
);
const validStream = fc.tuple(fc.array(message, { maxLength: 8 }), ending).map((
  [messages, end],
) => concat(...messages, end));
const chunkSizes = fc.array(fc.integer({ min: 1, max: 70 }), {
  minLength: 1,
  maxLength: 6,
});

Deno.test("WebSocketClient delivers exactly the binary payloads of a valid frame stream, in any read sizes", async () => {
  await fc.assert(fc.asyncProperty(validStream, chunkSizes, check), {
    numRuns: 300,
  });
});

Deno.test("WebSocketClient on a valid stream with one byte mutated: no throw but CloudProtocolError, no byte from an invalid frame, the right close code", async () => {
  await fc.assert(
    fc.asyncProperty(
      validStream.filter((s) => s.length > 0),
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      chunkSizes,
      async (stream, index, xor, chunks) => {
        const mutated = stream.slice();
        mutated[index % mutated.length]! ^= xor;
        await check(mutated, chunks);
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("WebSocketClient on random bytes: no throw but CloudProtocolError, and only payloads of valid frames delivered", async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 600 }), chunkSizes, check),
    { numRuns: 1000 },
  );
});
