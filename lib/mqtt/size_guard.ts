/**
 * Keeps oversized MQTT messages out of the MQTT client's buffers. npm
 * `mqtt` collects every packet whole before it hands it over, so a 100 MiB
 * PUBLISH from the broker would become 100 MiB in the agent before any
 * size check could run. {@linkcode PublishSizeFilter} reads the byte
 * stream from the broker (MQTT 3.1.1, the protocol the link speaks) packet
 * header by packet header and lets every packet through untouched except a
 * PUBLISH whose payload is larger than the limit: of that it keeps only the
 * topic and packet id, skips the rest as it arrives, and reports it (the
 * link logs it and acknowledges a QoS 1 message itself, so the broker does
 * not send it again). socket.ts applies the filter to the client's
 * connection.
 *
 * The daemon's link goes one step further and gives the filter a `take`
 * handler: then every QoS 0/1 PUBLISH within the limit is read here and
 * handed over as topic and payload view, and the client sees only the
 * other packets. Under a flood of small messages, MQTT.js's way of reading
 * one (stream, buffer list, packet object, events) cost a third of the
 * agent's time (docs/hostile-mqtt.md).
 *
 * (MQTT 5's CONNECT property Maximum Packet Size would make a broker drop
 * such messages itself, but the embedded aedes broker of the demo and tests
 * speaks only 3.1.1, and a filter here needs nothing from the broker.)
 *
 * @module
 */
/** A PUBLISH that the filter kept out. */
export interface OversizedMessage {
  /** Topic name (decoded as UTF-8). */
  readonly topic: string;
  /** Payload bytes. */
  readonly bytes: number;
  readonly qos: number;
  /** Packet id (QoS 1 and 2), else 0. */
  readonly packetId: number;
}

/** A PUBLISH that the filter handed to its `take` handler. */
export interface InboundMessage {
  /** Topic name (decoded as UTF-8). */
  readonly topic: string;
  /** Payload: a view into the read buffer, valid only during the call. */
  readonly payload: Uint8Array;
  readonly qos: number;
  /** Packet id (QoS 1), else 0. */
  readonly packetId: number;
}

const PUBLISH = 3;

/** Decodes the topic of a skipped message (one decoder: making one per message costs). */
const TOPIC_DECODER = new TextDecoder();

type State =
  /** Reading a fixed header (type byte + remaining length). */
  | { readonly kind: "header" }
  /** Passing `left` more bytes of the current packet through. */
  | { readonly kind: "pass"; left: number }
  /** Collecting the variable header of a large PUBLISH to decide. */
  | { readonly kind: "inspect"; readonly remaining: number }
  /** Collecting a PUBLISH that goes to `take` (`packet`: its variable header and payload). */
  | {
    readonly kind: "collect";
    readonly flags: number;
    readonly packet: Uint8Array;
    filled: number;
  }
  /** Skipping `left` more bytes of an oversized PUBLISH. */
  | { readonly kind: "skip"; left: number }
  /** The stream is not MQTT as expected: pass everything (the client fails it). */
  | { readonly kind: "broken" };

/**
 * The fixed header at `at` when it lies wholly in `bytes`: its length and
 * the packet's remaining length; "malformed" for a remaining length longer
 * than 4 bytes; undefined when `bytes` ends inside it.
 */
function wholeHeader(
  bytes: Uint8Array,
  at: number,
): { length: number; remaining: number } | "malformed" | undefined {
  let remaining = 0;
  let factor = 1;
  for (let i = 1; i <= 4; i++) {
    const byte = bytes[at + i];
    if (byte === undefined) return undefined;
    remaining += (byte & 0x7f) * factor;
    factor *= 128;
    if (!(byte & 0x80)) return { length: i + 1, remaining };
  }
  return "malformed";
}

/**
 * The message in a PUBLISH's variable header and payload (`body`), with
 * fixed-header flags `flags`; undefined when the topic and packet id do not
 * fit in it (the client then fails the connection).
 */
function publishOf(
  flags: number,
  body: Uint8Array,
): InboundMessage | undefined {
  const qos = (flags >> 1) & 3;
  if (body.length < 2) return undefined;
  const topicLength = (body[0]! << 8) | body[1]!;
  const payloadStart = 2 + topicLength + (qos > 0 ? 2 : 0);
  if (payloadStart > body.length) return undefined;
  return {
    topic: TOPIC_DECODER.decode(body.subarray(2, 2 + topicLength)),
    payload: body.subarray(payloadStart),
    qos,
    packetId: qos > 0
      ? (body[2 + topicLength]! << 8) | body[3 + topicLength]!
      : 0,
  };
}

/** What {@linkcode PublishSizeFilter} tells its owner. */
export interface PublishSizeFilterHandlers {
  /** Each PUBLISH whose payload is over the limit (its payload skipped). */
  readonly onOversized: (message: OversizedMessage) => void;
  /**
   * When given, every other QoS 0 or 1 PUBLISH comes here instead of
   * through (the caller acknowledges a QoS 1 one): the client never parses
   * or buffers a message. Its payload is a view into the read buffer, valid
   * only during the call. Without it, such a PUBLISH passes through.
   */
  readonly take?: (message: InboundMessage) => void;
}

