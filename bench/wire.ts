/**
 * What moves through the tunnel in the benchmark: a TCP target server whose
 * behaviour each connection picks with a small header, the client side of
 * each measurement, and the data with its SHA-256.
 *
 * Every session starts the same way, whatever sits between client and
 * target: the target sends one greeting byte on accept (so the client knows
 * the path is up, and the setup measurement sees the "first byte through"),
 * the client answers with a {@linkcode HEADER_BYTES}-byte header naming the
 * operation, then the operation runs.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** Length of the header a client sends after the greeting. */
export const HEADER_BYTES = 24;
/** Size of the read buffers on both ends. */
export const READ_BYTES = 256 * 1024;
const GREETING = 0x47; // "G"

/** What the target does with one connection. */
export type Op =
  /** Read `size` bytes (then EOF), hash them, report. */
  | "upload"
  /** Write `size` bytes from the pattern, then close. */
  | "download"
  /** Like upload, reading at most `rate` bytes per second. */
  | "slow-upload"
  /** Echo every byte until EOF. */
  | "echo"
  /** Hold the connection open until EOF. */
  | "idle";

const OP_CODES: Record<Op, number> = {
  upload: 0x55,
  download: 0x44,
  "slow-upload": 0x53,
  echo: 0x45,
  idle: 0x49,
};
const OPS_BY_CODE = new Map(
  Object.entries(OP_CODES).map(([op, code]) => [code, op as Op]),
);

/** One operation as the client asks for it. */
export interface Request {
  readonly op: Op;
  /** Session id chosen by the client, to find the target's report. */
  readonly id: number;
  readonly size: number;
  /** Bytes per second for `slow-upload`; 0 otherwise. */
  readonly rate: number;
}

/** Encodes a request header. */
export function encodeHeader(request: Request): Uint8Array {
  const header = new Uint8Array(HEADER_BYTES);
  const view = new DataView(header.buffer);
  header[0] = OP_CODES[request.op];
  view.setUint32(4, request.id, true);
  view.setFloat64(8, request.size, true);
  view.setFloat64(16, request.rate, true);
  return header;
}

/** Decodes a request header; throws on an unknown operation. */
export function decodeHeader(header: Uint8Array): Request {
  const view = new DataView(header.buffer, header.byteOffset, HEADER_BYTES);
  const op = OPS_BY_CODE.get(header[0]!);
  if (op === undefined) {
    throw new TypeError(`Cannot decode header: unknown op code ${header[0]}`);
  }
  return {
    op,
    id: view.getUint32(4, true),
    size: view.getFloat64(8, true),
    rate: view.getFloat64(16, true),
  };
}

/**
 * Pseudo-random bytes that every transfer is cut from (a prefix of `size`
 * bytes), and the cached SHA-256 of each prefix length used.
 */
export class Pattern {
  readonly bytes: Uint8Array;
  readonly #digests = new Map<number, string>();

  /** The same `size` and `seed` give the same bytes in every process. */
  constructor(size: number, seed = 0x9e3779b9) {
    this.bytes = new Uint8Array(size);
    const words = new Uint32Array(this.bytes.buffer, 0, size >>> 2);
    let x = seed >>> 0 || 1;
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[i] = x;
    }
    for (let i = words.length * 4; i < size; i++) this.bytes[i] = i & 0xff;
  }

  /** Hex SHA-256 of the first `size` bytes. */
  digest(size: number): string {
    let digest = this.#digests.get(size);
    if (digest === undefined) {
      digest = createHash("sha256").update(this.bytes.subarray(0, size))
        .digest("hex");
      this.#digests.set(size, digest);
    }
    return digest;
  }
}

/** What the target saw of one upload-like session. */
export interface TargetReport {
  readonly bytes: number;
  readonly sha256: string;
  /** `performance.now()` when the last byte arrived. */
  readonly lastByteAt: number;
}

/** Writes all of `data`. */
export async function writeAll(
  conn: Deno.Conn,
  data: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    offset += await conn.write(offset === 0 ? data : data.subarray(offset));
  }
}

