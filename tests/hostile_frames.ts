/**
 * Frames a misbehaving cloud could send, each with the close code RFC 6455
 * requires the client to fail the connection with, and a raw loopback
 * WebSocket server that sends them (tests cloud_socket_test and
 * cloud_hostile_test).
 *
 * @module
 */
import { readHttpHead, webSocketAnswer } from "./harness.ts";

const encoder = new TextEncoder();

/** A server frame (unmasked unless `mask` is given); `rsv` sets reserved bits. */
export function frame(
  opcode: number,
  payload: Uint8Array | string,
  options: { fin?: boolean; mask?: Uint8Array; long?: boolean; rsv?: number } =
    {},
): Uint8Array {
  const body = typeof payload === "string"
    ? encoder.encode(payload)
    : payload.slice();
  const n = body.length;
  const ext = options.long ? 8 : n < 126 ? 0 : n < 65536 ? 2 : 8;
  const head = new Uint8Array(2 + ext + (options.mask ? 4 : 0));
  head[0] = (options.fin === false ? 0 : 0x80) | (options.rsv ?? 0) | opcode;
  head[1] = (options.mask ? 0x80 : 0) | (ext === 0 ? n : ext === 2 ? 126 : 127);
  const view = new DataView(head.buffer);
  if (ext === 2) view.setUint16(2, n);
  if (ext === 8) view.setBigUint64(2, BigInt(n));
  if (options.mask) {
    head.set(options.mask, 2 + ext);
    for (let i = 0; i < n; i++) body[i] = body[i]! ^ options.mask[i & 3]!;
  }
  return concat(head, body);
}

/** The bytes of `parts`, joined. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** A close frame with `code` (and a reason of raw bytes). */
export function closeFrame(code: number, reason: number[] = []): Uint8Array {
  return frame(0x8, new Uint8Array([code >>> 8, code & 0xff, ...reason]));
}

/** One hostile case: what the cloud sends, what the client must answer. */
export interface HostileCase {
  readonly name: string;
  /** Sent right after the 101, after a valid binary frame "ok". */
  readonly bytes: Uint8Array;
  /** The close code the client must send (1002 protocol error, 1007 invalid UTF-8, 1009 too big). */
  readonly code: number;
  /** Words of the violation in the error and the session's summary line. */
  readonly violation: string;
  /** Payload bytes of valid frames before the violation (after "ok"). */
  readonly delivered?: string;
}

/** The valid frame every hostile case starts with: its bytes reach the target. */
export const PRELUDE = frame(0x2, "ok");

const mask = new Uint8Array([1, 2, 3, 4]);

