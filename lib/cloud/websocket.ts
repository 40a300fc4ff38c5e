/**
 * The cloud leg of a session: the WebSocket to Cumulocity's remote-access
 * service for one connection key.
 *
 * The default opener, {@linkcode openCloudSocket}, is a small RFC 6455
 * client of our own on `Deno.connect` (+ `Deno.startTls` for wss): frames
 * are read into one reused buffer per session and payload views are handed
 * to the pump as they arrive (no ArrayBuffer per message, nothing read
 * while the target lags), and frames are written from one reused buffer
 * with the header in front of the payload and the payload masked in place
 * (one write per frame). Measured on loopback against the runtime's
 * WebSocketStream: more throughput both ways, half the per-session memory,
 * no garbage per chunk (see docs/bench.md). The runtime's WebSocketStream
 * opener stays available as {@linkcode openRuntimeWebSocketStream}.
 *
 * @module
 */
import { closeQuietly, writeAll } from "../util/conn.ts";

/** An open cloud leg: raw bytes in binary frames both ways. */
export interface CloudLeg {
  /** Frames from the cloud; text frames arrive as strings (not expected). */
  readonly readable: ReadableStream<string | Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  /** Subprotocol the server chose (`binary` from Cumulocity). */
  readonly protocol: string;
  /** Settles when the WebSocket is closed, either way; never rejects. */
  readonly closed: Promise<{ readonly code: number; readonly reason: string }>;
  /**
   * Sends a close frame (once, code 1000) and releases the socket. The
   * reason must not be empty: Deno 2.9.6 then drops the code from the frame.
   * A client may only send 1000 or 3000-4999, so the reason says why.
   */
  close(reason: string): void;
  /**
   * Direct frame I/O on the socket, present on legs opened by
   * {@linkcode openCloudSocket}: the pump then uses it instead of the
   * streams (which stay available but copy every chunk).
   */
  readonly socket?: CloudSocket;
}

/**
 * Frame-level I/O of the agent's own WebSocket client: bytes go out from,
 * and come in through, buffers the socket owns and reuses.
 */
export interface CloudSocket {
  /**
   * Where to put the payload of the next frame (at most
   * {@linkcode MAX_FRAME_PAYLOAD} bytes; smaller while the session is
   * quiet). Valid until the next {@linkcode CloudSocket.send}.
   */
  sendSpace(): Uint8Array;
  /**
   * Sends the first `length` bytes of {@linkcode CloudSocket.sendSpace} as
   * one binary frame (masked in place: the bytes are not kept). Resolves
   * once the frame is written to the socket.
   */
  send(length: number): Promise<void>;
  /**
   * The next binary payload bytes from the cloud, a view into a buffer that
   * is reused by the next call; null once the cloud closed (close frame or
   * end of the connection). Message boundaries are not kept (the data is a
   * byte stream); text frames are skipped, each reported to `onTextFrame`.
   */
  receive(onTextFrame?: () => void): Promise<Uint8Array | null>;
}

/** Opens a WebSocket to `url`; injectable so tests can add faults. */
export type OpenCloudLeg = (
  url: string,
  options: { readonly headers: Headers; readonly signal: AbortSignal },
) => Promise<CloudLeg>;

/** Why the cloud leg could not be opened; `status` is the HTTP status when the server answered. */
export class CloudConnectError extends Error {
  override name = "CloudConnectError";
  readonly status: number | undefined;
  constructor(message: string, status?: number, options?: ErrorOptions) {
    super(message, options);
    this.status = status;
  }
}

/** Cumulocity's device endpoint for a connection key: https -> wss, http -> ws. */
export function deviceUrl(c8yUrl: string, key: string): string {
  const url = new URL(c8yUrl);
  url.protocol = url.protocol === "http:" ? "ws:" : "wss:";
  url.pathname = `/service/remoteaccess/device/${encodeURIComponent(key)}`;
  url.search = "";
  url.hash = "";
  return url.href;
}

