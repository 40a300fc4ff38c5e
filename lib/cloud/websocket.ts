/**
 * The agent's own WebSocket client (RFC 6455), the default cloud leg: frames
 * are read into one reused buffer per session and payload views are handed
 * to the pump as they arrive (no ArrayBuffer per message, nothing read while
 * the target lags), and frames are written from one reused buffer with the
 * header in front of the payload and the payload masked in place (one write
 * per frame). Measured on loopback against the runtime's WebSocketStream:
 * more throughput both ways, half the per-session memory, no garbage per
 * chunk (see docs/bench.md).
 *
 * The client is strict: a frame that breaks the RFC fails the connection
 * (close 1002, 1007 for invalid UTF-8, 1009 for a data frame over
 * {@linkcode MAX_RECEIVE_FRAME_BYTES}) and {@linkcode WebSocketClient.receive}
 * rejects with a {@linkcode CloudProtocolError}; no byte of an invalid frame
 * reaches the caller. It only ever sends 1000, 1002, 1007, 1009, or the
 * valid code of a close frame it answers.
 *
 * It runs on any connection with `read`/`write`/`close` (TCP, TLS, or a
 * test's in-memory one); the handshake is lib/cloud/handshake.ts, the
 * choice of connection lib/cloud/opener.ts.
 *
 * @module
 */
import {
  BUFFER_START_BYTES,
  nextMaskKey,
  returnGrowth,
  takeGrowth,
} from "./_buffers.ts";
import { type CloseInfo, type CloudLeg, CloudProtocolError } from "./leg.ts";
import { closeQuietly, writeAll } from "../util/conn.ts";

/** Largest payload of a frame the agent sends; 64 KiB is a common server limit. */
export const MAX_FRAME_PAYLOAD = 64 * 1024;
/**
 * Largest data frame accepted from the cloud (the runtime's WebSocket has
 * the same limit). Payloads stream through the bounded receive buffer, so
 * this is not about memory: a longer frame is not something a remote-access
 * server sends, and the connection fails with 1009.
 */
export const MAX_RECEIVE_FRAME_BYTES = 64 * 1024 * 1024;
/** Receive buffer size limit; it grows from `BUFFER_START_BYTES` while reads fill it. */
const RECEIVE_MAX_BYTES = 64 * 1024;
/** Room in front of a payload for its header: 14 bytes at most; 16 keeps the payload 4-byte aligned. */
const HEADROOM = 16;
/** How long a close handshake may take before the connection is closed anyway. */
const CLOSE_WAIT_MS = 1000;
const encoder = new TextEncoder();

/** A byte connection the client runs on (`Deno.Conn` has it). */
export interface ByteConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
}

/**
 * Where the close handshake is; changed only by `#enter`.
 * - open: frames flow both ways;
 * - closing: we sent a close frame and drop data until the cloud answers;
 * - answering: the cloud sent a close frame and we are echoing it;
 * - failing: the cloud broke the protocol and we are sending our close code;
 * - closed: the connection is released.
 */
type CloseState =
  | { readonly name: "open" }
  | { readonly name: "closing" }
  | { readonly name: "answering"; readonly received: CloseInfo }
  | { readonly name: "failing"; readonly error: CloudProtocolError }
  | { readonly name: "closed"; readonly info: CloseInfo };

/** A parsed frame header at the start of the receive window. */
interface FrameHeader {
  readonly fin: boolean;
  readonly opcode: number;
  readonly length: number;
  readonly headerLength: number;
}

/** Why a frame header is invalid, and the close code that says so. */
interface Violation {
  readonly violation: string;
  readonly code: number;
}

/** A masked control frame (payload at most 125 bytes). */
function controlFrame(opcode: number, payload: ArrayLike<number>): Uint8Array {
  const frame = new Uint8Array(6 + payload.length);
  frame[0] = 0x80 | opcode;
  frame[1] = 0x80 | payload.length;
  nextMaskKey(frame, 2);
  for (let i = 0; i < payload.length; i++) {
    frame[6 + i] = payload[i]! ^ frame[2 + (i & 3)]!;
  }
  return frame;
}

/** Close codes an endpoint may send, so may receive: RFC 6455 §7.4 and the IANA registry. */
export function isValidCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999);
}

/**
 * One open WebSocket of the agent's own client: frame parsing and writing
 * on a connection, with the close handshake. The {@linkcode CloudLeg} the
 * pump uses.
 */