/** Reads exactly `into.length` bytes; false on EOF before that. */
async function readExactly(
  conn: Deno.Conn,
  into: Uint8Array,
): Promise<boolean> {
  let offset = 0;
  while (offset < into.length) {
    const n = await conn.read(into.subarray(offset));
    if (n === null) return false;
    offset += n;
  }
  return true;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** What the client side needs of a target, wherever it runs. */
export interface Target {
  readonly port: number;
  /** Connections open now. */
  readonly open: number;
  /** Resolves with the report of upload session `id` (times in this process's `performance.now()`). */
  report(id: number): Promise<TargetReport>;
}

/** Hooks of {@linkcode TargetServer} for a driver in another process. */
export interface TargetHooks {
  /** The number of open connections changed. */
  onOpen?: (count: number) => void;
  /** An upload session ended. */
  onReport?: (id: number, report: TargetReport) => void;
}

/**
 * The TCP target: listens on 127.0.0.1 and serves each connection as its
 * header asks. Reports of upload sessions are waited for with
 * {@linkcode TargetServer.report}.
 */
export class TargetServer implements Target, AsyncDisposable {
  readonly port: number;
  readonly #listener: Deno.TcpListener;
  readonly #pattern: Pattern;
  readonly #hooks: TargetHooks;
  readonly #conns = new Set<Deno.TcpConn>();
  readonly #reports = new Map<number, PromiseWithResolvers<TargetReport>>();
  readonly #accepting: Promise<void>;
  #accepted = 0;

  constructor(pattern: Pattern, hooks: TargetHooks = {}) {
    this.#pattern = pattern;
    this.#hooks = hooks;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = this.#listener.addr.port;
    this.#accepting = this.#accept();
  }

  /** Connections accepted so far. */
  get accepted(): number {
    return this.#accepted;
  }

  /** Connections open now. */
  get open(): number {
    return this.#conns.size;
  }

  /** Resolves with the report of upload session `id`. */
  report(id: number): Promise<TargetReport> {
    return this.#entry(id).promise;
  }

  #entry(id: number): PromiseWithResolvers<TargetReport> {
    let entry = this.#reports.get(id);
    if (entry === undefined) {
      entry = Promise.withResolvers<TargetReport>();
      entry.promise.catch(() => {});
      this.#reports.set(id, entry);
    }
    return entry;
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        this.#accepted++;
        this.#conns.add(conn);
        this.#hooks.onOpen?.(this.#conns.size);
        this.#serve(conn).catch(() => {}).finally(() => {
          this.#conns.delete(conn);
          closeQuietly(conn);
          this.#hooks.onOpen?.(this.#conns.size);
        });
      }
    } catch {
      // listener closed
    }
  }

  async #serve(conn: Deno.TcpConn): Promise<void> {
    conn.setNoDelay(true);
    await writeAll(conn, new Uint8Array([GREETING]));
    const header = new Uint8Array(HEADER_BYTES);
    if (!await readExactly(conn, header)) return;
    const request = decodeHeader(header);
    switch (request.op) {
      case "upload":
      case "slow-upload":
        await this.#sink(conn, request);
        return;
      case "download":
        await writeAll(conn, this.#pattern.bytes.subarray(0, request.size));
        return;
      case "echo":
        await echo(conn);
        return;
      case "idle":
        while (await conn.read(header) !== null) { /* wait for EOF */ }
        return;
    }
  }

  async #sink(conn: Deno.Conn, request: Request): Promise<void> {
    const entry = this.#entry(request.id);
    const hash = createHash("sha256");
    const buffer = new Uint8Array(READ_BYTES);
    let bytes = 0;
    let lastByteAt = 0;
    const started = performance.now();
    const paced = request.op === "slow-upload" && request.rate > 0;
    try {
      while (true) {
        if (paced) {
          const due = started + (bytes / request.rate) * 1000;
          const wait = due - performance.now();
          if (wait > 0) await sleep(wait);
        }
        const n = await conn.read(paced ? buffer.subarray(0, 65536) : buffer);
        if (n === null) break;
        hash.update(buffer.subarray(0, n));
        bytes += n;
        lastByteAt = performance.now();
      }
      const report = { bytes, sha256: hash.digest("hex"), lastByteAt };
      this.#hooks.onReport?.(request.id, report);
      entry.resolve(report);
    } catch (error) {
      entry.reject(error);
    }
  }

  async close(): Promise<void> {
    this.#listener.close();
    for (const conn of this.#conns) closeQuietly(conn);
    await this.#accepting;
    for (const entry of this.#reports.values()) {
      entry.reject(new Error("target closed"));
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

async function echo(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(READ_BYTES);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) return;
    await writeAll(conn, buffer.subarray(0, n));
  }
}

/** A client connection through the contender, with the greeting received. */
export interface ClientConn {
  readonly conn: Deno.TcpConn;
  /** `performance.now()` at connect and when the greeting arrived. */
  readonly connectedAt: number;
  readonly greetedAt: number;
}

/**
 * Connects to `port` and waits for the target's greeting: the path through
 * the contender is then up end to end. `onConnected` runs right after the
 * TCP connect (e.g. to wait for the 530 that connection triggers).
 */
export async function openClient(
  port: number,
  options: { signal?: AbortSignal } = {},
): Promise<ClientConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const connectedAt = performance.now();
  conn.setNoDelay(true);
  const onAbort = () => closeQuietly(conn);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const greeting = new Uint8Array(1);
    if (!await readExactly(conn, greeting) || greeting[0] !== GREETING) {
      throw new Error("Cannot open a session: no greeting from the target");
    }
    return { conn, connectedAt, greetedAt: performance.now() };
  } catch (error) {
    closeQuietly(conn);
    throw options.signal?.aborted ? options.signal.reason : error;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}