/** How the device authenticates to the cloud leg. */
export type CloudAuth =
  | { readonly kind: "jwt"; readonly token: string }
  | {
    readonly kind: "basic";
    readonly username: string;
    readonly password: string;
  }
  | { readonly kind: "none" };

/** The handshake headers for `auth` (Authorization only; the subprotocol goes in `protocols`). */
export function authHeaders(auth: CloudAuth): Headers {
  const headers = new Headers();
  if (auth.kind === "jwt") {
    headers.set("Authorization", `Bearer ${auth.token}`);
  } else if (auth.kind === "basic") {
    const bytes = new TextEncoder().encode(`${auth.username}:${auth.password}`);
    headers.set(
      "Authorization",
      `Basic ${btoa(String.fromCharCode(...bytes))}`,
    );
  }
  return headers;
}

const STATUS_IN_MESSAGE = /status code:? (\d{3})/i;

/** A user-facing reason for an HTTP status that refused the WebSocket handshake. */
export function describeStatus(status: number): string {
  switch (status) {
    case 401:
      return "cloud refused the credentials (HTTP 401): check c8y.auth and the credentials or the JWT from the thin-edge bridge";
    case 403:
      return "cloud denied remote access (HTTP 403): the user needs the Remote Access permission";
    case 404:
      return "cloud does not know this connection (HTTP 404): the request expired or the key is wrong";
    default:
      return `cloud answered HTTP ${status} instead of opening the WebSocket`;
  }
}

/** Largest payload of a frame the agent sends; 64 KiB is a common server limit. */
export const MAX_FRAME_PAYLOAD = 64 * 1024;
/** Receive buffer size limit; it grows from {@linkcode BUFFER_START_BYTES} while reads fill it. */
const RECEIVE_MAX_BYTES = 64 * 1024;
/** Start size of both buffers of a session: small for idle sessions, doubled while busy. */
export const BUFFER_START_BYTES = 8 * 1024;
/**
 * How many bytes the buffers of all sessions together may grow beyond their
 * start size: busy sessions share it, the others keep 8 KiB buffers, so the
 * agent's buffer memory is bounded whatever the number of sessions (one
 * session grows by 112 KiB at most).
 */
export const GROWTH_BUDGET_BYTES = 8 * 1024 * 1024;
let growthInUse = 0;
/** Room in front of a payload for its header: 14 bytes at most; 16 keeps the payload 4-byte aligned. */
const HEADROOM = 16;
/** Longest HTTP response head accepted for the handshake. */
const RESPONSE_HEAD_MAX_BYTES = 16 * 1024;
/** How long a close handshake may take before the socket is closed anyway. */
const CLOSE_WAIT_MS = 1000;
const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const encoder = new TextEncoder();

/** Random bytes for masking keys, refilled from the CSPRNG in blocks. */
const maskPool = new Uint8Array(4096);
let maskPoolOffset = maskPool.length;

function nextMaskKey(into: Uint8Array, at: number): void {
  if (maskPoolOffset === maskPool.length) {
    crypto.getRandomValues(maskPool);
    maskPoolOffset = 0;
  }
  into.set(maskPool.subarray(maskPoolOffset, maskPoolOffset + 4), at);
  maskPoolOffset += 4;
}

class ProtocolError extends Error {
  override name = "ProtocolError";
}

/** A parsed frame header at the start of the receive window. */
interface FrameHeader {
  readonly fin: boolean;
  readonly opcode: number;
  readonly length: number;
  readonly headerLength: number;
  /** Offset of the masking key in the receive buffer, or -1 (servers do not mask). */
  readonly maskAt: number;
}

/**
 * One open WebSocket of the agent's own client: frame parsing and writing
 * on a TCP or TLS connection, with the close handshake.
 */