export class WebSocketClient implements CloudLeg {
  readonly protocol: string;
  readonly closed: Promise<CloseInfo>;
  readonly #conn: ByteConn;
  #resolveClosed!: (info: CloseInfo) => void;
  #state: CloseState = { name: "open" };
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  // Receive window [#rxStart, #rxEnd) of #rx.
  #rx: Uint8Array;
  #rxStart: number;
  #rxEnd: number;
  /** Payload bytes of the current data frame not yet taken. */
  #left = 0;
  /** The current data frame belongs to a text message (validated, dropped). */
  #frameText = false;
  /** The current data frame ends its message. */
  #frameFin = true;
  /** The kind of the fragmented message being continued, if one is open. */
  #message: "none" | "binary" | "text" = "none";
  /** Validates the UTF-8 of the text message in progress, across fragments. */
  #utf8: TextDecoder | null = null;
  /** The reader in progress, if any (one at a time). */
  #reading = false;
  // Send buffer: header in [HEADROOM - n, HEADROOM), payload after it.
  #tx: Uint8Array;
  #txWords: Uint32Array;
  #txSpace: Uint8Array;
  #writeTail: Promise<void> = Promise.resolve();
  /** Frames handed to #write and not yet written. */
  #writing = 0;
  /** Bytes this session's buffers grew beyond their start size (from the shared budget). */
  #grown = 0;
  /** Payload of the pong waiting in the write queue, if one is. */
  #pong: Uint8Array | null = null;