let nextId = 1;

/** A fresh session id. */
export function sessionId(): number {
  return nextId++;
}

/** Result of one transfer as the side that timed it saw it. */
export interface Transfer {
  readonly bytes: number;
  readonly seconds: number;
  readonly verified: boolean;
}

/**
 * Uploads `size` bytes of the pattern (client -> target), then closes;
 * timed from the header to the target's last byte, verified by SHA-256.
 */
export async function upload(
  client: ClientConn,
  target: Target,
  pattern: Pattern,
  size: number,
  rate = 0,
): Promise<Transfer> {
  const id = sessionId();
  const report = target.report(id);
  const start = performance.now();
  try {
    await writeAll(
      client.conn,
      encodeHeader({ op: rate > 0 ? "slow-upload" : "upload", id, size, rate }),
    );
    await writeAll(client.conn, pattern.bytes.subarray(0, size));
  } finally {
    closeQuietly(client.conn);
  }
  const seen = await report;
  return {
    bytes: seen.bytes,
    seconds: (seen.lastByteAt - start) / 1000,
    verified: seen.bytes === size && seen.sha256 === pattern.digest(size),
  };
}

/**
 * Downloads `size` bytes (target -> client) until EOF; timed from the header
 * to the last byte, verified by SHA-256. With `rate`, reads at most that
 * many bytes per second (a slow consumer).
 */
export async function download(
  client: ClientConn,
  pattern: Pattern,
  size: number,
  rate = 0,
): Promise<Transfer & { readonly closeLagMs: number }> {
  const conn = client.conn;
  const hash = createHash("sha256");
  const buffer = new Uint8Array(READ_BYTES);
  let bytes = 0;
  let lastByteAt = 0;
  const start = performance.now();
  try {
    await writeAll(
      conn,
      encodeHeader({ op: "download", id: sessionId(), size, rate: 0 }),
    );
    while (true) {
      if (rate > 0) {
        const wait = start + (bytes / rate) * 1000 - performance.now();
        if (wait > 0) await sleep(wait);
      }
      const n = await conn.read(rate > 0 ? buffer.subarray(0, 65536) : buffer);
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
      bytes += n;
      lastByteAt = performance.now();
    }
  } finally {
    closeQuietly(conn);
  }
  const eofAt = performance.now();
  return {
    bytes,
    seconds: (lastByteAt - start) / 1000,
    verified: bytes === size && hash.digest("hex") === pattern.digest(size),
    closeLagMs: eofAt - lastByteAt,
  };
}

/**
 * `count` sequential round trips of `size` bytes through an echo session;
 * returns each round trip in milliseconds. Throws if an echo differs.
 */
export async function pingPong(
  client: ClientConn,
  count: number,
  size = 64,
): Promise<number[]> {
  const conn = client.conn;
  const out = new Uint8Array(size);
  const back = new Uint8Array(size);
  const times: number[] = [];
  try {
    await writeAll(
      conn,
      encodeHeader({ op: "echo", id: sessionId(), size: 0, rate: 0 }),
    );
    for (let i = 0; i < count; i++) {
      out.fill(i & 0xff);
      const t0 = performance.now();
      await writeAll(conn, out);
      if (!await readExactly(conn, back)) {
        throw new Error(`echo session ended after ${i} round trips`);
      }
      times.push(performance.now() - t0);
      if (back[0] !== (i & 0xff) || back[size - 1] !== (i & 0xff)) {
        throw new Error(`echo ${i} came back altered`);
      }
    }
  } finally {
    closeQuietly(conn);
  }
  return times;
}

/**
 * Sends `size` bytes through an echo session while reading them back;
 * true when what came back has the pattern's SHA-256.
 */
export async function echoVerified(
  client: ClientConn,
  pattern: Pattern,
  size: number,
): Promise<boolean> {
  const conn = client.conn;
  try {
    await writeAll(
      conn,
      encodeHeader({ op: "echo", id: sessionId(), size, rate: 0 }),
    );
    const sending = writeAll(conn, pattern.bytes.subarray(0, size));
    const hash = createHash("sha256");
    const buffer = new Uint8Array(65536);
    let bytes = 0;
    while (bytes < size) {
      const n = await conn.read(
        buffer.subarray(0, Math.min(65536, size - bytes)),
      );
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
      bytes += n;
    }
    await sending;
    return bytes === size && hash.digest("hex") === pattern.digest(size);
  } finally {
    closeQuietly(conn);
  }
}

/** Starts an idle session (held open until the client closes). */
export async function idle(client: ClientConn): Promise<void> {
  await writeAll(
    client.conn,
    encodeHeader({ op: "idle", id: sessionId(), size: 0, rate: 0 }),
  );
}