class WebSocketClient implements CloudSocket {
  readonly protocol: string;
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly #conn: Deno.Conn;
  #resolveClosed!: (info: { code: number; reason: string }) => void;
  // Receive window [#rxStart, #rxEnd) of #rx.
  #rx: Uint8Array;
  #rxStart: number;
  #rxEnd: number;
  /** Payload bytes of the current data frame not yet taken. */
  #left = 0;
  /** The current data frame belongs to a text message (skipped). */
  #inText = false;
  /** The message being continued by continuation frames is text. */
  #messageText = false;
  /** Masking key of the current frame (a server should not mask; tolerated). */
  #rxMask: Uint8Array | null = null;
  #rxMaskOffset = 0;
  // Send buffer: header in [HEADROOM - n, HEADROOM), payload after it.
  #tx: Uint8Array;
  #txWords: Uint32Array;
  #txSpace: Uint8Array;
  #writeTail: Promise<void> = Promise.resolve();
  /** Frames handed to #write and not yet written. */
  #writing = 0;
  #closeSent = false;
  /** We sent the first close frame. */
  #closedByUs = false;
  /** A receive() is in progress (only one reader at a time). */
  #receiving = false;
  #closeReceived: { code: number; reason: string } | null = null;
  #finished = false;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Bytes this session's buffers grew beyond their start size (from the shared budget). */
  #grown = 0;

  constructor(
    conn: Deno.Conn,
    protocol: string,
    rx: Uint8Array,
    rxStart: number,
    rxEnd: number,
  ) {
    this.#conn = conn;
    this.protocol = protocol;
    this.#rx = rx;
    this.#rxStart = rxStart;
    this.#rxEnd = rxEnd;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
    this.#tx = new Uint8Array(HEADROOM + BUFFER_START_BYTES);
    this.#txWords = new Uint32Array(this.#tx.buffer);
    this.#txSpace = this.#tx.subarray(HEADROOM);
  }

  sendSpace(): Uint8Array {
    return this.#txSpace;
  }

  send(length: number): Promise<void> {
    if (this.#closeSent || this.#finished) {
      return Promise.reject(
        new Error("Cannot send to the cloud: the WebSocket is closing"),
      );
    }
    const tx = this.#tx;
    let at: number;
    if (length < 126) {
      at = HEADROOM - 6;
      tx[at + 1] = 0x80 | length;
    } else if (length < 65536) {
      at = HEADROOM - 8;
      tx[at + 1] = 0x80 | 126;
      tx[at + 2] = length >>> 8;
      tx[at + 3] = length & 0xff;
    } else {
      at = HEADROOM - 14;
      tx[at + 1] = 0x80 | 127;
      tx.fill(0, at + 2, at + 6);
      tx[at + 6] = length >>> 24;
      tx[at + 7] = (length >>> 16) & 0xff;
      tx[at + 8] = (length >>> 8) & 0xff;
      tx[at + 9] = length & 0xff;
    }
    tx[at] = 0x82; // FIN + binary
    nextMaskKey(tx, HEADROOM - 4);
    // Mask 4 bytes at a time; the key word read in memory order matches.
    const key = this.#txWords[HEADROOM / 4 - 1]!;
    const words = length >>> 2;
    const txWords = this.#txWords;
    for (let i = HEADROOM / 4, end = i + words; i < end; i++) {
      txWords[i] = txWords[i]! ^ key;
    }
    for (let i = words << 2; i < length; i++) {
      tx[HEADROOM + i] = tx[HEADROOM + i]! ^ tx[HEADROOM - 4 + (i & 3)]!;
    }
    const frame = tx.subarray(at, HEADROOM + length);
    // A quiet session keeps a small buffer; one that fills it gets a bigger one.
    if (
      length === this.#txSpace.length &&
      this.#txSpace.length < MAX_FRAME_PAYLOAD &&
      this.#takeGrowth(this.#txSpace.length)
    ) {
      const written = this.#write(frame);
      this.#tx = new Uint8Array(HEADROOM + this.#txSpace.length * 2);
      this.#txWords = new Uint32Array(this.#tx.buffer);
      this.#txSpace = this.#tx.subarray(HEADROOM);
      return written;
    }
    return this.#write(frame);
  }