  /**
   * A client on `conn` after a successful handshake; the cloud's first bytes
   * (read with the handshake answer) are `rx[rxStart, rxEnd)`.
   */
  constructor(
    conn: ByteConn,
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

  /** The only place the close state changes; entering `closed` releases everything. */
  #enter(next: CloseState): void {
    const from = this.#state.name;
    if (from === "closed") return;
    this.#state = next;
    if (next.name === "closed") {
      returnGrowth(this.#grown);
      this.#grown = 0;
      clearTimeout(this.#closeTimer);
      closeQuietly(this.#conn);
      this.#resolveClosed(next.info);
    } else if (from === "open" && next.name !== "open") {
      // Whatever the cloud does now, the connection is released in time.
      this.#closeTimer = setTimeout(
        () => this.#enter({ name: "closed", info: this.#lostInfo("") }),
        CLOSE_WAIT_MS,
      );
    }
  }

  /** What `closed` reports when the connection ends without the close frame it waited for. */
  #lostInfo(reason: string): CloseInfo {
    const state = this.#state;
    if (state.name === "answering") return state.received;
    if (state.name === "failing") {
      return { code: state.error.code, reason: state.error.message };
    }
    return { code: 1006, reason };
  }

  sendSpace(): Uint8Array {
    return this.#txSpace;
  }

  send(length: number): Promise<void> {
    if (this.#state.name !== "open") {
      return Promise.reject(
        new Error(
          `Cannot send to the cloud: the WebSocket is ${this.#state.name}`,
        ),
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
    if (this.#state.name !== "open" || this.#reading) return null;
    this.#reading = true;
    try {
      const bytes = await this.#next(onTextFrame);
      if (bytes !== null && this.#state.name !== "open") {
        this.#drain();
        return null;
      }
      return bytes;
    } catch (error) {
      throw this.#broken(error);
    } finally {
      this.#reading = false;
    }
  }

  /** Sends a close frame (code 1000) once; the socket closes when the cloud answers, or after a second. */
  close(reason: string): void {
    if (this.#state.name !== "open") return;
    this.#enter({ name: "closing" });
    if (!this.#reading) this.#drain();
    // A close reason is at most 123 bytes; cut on a character boundary.
    const text = new Uint8Array(123);
    const { written } = encoder.encodeInto(reason, text); // whole characters only
    this.#writeControl(0x8, [0x03, 0xe8, ...text.subarray(0, written)])
      .catch(() => this.#enter({ name: "closed", info: this.#lostInfo("") }));
  }

  /** An error out of the receive loop: a protocol error has failed the connection already; anything else ends it. */
  #broken(error: unknown): unknown {
    if (!(error instanceof CloudProtocolError)) {
      this.#enter({ name: "closed", info: this.#lostInfo("connection lost") });
    }
    return error;
  }

  /** Reads and drops frames until the cloud answers our close (or the timer ends it). */
  async #drain(): Promise<void> {
    try {
      while (await this.#next() !== null) {
        // dropped: the session is over
      }
    } catch (error) {
      this.#broken(error);
    }
  }

  /**
   * Fails the connection (RFC 6455 §7.1.7): sends close `code`, releases
   * the connection once that is written (or within a second), and returns
   * the error for the caller to throw. Nothing more is read.
   */
  #fail(violation: Violation): CloudProtocolError {
    const error = new CloudProtocolError(
      `cloud broke the WebSocket protocol: ${violation.violation} (closed with ${violation.code})`,
      violation.code,
    );
    const state = this.#state.name;
    if (state === "closing") {
      // Our close frame is out already: a second one must not follow.
      this.#enter({
        name: "closed",
        info: { code: violation.code, reason: error.message },
      });
    }
    if (state !== "open") return error;
    this.#enter({ name: "failing", error });
    const info = { code: violation.code, reason: error.message };
    this.#writeControl(0x8, [violation.code >>> 8, violation.code & 0xff])
      .catch(() => {})
      .finally(() => this.#enter({ name: "closed", info }));
    return error;
  }

  async #next(onTextFrame?: () => void): Promise<Uint8Array | null> {
    while (true) {
      const state = this.#state.name;
      if (state !== "open" && state !== "closing") return null;
      if (this.#left > 0) {
        if (this.#rxStart === this.#rxEnd && !await this.#fill()) {
          return this.#ended();
        }
        const from = this.#rxStart;
        const take = Math.min(this.#left, this.#rxEnd - from);
        this.#rxStart += take;
        this.#left -= take;
        if (this.#frameText) {
          this.#checkText(from, take);
          continue;
        }
        // Data that arrives after our close frame is dropped.
        if (this.#state.name !== "open") continue;
        const to = this.#left === 0 ? this.#coalesce(from + take) : from + take;
        return this.#rx.subarray(from, to);
      }
      const header = this.#header();
      if (header === null) {
        if (!await this.#fill()) return this.#ended();
        continue;
      }
      if ("violation" in header) throw this.#fail(header);
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
      this.#startData(header, onTextFrame);
    }
  }

  /** Takes a data frame's header: checks it against the message in progress. */
  #startData(header: FrameHeader, onTextFrame?: () => void): void {
    const { opcode, fin } = header;
    if (opcode === 0 && this.#message === "none") {
      throw this.#fail({
        violation: "continuation frame without a message to continue",
        code: 1002,
      });
    }
    if (opcode !== 0 && this.#message !== "none") {
      throw this.#fail({
        violation: "new data frame while a fragmented message is still open",
        code: 1002,
      });
    }
    const kind = opcode === 0
      ? this.#message
      : opcode === 1
      ? "text"
      : "binary";
    this.#message = fin ? "none" : kind;
    this.#frameText = kind === "text";
    this.#frameFin = fin;
    if (opcode === 1) {
      this.#utf8 = new TextDecoder("utf-8", { fatal: true });
      onTextFrame?.();
    }
    this.#rxStart += header.headerLength;
    this.#left = header.length;
    if (this.#frameText && header.length === 0) this.#checkText(0, 0);
  }

  /**
   * Validates text payload bytes `rx[from, from + length)` (never
   * delivered); at the end of the message, that no character is cut.
   */
  #checkText(from: number, length: number): void {
    const decoder = this.#utf8!;
    try {
      if (length > 0) {
        decoder.decode(this.#rx.subarray(from, from + length), {
          stream: true,
        });
      }
      if (this.#left === 0 && this.#frameFin) decoder.decode();
    } catch {
      throw this.#fail({
        violation: "invalid UTF-8 in a text message",
        code: 1007,
      });
    }
  }

  /** A complete control frame (length and FIN checked by #header) at the window start. */
  #control(header: FrameHeader): void {
    const from = this.#rxStart + header.headerLength;
    const payload = this.#rx.slice(from, from + header.length);
    this.#rxStart = from + header.length;
    if (header.opcode === 0x9) {
      if (this.#state.name === "open") this.#answerPing(payload);
    } else if (header.opcode === 0x8) {
      this.#closeFrame(payload);
    }
    // Pong (0xA): nothing to do.
  }

  /** The cloud's close frame: echo a valid code, fail on an invalid one. */
  #closeFrame(payload: Uint8Array): void {
    if (payload.length === 1) {
      throw this.#fail({
        violation: "close frame with a 1-byte payload",
        code: 1002,
      });
    }
    const code = payload.length === 0 ? 1005 : (payload[0]! << 8) | payload[1]!;
    if (payload.length > 0 && !isValidCloseCode(code)) {
      throw this.#fail({
        violation: `close frame with the invalid code ${code}`,
        code: 1002,
      });
    }
    let reason: string;
    try {
      reason = new TextDecoder("utf-8", { fatal: true }).decode(
        payload.subarray(2),
      );
    } catch {
      throw this.#fail({
        violation: "close frame with a reason that is not UTF-8",
        code: 1007,
      });
    }
    const received = { code, reason };
    if (this.#state.name !== "open") {
      this.#enter({ name: "closed", info: received });
      return;
    }
    // Echo the code (none when it came without one), then the socket is done.
    this.#enter({ name: "answering", received });
    this.#writeControl(0x8, payload.subarray(0, 2))
      .catch(() => {})
      .finally(() => this.#enter({ name: "closed", info: received }));
  }

  /** The connection ended: the close code, or 1006 without a close frame. */
  #ended(): null {
    this.#enter({ name: "closed", info: this.#lostInfo("connection lost") });
    return null;
  }

  /**
   * Writes one whole frame; frames never interleave. Data frames come one at
   * a time from the pump, so the common case is a direct write.
   */
  #write(bytes: Uint8Array): Promise<void> {
    return this.#queued(
      this.#writing === 0
        ? writeAll(this.#conn, bytes)
        : this.#writeTail.then(() => writeAll(this.#conn, bytes)),
    );
  }

  /** Counts a write in the queue until it settles. */
  #queued(written: Promise<void>): Promise<void> {
    this.#writing++;
    this.#writeTail = written.then(this.#written, this.#written);
    return written;
  }

  readonly #written = (): void => {
    this.#writing--;
  };

  /**
   * Answers a ping with a pong. While a pong waits in the write queue (a
   * cloud that sends pings but does not read), a newer ping only replaces
   * its payload (RFC 6455 §5.5.3): a ping flood queues one pong at most.
   */
  #answerPing(payload: Uint8Array): void {
    const queued = this.#pong !== null;
    this.#pong = payload;
    if (queued) return;
    const send = () => {
      const latest = this.#pong!;
      this.#pong = null;
      return writeAll(this.#conn, controlFrame(0xa, latest));
    };
    this.#queued(this.#writing === 0 ? send() : this.#writeTail.then(send))
      .catch(() => {});
  }

  #writeControl(opcode: number, payload: ArrayLike<number>): Promise<void> {
    return this.#write(controlFrame(opcode, payload));
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
      if (this.#state.name === "closed") return false;
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
    if (this.#state.name === "closed" || !takeGrowth(bytes)) return false;
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

  /**
   * The frame header at the window start: null when it is not all there
   * yet, a {@linkcode Violation} when it breaks the RFC on its own (the
   * message state is checked by the caller). Changes nothing.
   */
  #header(): FrameHeader | Violation | null {
    const rx = this.#rx;
    const at = this.#rxStart;
    const available = this.#rxEnd - at;
    if (available < 2) return null;
    const b0 = rx[at]!;
    const b1 = rx[at + 1]!;
    if (b0 & 0x70) {
      return { violation: "frame with reserved bits (RSV) set", code: 1002 };
    }
    const opcode = b0 & 0x0f;
    if ((opcode > 2 && opcode < 8) || opcode > 10) {
      return { violation: `frame with reserved opcode ${opcode}`, code: 1002 };
    }
    if (b1 & 0x80) {
      return { violation: "masked frame from the server", code: 1002 };
    }
    const len7 = b1 & 0x7f;
    const fin = (b0 & 0x80) !== 0;
    if (opcode >= 8) {
      if (!fin) return { violation: "fragmented control frame", code: 1002 };
      if (len7 > 125) {
        return { violation: "control frame longer than 125 bytes", code: 1002 };
      }
    }
    const headerLength = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0);
    if (available < headerLength) return null;
    let length = len7;
    if (len7 === 126) {
      length = (rx[at + 2]! << 8) | rx[at + 3]!;
    } else if (len7 === 127) {
      const high = ((rx[at + 2]! << 24) | (rx[at + 3]! << 16) |
        (rx[at + 4]! << 8) | rx[at + 5]!) >>> 0;
      const low = ((rx[at + 6]! << 24) | (rx[at + 7]! << 16) |
        (rx[at + 8]! << 8) | rx[at + 9]!) >>> 0;
      if (high > 0x7fffffff) {
        return { violation: "frame length with the top bit set", code: 1002 };
      }
      length = high * 2 ** 32 + low;
    }
    if (length > MAX_RECEIVE_FRAME_BYTES) {
      return {
        violation:
          `frame of ${length} bytes (the limit is ${MAX_RECEIVE_FRAME_BYTES})`,
        code: 1009,
      };
    }
    return { fin, opcode, length, headerLength };
  }

  /**
   * After a binary frame's payload ended at `to`: appends the payloads of
   * the complete-or-partial binary frames that follow in the window, so that
   * one write carries them all (many small frames in one read). Stops at
   * anything else (a control frame, text, an invalid header: the next
   * receive deals with it).
   */
  #coalesce(to: number): number {
    while (true) {
      const header = this.#header();
      if (
        header === null || "violation" in header ||
        !(header.opcode === 2
          ? this.#message === "none"
          : header.opcode === 0 && this.#message === "binary")
      ) {
        return to;
      }
      this.#message = header.fin ? "none" : "binary";
      const from = this.#rxStart + header.headerLength;
      const take = Math.min(header.length, this.#rxEnd - from);
      this.#rx.copyWithin(to, from, from + take);
      to += take;
      this.#rxStart = from + take;
      this.#left = header.length - take;
      this.#frameText = false;
      this.#frameFin = header.fin;
      if (this.#left > 0) return to;
    }
  }
}