/**
 * Incremental filter over the bytes a broker sends: `push()` takes each
 * chunk as it arrives and returns the bytes to hand on, reporting each
 * PUBLISH whose payload exceeds `maxPayloadBytes` and, with `take`, handing
 * over every other QoS 0/1 PUBLISH. It holds at most a fixed header (5
 * bytes) plus a topic (64 KiB) of an oversized message, and one taken
 * message (at most `maxPayloadBytes` plus its topic) while its packet is
 * cut across chunks.
 */
export class PublishSizeFilter {
  readonly #limit: number;
  readonly #onOversized: (message: OversizedMessage) => void;
  readonly #take: ((message: InboundMessage) => void) | undefined;
  #state: State = { kind: "header" };
  /** Bytes of the current packet held back while its fate is open. */
  #held: Uint8Array = new Uint8Array(0);
  /**
   * Where a taken PUBLISH cut across chunks is put together: one buffer,
   * reused (`take` gets a view valid only during the call), grown to the
   * largest such packet (at most the limit plus a topic).
   */
  #assembly: Uint8Array = new Uint8Array(0);

  constructor(maxPayloadBytes: number, handlers: PublishSizeFilterHandlers) {
    this.#limit = maxPayloadBytes;
    this.#onOversized = handlers.onOversized;
    this.#take = handlers.take;
  }