/** Every violation RFC 6455 makes the client fail the connection on. */
export const HOSTILE_CASES: readonly HostileCase[] = [
  {
    name: "a masked server frame",
    bytes: frame(0x2, "evil", { mask }),
    code: 1002,
    violation: "masked frame from the server",
  },
  {
    name: "a continuation without a started message",
    bytes: frame(0x0, "evil"),
    code: 1002,
    violation: "continuation frame without a message to continue",
  },
  {
    name: "a binary frame while a fragmented message is open",
    bytes: concat(frame(0x2, "a", { fin: false }), frame(0x2, "evil")),
    code: 1002,
    violation: "new data frame while a fragmented message is still open",
    delivered: "a",
  },
  {
    name: "a text frame while a fragmented binary message is open",
    bytes: concat(frame(0x2, "a", { fin: false }), frame(0x1, "evil")),
    code: 1002,
    violation: "new data frame while a fragmented message is still open",
    delivered: "a",
  },
  {
    name: "invalid UTF-8 in a text frame",
    bytes: frame(0x1, new Uint8Array([0x68, 0xff, 0x69])),
    code: 1007,
    violation: "invalid UTF-8 in a text message",
  },
  {
    name: "invalid UTF-8 across text fragments",
    bytes: concat(
      frame(0x1, new Uint8Array([0xe2, 0x82]), { fin: false }),
      frame(0x0, new Uint8Array([0x41])),
    ),
    code: 1007,
    violation: "invalid UTF-8 in a text message",
  },
  {
    name: "a text message ending inside a UTF-8 character",
    bytes: concat(
      frame(0x1, "x", { fin: false }),
      frame(0x0, new Uint8Array([0xe2, 0x82])),
    ),
    code: 1007,
    violation: "invalid UTF-8 in a text message",
  },
  {
    name: "reserved data opcode 3",
    bytes: frame(0x3, "evil"),
    code: 1002,
    violation: "reserved opcode 3",
  },
  {
    name: "reserved control opcode 11",
    bytes: frame(0xb, "evil"),
    code: 1002,
    violation: "reserved opcode 11",
  },
  ...[0x40, 0x20, 0x10].map((rsv) => ({
    name: `RSV bit 0x${rsv.toString(16)}`,
    bytes: frame(0x2, "evil", { rsv }),
    code: 1002,
    violation: "reserved bits (RSV) set",
  })),
  {
    name: "a 126-byte ping",
    bytes: frame(0x9, new Uint8Array(126)),
    code: 1002,
    violation: "control frame longer than 125 bytes",
  },
  {
    name: "a fragmented ping",
    bytes: frame(0x9, "p", { fin: false }),
    code: 1002,
    violation: "fragmented control frame",
  },
  ...[999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535].map((code) => ({
    name: `a close frame with code ${code}`,
    bytes: closeFrame(code),
    code: 1002,
    violation: `close frame with the invalid code ${code}`,
  })),
  {
    name: "a close frame with a 1-byte payload",
    bytes: frame(0x8, new Uint8Array([0x03])),
    code: 1002,
    violation: "close frame with a 1-byte payload",
  },
  {
    name: "a close frame whose reason is not UTF-8",
    bytes: closeFrame(1000, [0x62, 0xc3, 0x28]),
    code: 1007,
    violation: "close frame with a reason that is not UTF-8",
  },
  {
    name: "a 64-bit length with the top bit set",
    bytes: new Uint8Array([0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1, 0x41]),
    code: 1002,
    violation: "frame length with the top bit set",
  },
  {
    name: "a data frame over 64 MiB",
    bytes: new Uint8Array([0x82, 0x7f, 0, 0, 0, 0, 0x04, 0, 0, 1, 0x41]),
    code: 1009,
    violation: "frame of 67108865 bytes",
  },
];

/** What a hostile server saw of one client connection. */
export interface Seen {
  /** The code of the client's first frame if it was a close frame, else null. */
  readonly closeCode: number | null;
  /** When the hostile bytes were written and when the client closed TCP (performance.now()). */
  readonly sentAt: number;
  readonly endedAt: number;
}

/**
 * A raw loopback WebSocket server: accepts each handshake, sends
 * `script(n)` for its n-th connection, then reads the client's frames until
 * it closes the connection; `seen(n)` resolves with what it saw.
 */
export function hostileServer(script: (n: number) => Uint8Array) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const seen: PromiseWithResolvers<Seen>[] = [];
  const slot = (n: number) => seen[n] ??= Promise.withResolvers<Seen>();
  const serve = async (conn: Deno.Conn, n: number) => {
    const buffer = new Uint8Array(64 * 1024);
    const head = await readHttpHead(conn);
    if (!head.includes("\r\n\r\n")) return;
    const answer = await webSocketAnswer(head);
    const bytes = concat(answer, script(n));
    for (let at = 0; at < bytes.length;) {
      at += await conn.write(bytes.subarray(at));
    }
    const sentAt = performance.now();
    // Everything the client sends until it closes the connection.
    let received: Uint8Array = new Uint8Array(0);
    while (true) {
      const got = await conn.read(buffer).catch(() => null);
      if (got === null) break;
      received = concat(received, buffer.subarray(0, got));
    }
    const endedAt = performance.now();
    let closeCode: number | null = null;
    if (received.length >= 8 && (received[0]! & 0x0f) === 0x8) {
      // A masked close frame: 2 header bytes, 4 key bytes, the code.
      closeCode = ((received[6]! ^ received[2]!) << 8) |
        (received[7]! ^ received[3]!);
    }
    slot(n).resolve({ closeCode, sentAt, endedAt });
  };
  let count = 0;
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      serve(conn, count++).catch(() => {}).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
      });
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    wsUrl: `ws://127.0.0.1:${
      (listener.addr as Deno.NetAddr).port
    }/service/remoteaccess/device/k1`,
    seen: (n: number) => slot(n).promise,
    async close() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed */ }
      }
      await loop;
    },
  };
}