  async receive(onTextFrame?: () => void): Promise<Uint8Array | null> {
    // After our close frame nothing more is delivered; the socket drains.
    if (this.#closedByUs || this.#receiving) return null;
    this.#receiving = true;
    try {
      const bytes = await this.#next(onTextFrame);
      if (bytes !== null && this.#closedByUs) {
        this.#drain();
        return null;
      }
      return bytes;
    } finally {
      this.#receiving = false;
    }
  }

  /** Reads and drops frames until the cloud answers our close (or the timer ends it). */
  async #drain(): Promise<void> {
    try {
      while (await this.#next() !== null) {
        // dropped: the session is over
      }
    } catch {
      this.#finish(this.#closeReceived ?? { code: 1006, reason: "" });
    }
  }

  async #next(onTextFrame?: () => void): Promise<Uint8Array | null> {
    while (true) {
      if (this.#finished || this.#closeReceived !== null) return null;
      if (this.#left > 0) {
        if (this.#rxStart === this.#rxEnd && !await this.#fill()) {
          return this.#ended();
        }
        const from = this.#rxStart;
        const take = Math.min(this.#left, this.#rxEnd - from);
        this.#rxStart += take;
        this.#left -= take;
        if (this.#rxMask !== null) this.#unmask(from, take);
        if (this.#inText) continue;
        const to = this.#left === 0 ? this.#coalesce(from + take) : from + take;
        return this.#rx.subarray(from, to);
      }
      const header = this.#header();
      if (header === null) {
        if (!await this.#fill()) return this.#ended();
        continue;
      }
      if (header.opcode >= 8) {
        if (
          this.#rxEnd - this.#rxStart < header.headerLength + header.length
        ) {
          if (!await this.#fill()) return this.#ended();
          continue;
        }
        this.#control(header);
        continue;
      }
      this.#rxStart += header.headerLength;
      this.#left = header.length;
      this.#rxMask = header.maskAt < 0
        ? null
        : this.#rx.slice(header.maskAt, header.maskAt + 4);
      this.#rxMaskOffset = 0;
      if (header.opcode === 1) {
        this.#messageText = true;
        onTextFrame?.();
      } else if (header.opcode === 2) {
        this.#messageText = false;
      }
      this.#inText = this.#messageText;
    }
  }

  /** Sends a close frame once; the socket closes when the cloud answers, or after {@linkcode CLOSE_WAIT_MS}. */
  close(code: number, reason: string): void {
    if (this.#closeSent || this.#finished) return;
    this.#closeSent = true;
    this.#closedByUs = true;
    if (!this.#receiving) this.#drain();
    const text = encoder.encode(reason).subarray(0, 123);
    this.#writeControl(0x8, [code >>> 8, code & 0xff, ...text])
      .catch(() => this.#finish({ code: 1006, reason: "connection lost" }));
    this.#closeTimer = setTimeout(
      () => this.#finish(this.#closeReceived ?? { code: 1006, reason: "" }),
      CLOSE_WAIT_MS,
    );
  }

  /** Closes the socket at once (no close handshake). */
  abort(): void {
    this.#finish(this.#closeReceived ?? { code: 1006, reason: "aborted" });
  }

  /**
   * Writes one whole frame; frames never interleave. Data frames come one at
   * a time from the pump, so the common case is a direct write.
   */
  #write(bytes: Uint8Array): Promise<void> {
    const written = this.#writing === 0
      ? writeAll(this.#conn, bytes)
      : this.#writeTail.then(() => writeAll(this.#conn, bytes));
    this.#writing++;
    this.#writeTail = written.then(this.#written, this.#written);
    return written;
  }

  readonly #written = (): void => {
    this.#writing--;
  };

  #writeControl(opcode: number, payload: ArrayLike<number>): Promise<void> {
    const frame = new Uint8Array(6 + payload.length);
    frame[0] = 0x80 | opcode;
    frame[1] = 0x80 | payload.length;
    nextMaskKey(frame, 2);
    for (let i = 0; i < payload.length; i++) {
      frame[6 + i] = payload[i]! ^ frame[2 + (i & 3)]!;
    }
    return this.#write(frame);
  }

  /** Reads more bytes into the window; false at the end of the connection. */
  async #fill(): Promise<boolean> {
    if (this.#rxStart === this.#rxEnd) {
      this.#rxStart = this.#rxEnd = 0;
    } else if (this.#rxEnd === this.#rx.length) {
      if (this.#rxStart > 0) {
        this.#rx.copyWithin(0, this.#rxStart, this.#rxEnd);
        this.#rxEnd -= this.#rxStart;
        this.#rxStart = 0;
      } else {
        this.#grow(); // a header or control frame larger than the buffer
      }
    }
    let n: number | null;
    try {
      n = await this.#conn.read(this.#rx.subarray(this.#rxEnd));
    } catch (error) {
      if (this.#finished) return false;
      throw error;
    }
    if (n === null) return false;
    this.#rxEnd += n;
    if (
      this.#rxEnd === this.#rx.length && this.#rx.length < RECEIVE_MAX_BYTES &&
      this.#takeGrowth(this.#rx.length)
    ) {
      this.#grow();
    }
    return true;
  }

  /** Reserves `bytes` of the shared growth budget for this session; false when it is spent. */
  #takeGrowth(bytes: number): boolean {
    if (growthInUse + bytes > GROWTH_BUDGET_BYTES) return false;
    growthInUse += bytes;
    this.#grown += bytes;
    return true;
  }

  #grow(): void {
    const bigger = new Uint8Array(this.#rx.length * 2);
    bigger.set(this.#rx.subarray(this.#rxStart, this.#rxEnd));
    this.#rxEnd -= this.#rxStart;
    this.#rxStart = 0;
    this.#rx = bigger;
  }

  #header(): FrameHeader | null {
    const rx = this.#rx;
    const at = this.#rxStart;
    const available = this.#rxEnd - at;
    if (available < 2) return null;
    const b0 = rx[at]!;
    const b1 = rx[at + 1]!;
    if (b0 & 0x70) {
      throw new ProtocolError("cloud sent a frame with reserved bits set");
    }
    const opcode = b0 & 0x0f;
    if ((opcode > 2 && opcode < 8) || opcode > 10) {
      throw new ProtocolError(
        `cloud sent a frame with unknown opcode ${opcode}`,
      );
    }
    const masked = (b1 & 0x80) !== 0;
    const len7 = b1 & 0x7f;
    const headerLength = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) +
      (masked ? 4 : 0);
    if (available < headerLength) return null;
    let length = len7;
    if (len7 === 126) {
      length = (rx[at + 2]! << 8) | rx[at + 3]!;
    } else if (len7 === 127) {
      const high = ((rx[at + 2]! << 24) | (rx[at + 3]! << 16) |
        (rx[at + 4]! << 8) | rx[at + 5]!) >>> 0;
      const low = ((rx[at + 6]! << 24) | (rx[at + 7]! << 16) |
        (rx[at + 8]! << 8) | rx[at + 9]!) >>> 0;
      if (high > 0x1fffff) {
        throw new ProtocolError("cloud sent a frame longer than 2^53 bytes");
      }
      length = high * 2 ** 32 + low;
    }
    if (opcode >= 8 && (length > 125 || (b0 & 0x80) === 0)) {
      throw new ProtocolError("cloud sent an invalid control frame");
    }
    return {
      fin: (b0 & 0x80) !== 0,
      opcode,
      length,
      headerLength,
      maskAt: masked ? at + headerLength - 4 : -1,
    };
  }

  /**
   * After a data frame's payload ended at `to`: appends the payloads of the
   * binary frames that follow in the window, so that one write carries them
   * all (many small frames in one read).
   */
  #coalesce(to: number): number {
    while (true) {
      const header = this.#header();
      if (
        header === null || header.maskAt >= 0 ||
        !(header.opcode === 2 || (header.opcode === 0 && !this.#messageText))
      ) {
        return to;
      }
      const from = this.#rxStart + header.headerLength;
      const take = Math.min(header.length, this.#rxEnd - from);
      this.#rx.copyWithin(to, from, from + take);
      to += take;
      this.#rxStart = from + take;
      this.#left = header.length - take;
      this.#rxMask = null;
      this.#messageText = false;
      this.#inText = false;
      if (this.#left > 0) return to;
    }
  }

  #unmask(from: number, length: number): void {
    const key = this.#rxMask!;
    for (let i = 0; i < length; i++) {
      this.#rx[from + i] = this.#rx[from + i]! ^
        key[(this.#rxMaskOffset + i) & 3]!;
    }
    this.#rxMaskOffset = (this.#rxMaskOffset + length) & 3;
  }

  #control(header: FrameHeader): void {
    const from = this.#rxStart + header.headerLength;
    const payload = this.#rx.slice(from, from + header.length);
    if (header.maskAt >= 0) {
      for (let i = 0; i < payload.length; i++) {
        payload[i] = payload[i]! ^ this.#rx[header.maskAt + (i & 3)]!;
      }
    }
    this.#rxStart = from + header.length;
    if (header.opcode === 0x9) {
      this.#writeControl(0xa, payload).catch(() => {});
    } else if (header.opcode === 0x8) {
      const code = payload.length >= 2
        ? (payload[0]! << 8) | payload[1]!
        : 1005;
      const reason = new TextDecoder().decode(payload.subarray(2));
      this.#closeReceived = { code, reason };
      if (this.#closeSent) {
        this.#finish(this.#closeReceived);
      } else {
        // Echo the close frame, then the socket is done.
        this.#closeSent = true;
        const info = this.#closeReceived;
        this.#writeControl(
          0x8,
          payload.length >= 2 ? payload.subarray(0, 2) : [],
        )
          .catch(() => {})
          .finally(() => this.#finish(info));
      }
    }
    // Pong (0xA): nothing to do.
  }

  /** The connection ended: the close code, or 1006 without a close frame. */
  #ended(): null {
    this.#finish(
      this.#closeReceived ?? { code: 1006, reason: "connection lost" },
    );
    return null;
  }

  #finish(info: { code: number; reason: string }): void {
    if (this.#finished) return;
    this.#finished = true;
    growthInUse -= this.#grown;
    this.#grown = 0;
    clearTimeout(this.#closeTimer);
    closeQuietly(this.#conn);
    this.#resolveClosed(info);
  }
}

/** The CloudLeg view of a socket; the streams are made only if someone asks for them. */
function legOf(socket: WebSocketClient): CloudLeg {
  let readable: ReadableStream<string | Uint8Array> | undefined;
  let writable: WritableStream<Uint8Array> | undefined;
  return {
    protocol: socket.protocol,
    closed: socket.closed,
    socket,
    close: (reason) => socket.close(1000, reason),
    get readable() {
      return readable ??= streamFrom(socket);
    },
    get writable() {
      return writable ??= streamTo(socket);
    },
  };
}

/** Binary payloads as a pull stream (copies: the socket reuses its buffer). */
function streamFrom(socket: WebSocketClient): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const bytes = await socket.receive();
      if (bytes === null) controller.close();
      else controller.enqueue(bytes.slice());
    },
    cancel: () => socket.abort(),
  }, { highWaterMark: 0 });
}

/** A stream whose chunks are sent as binary frames (cut to the send space). */
function streamTo(socket: WebSocketClient): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>({
    async write(chunk) {
      let offset = 0;
      while (offset < chunk.length) {
        const space = socket.sendSpace();
        const n = Math.min(space.length, chunk.length - offset);
        space.set(chunk.subarray(offset, offset + n));
        offset += n;
        await socket.send(n);
      }
    },
    abort: () => socket.abort(),
  });
}

function base64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Index of the blank line ending an HTTP head in `bytes[0, end)`, or -1. */
function headEnd(bytes: Uint8Array, end: number): number {
  for (let i = 3; i < end; i++) {
    if (
      bytes[i] === 10 && bytes[i - 1] === 13 && bytes[i - 2] === 10 &&
      bytes[i - 3] === 13
    ) {
      return i + 1;
    }
  }
  return -1;
}

/** Options of {@linkcode cloudSocketOpener}. */
export interface CloudSocketOptions {
  /** Extra trusted CA certificates (PEM) for wss, added to the built-in roots. */
  readonly caCerts?: readonly string[];
  /**
   * Opens the TCP connection to the cloud's host:port instead of
   * `Deno.connect`, e.g. through an HTTP CONNECT proxy (lib/cloud/opener.ts);
   * TLS is then started on what it returns.
   */
  readonly dial?: (
    hostname: string,
    port: number,
    signal: AbortSignal,
  ) => Promise<Deno.TcpConn>;
}

/**
 * An opener of cloud legs with the agent's own WebSocket client (see the
 * module doc), subprotocol `binary`. Bytes the cloud sends right after its
 * handshake answer are kept for the first receive.
 */
export function cloudSocketOpener(
  socketOptions: CloudSocketOptions = {},
): OpenCloudLeg {
  return async (url, options) => {
    options.signal.throwIfAborted();
    const target = new URL(url);
    const secure = target.protocol === "wss:";
    const hostname = target.hostname.replace(/^\[|\]$/g, "");
    const port = Number(target.port || (secure ? 443 : 80));
    let conn: Deno.Conn | undefined;
    const onAbort = () => {
      if (conn !== undefined) closeQuietly(conn);
    };
    options.signal.addEventListener("abort", onAbort, { once: true });
    try {
      const tcp = socketOptions.dial
        ? await socketOptions.dial(hostname, port, options.signal)
        : await Deno.connect({
          hostname,
          port,
          signal: options.signal,
        });
      conn = tcp;
      tcp.setNoDelay(true);
      if (secure) {
        conn = await Deno.startTls(tcp, {
          hostname,
          ...(socketOptions.caCerts
            ? { caCerts: [...socketOptions.caCerts] }
            : {}),
        });
      }
      const key = base64(crypto.getRandomValues(new Uint8Array(16)));
      let head = `GET ${target.pathname}${target.search} HTTP/1.1\r\n` +
        `Host: ${target.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
        `Sec-WebSocket-Protocol: binary\r\nUser-Agent: c8y-tunnel\r\n`;
      for (const [name, value] of options.headers) {
        head += `${name}: ${value}\r\n`;
      }
      await writeAll(conn, encoder.encode(head + "\r\n"));
      // The answer is read into what becomes the session's receive buffer.
      let rx = new Uint8Array(BUFFER_START_BYTES);
      let end = 0;
      let bodyAt = -1;
      while (bodyAt < 0) {
        if (end === rx.length) {
          if (rx.length >= RESPONSE_HEAD_MAX_BYTES) {
            throw new ProtocolError("the handshake answer is too long");
          }
          const bigger = new Uint8Array(rx.length * 2);
          bigger.set(rx);
          rx = bigger;
        }
        const n = await conn.read(rx.subarray(end));
        if (n === null) {
          throw new ProtocolError("connection closed during the handshake");
        }
        end += n;
        bodyAt = headEnd(rx, end);
      }
      const lines = new TextDecoder().decode(rx.subarray(0, bodyAt)).split(
        "\r\n",
      );
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
      if (status === null) {
        throw new ProtocolError(
          `not an HTTP answer: ${
            JSON.stringify((lines[0] ?? "").slice(0, 40))
          }`,
        );
      }
      const code = Number(status[1]);
      if (code !== 101) {
        throw new CloudConnectError(describeStatus(code), code);
      }
      const headers = new Map<string, string>();
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(":");
        if (colon > 0) {
          headers.set(
            line.slice(0, colon).trim().toLowerCase(),
            line.slice(colon + 1).trim(),
          );
        }
      }
      const digest = await crypto.subtle.digest(
        "SHA-1",
        encoder.encode(key + WS_GUID),
      );
      if (
        headers.get("upgrade")?.toLowerCase() !== "websocket" ||
        headers.get("sec-websocket-accept") !== base64(new Uint8Array(digest))
      ) {
        throw new ProtocolError("the server did not accept the WebSocket");
      }
      options.signal.throwIfAborted();
      // What came after the head stays: the cloud may send right away.
      return legOf(
        new WebSocketClient(
          conn,
          headers.get("sec-websocket-protocol") ?? "",
          rx,
          bodyAt,
          end,
        ),
      );
    } catch (error) {
      if (conn !== undefined) closeQuietly(conn);
      if (options.signal.aborted) throw options.signal.reason;
      if (error instanceof CloudConnectError) throw error;
      const detail = errorText(error);
      throw new CloudConnectError(
        `cannot reach the cloud at ${target.host}: ${detail}${
          /certificate|UnknownIssuer/i.test(detail)
            ? ": set c8y.root_cert_path to the CA (PEM) that signed its certificate"
            : ""
        }`,
        undefined,
        { cause: error },
      );
    } finally {
      options.signal.removeEventListener("abort", onAbort);
    }
  };
}

/** Opens the cloud leg with the agent's own WebSocket client (no extra CAs). */
export const openCloudSocket: OpenCloudLeg = cloudSocketOpener();

/**
 * Opens the cloud leg with the runtime's WebSocketStream (subprotocol
 * `binary`): correct and bounded, but it allocates a buffer per message;
 * kept for comparison (`openCloudSocket` is the default).
 *
 * The signal only ever reaches the runtime while the handshake is pending:
 * Deno 2.9.6 throws an uncaught "Bad resource ID" when a WebSocketStream's
 * signal aborts after the handshake has finished, successfully or not.
 */
export const openRuntimeWebSocketStream: OpenCloudLeg = async (
  url,
  options,
) => {
  options.signal.throwIfAborted();
  const handshake = new AbortController();
  const onAbort = () => handshake.abort(options.signal.reason);
  options.signal.addEventListener("abort", onAbort, { once: true });
  let stream: WebSocketStream;
  try {
    stream = new WebSocketStream(url, {
      protocols: ["binary"],
      headers: options.headers,
      signal: handshake.signal,
    });
  } catch (error) {
    options.signal.removeEventListener("abort", onAbort);
    throw new CloudConnectError(
      `Cannot open WebSocket to ${url}: ${String(error)}`,
      undefined,
      {
        cause: error,
      },
    );
  }
  const closed = stream.closed.then(
    // The runtime resolves with `closeCode` (as the spec says), typed as `code`.
    (info) => ({
      code: (info as { closeCode?: number }).closeCode ?? info.code ?? 1005,
      reason: info.reason ?? "",
    }),
    () => ({ code: 1006, reason: "connection lost" }),
  );
  try {
    const opened = await stream.opened;
    let closing = false;
    return {
      readable: opened.readable as ReadableStream<string | Uint8Array>,
      writable: opened.writable as WritableStream<Uint8Array>,
      protocol: opened.protocol,
      closed,
      close(reason) {
        if (closing) return;
        closing = true;
        try {
          // The spec's key is closeCode; the bundled types call it code.
          stream.close({ closeCode: 1000, reason } as WebSocketCloseInfo);
        } catch {
          // Already closed by the peer.
        }
      },
    };
  } catch (error) {
    if (options.signal.aborted) throw options.signal.reason;
    // The runtime reports HTTP statuses only inside its message text.
    const match = error instanceof Error
      ? STATUS_IN_MESSAGE.exec(error.message)
      : null;
    const status = match?.[1] ? Number(match[1]) : undefined;
    const message = status !== undefined
      ? describeStatus(status)
      : `cannot reach the cloud at ${new URL(url).host}: ${
        error instanceof Error ? error.message : String(error)
      }${
        /certificate|UnknownIssuer/i.test(String(error))
          ? ": set c8y.root_cert_path to the CA (PEM) that signed its certificate"
          : ""
      }`;
    throw new CloudConnectError(message, status, { cause: error });
  } finally {
    options.signal.removeEventListener("abort", onAbort);
  }
};