  /** True for a PUBLISH (its fixed-header byte `first`) that goes to `take`. */
  #taken(first: number): boolean {
    return this.#take !== undefined && first >> 4 === PUBLISH &&
      ((first >> 1) & 3) < 2;
  }

  /**
   * Filters one chunk; returns the pieces to pass on, in order. Bytes that
   * pass and lie next to each other in `chunk` come out as one piece.
   */
  push(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let at = 0;
    /** Start of the run of passing bytes of `chunk` that ends at `at`, or -1. */
    let run = -1;
    const flush = () => {
      if (run >= 0 && at > run) out.push(chunk.subarray(run, at));
      run = -1;
    };
    while (at < chunk.length) {
      const state = this.#state;
      switch (state.kind) {
        case "broken":
          if (run < 0) run = at;
          at = chunk.length;
          break;
        case "pass": {
          const n = Math.min(state.left, chunk.length - at);
          if (run < 0) run = at;
          at += n;
          state.left -= n;
          if (state.left === 0) this.#state = { kind: "header" };
          break;
        }
        case "skip": {
          flush();
          const n = Math.min(state.left, chunk.length - at);
          at += n;
          state.left -= n;
          if (state.left === 0) this.#state = { kind: "header" };
          break;
        }
        case "collect": {
          flush();
          const n = Math.min(
            state.packet.length - state.filled,
            chunk.length - at,
          );
          state.packet.set(chunk.subarray(at, at + n), state.filled);
          state.filled += n;
          at += n;
          if (state.filled === state.packet.length) {
            this.#state = { kind: "header" };
            this.#deliver(state.flags, state.packet, out);
          }
          break;
        }
        case "header": {
          const header = this.#held.length === 0
            ? wholeHeader(chunk, at)
            : undefined;
          const first = chunk[at]!;
          if (header === undefined) {
            // The header is cut by the chunk's end: collect it byte by byte.
            flush();
            at = this.#readHeader(chunk, at, out);
          } else if (header === "malformed") {
            this.#state = { kind: "broken" };
          } else if (
            first >> 4 === PUBLISH && header.remaining > this.#limit
          ) {
            flush();
            this.#hold(chunk, at, at + header.length);
            at += header.length;
            this.#state = { kind: "inspect", remaining: header.remaining };
          } else if (this.#taken(first)) {
            flush();
            at += header.length;
            const end = at + header.remaining;
            if (end <= chunk.length) {
              // The whole packet is in this chunk: read in place, no copy.
              this.#deliver(first, chunk.subarray(at, end), out);
              at = end;
            } else {
              this.#state = {
                kind: "collect",
                flags: first,
                packet: this.#assemble(header.remaining),
                filled: 0,
              };
            }
          } else {
            if (run < 0) run = at;
            at += header.length;
            this.#state = header.remaining === 0
              ? { kind: "header" }
              : { kind: "pass", left: header.remaining };
          }
          break;
        }
        case "inspect":
          flush();
          at = this.#inspect(chunk, at, state.remaining, out);
          break;
      }
    }
    flush();
    return out;
  }

  /** Hands a taken PUBLISH over, or passes it on when it is malformed (the client fails it). */
  #deliver(flags: number, body: Uint8Array, out: Uint8Array[]): void {
    const message = publishOf(flags, body);
    if (message !== undefined) {
      this.#take!(message);
      return;
    }
    out.push(
      new Uint8Array([flags, ...remainingLength(body.length)]),
      body.slice(),
    );
    this.#state = { kind: "broken" };
  }

  /** A view of `bytes` bytes of the reused assembly buffer. */
  #assemble(bytes: number): Uint8Array {
    if (this.#assembly.length < bytes) {
      this.#assembly = new Uint8Array(
        Math.max(bytes, Math.min(2 * this.#assembly.length, this.#limit)),
      );
    }
    return this.#assembly.subarray(0, bytes);
  }

  #hold(chunk: Uint8Array, from: number, to: number): void {
    const held = new Uint8Array(this.#held.length + (to - from));
    held.set(this.#held);
    held.set(chunk.subarray(from, to), this.#held.length);
    this.#held = held;
  }

  #release(out: Uint8Array[]): void {
    if (this.#held.length > 0) out.push(this.#held);
    this.#held = new Uint8Array(0);
  }

  /**
   * Continues with a PUBLISH that is not skipped, whose first `length`
   * bytes (fixed header and maybe some of the variable header) are held:
   * collected for `take`, or passed on.
   */
  #accept(length: number, remaining: number, out: Uint8Array[]): void {
    const held = this.#held;
    const first = held[0]!;
    const have = held.length - length;
    if (!this.#taken(first)) {
      this.#release(out);
      this.#state = remaining === have
        ? { kind: "header" }
        : { kind: "pass", left: remaining - have };
      return;
    }
    this.#held = new Uint8Array(0);
    const packet = this.#assemble(remaining);
    packet.set(held.subarray(length));
    this.#state = { kind: "collect", flags: first, packet, filled: have };
    if (have === remaining) {
      this.#state = { kind: "header" };
      this.#deliver(first, packet, out);
    }
  }

  /** Takes header bytes one at a time until the remaining length is known. */
  #readHeader(chunk: Uint8Array, at: number, out: Uint8Array[]): number {
    while (at < chunk.length) {
      this.#hold(chunk, at, at + 1);
      at++;
      const held = this.#held;
      if (held.length < 2) continue;
      const last = held[held.length - 1]!;
      if (last & 0x80) {
        if (held.length === 5) { // a remaining length has at most 4 bytes
          this.#release(out);
          this.#state = { kind: "broken" };
          return at;
        }
        continue;
      }
      let remaining = 0;
      for (let i = held.length - 1; i >= 1; i--) {
        remaining = remaining * 128 + (held[i]! & 0x7f);
      }
      const type = held[0]! >> 4;
      if (type === PUBLISH && remaining > this.#limit) {
        this.#state = { kind: "inspect", remaining };
      } else if (type === PUBLISH) {
        this.#accept(held.length, remaining, out);
      } else {
        this.#release(out);
        this.#state = remaining === 0
          ? { kind: "header" }
          : { kind: "pass", left: remaining };
      }
      return at;
    }
    return at;
  }

  /** Collects topic (and packet id) of a large PUBLISH, then takes, passes or skips it. */
  #inspect(
    chunk: Uint8Array,
    at: number,
    remaining: number,
    out: Uint8Array[],
  ): number {
    const held = this.#held;
    const headerLength = held.findIndex((b, i) => i >= 1 && !(b & 0x80)) + 1;
    const qos = (held[0]! >> 1) & 3;
    const idLength = qos > 0 ? 2 : 0;
    // How many variable-header bytes are needed: the topic length first.
    let need = 2;
    if (held.length - headerLength >= 2) {
      const topicLength = (held[headerLength]! << 8) | held[headerLength + 1]!;
      need = 2 + topicLength + idLength;
    }
    const have = held.length - headerLength;
    const take = Math.min(need - have, chunk.length - at);
    this.#hold(chunk, at, at + take);
    at += take;
    const now = this.#held;
    const got = now.length - headerLength;
    if (got < 2) return at;
    const topicLength = (now[headerLength]! << 8) | now[headerLength + 1]!;
    const varHeader = 2 + topicLength + idLength;
    if (varHeader > remaining) {
      this.#release(out);
      this.#state = { kind: "broken" };
      return at;
    }
    if (got < varHeader) return at;
    const bytes = remaining - varHeader;
    if (bytes <= this.#limit) {
      this.#accept(headerLength, remaining, out);
      return at;
    }
    const topicStart = headerLength + 2;
    const topic = TOPIC_DECODER.decode(
      now.subarray(topicStart, topicStart + topicLength),
    );
    const packetId = qos > 0
      ? (now[topicStart + topicLength]! << 8) |
        now[topicStart + topicLength + 1]!
      : 0;
    this.#held = new Uint8Array(0);
    this.#state = { kind: "skip", left: bytes };
    this.#onOversized({ topic, bytes, qos, packetId });
    return at;
  }
}

/** The bytes of an MQTT remaining length `n` (the varint {@linkcode PublishSizeFilter} reads). */
export function remainingLength(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return out;
}

/** The PUBACK that acknowledges a QoS 1 message (MQTT 3.1.1 §3.4). */
export function pubAck(packetId: number): Uint8Array {
  return new Uint8Array([0x40, 0x02, packetId >> 8, packetId & 0xff]);
}
