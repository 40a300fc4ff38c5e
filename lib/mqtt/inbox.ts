/**
 * The queue between reading the broker's connection and handling what it
 * brought. mosquitto drops every packet it would queue for a client past
 * its `max_queued_messages` (1000 by default), QoS 1 messages included, and
 * never resends a QoS 1 message it dropped while the connection lasts: a
 * client that handles each message before it reads the next one loses valid
 * requests whenever a flood outruns it (docs/hostile-mqtt.md). So the
 * socket reader only copies each taken message into a fixed ring buffer
 * and reads on, and {@linkcode Inbox} hands the messages to the handler in
 * slices of a fraction of a millisecond, giving the event loop a turn
 * between slices so that reading keeps pace with the broker. Messages stay
 * in order, oversized reports among them (a QoS 1 acknowledgement goes out
 * when its message was handled, and acknowledgements keep the order of
 * their messages, as MQTT 3.1.1 §4.6 requires). When the ring is full the
 * reader waits: memory stays bounded, and only then does the broker queue.
 *
 * Under overload (more than `overloadItems` messages or `overloadBytes`
 * waiting) a message larger than `shedOverBytes` (16 KiB: Cumulocity never
 * sends more) is not queued but shed: reported in its place, acknowledged,
 * not handled. A flood's large payloads are what costs the handler most
 * (and the first ones most of all, while the parsers are not yet compiled),
 * so it keeps up with the small ones that requests are, and reading keeps
 * up with the broker.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import type { InboundMessage, OversizedMessage } from "./size_guard.ts";

/**
 * One queued item: a message taken for the handler, the report of one
 * skipped as over `mqtt.max_payload`, or of one shed under overload.
 */
export type InboxItem =
  | { readonly kind: "message"; readonly message: InboundMessage }
  | {
    readonly kind: "oversized" | "shed";
    readonly message: OversizedMessage;
  };

/** Options of {@linkcode Inbox}. */
export interface InboxOptions {
  /**
   * Bytes of the ring that queued payloads are copied into (allocated on
   * the first message, and only the part that a backlog reaches is ever
   * touched). Past it the reader waits.
   */
  readonly capacityBytes: number;
  /** Handles one item; a payload is valid only during the call. */
  readonly handle: (item: InboxItem) => void;
  /** A throw from `handle` (the connection is then failed). */
  readonly onError: (error: unknown) => void;
  /** Longest run of handling before the event loop gets a turn (default 0.5 ms). */
  readonly sliceMs?: number;
  /** Queued bytes past which larger messages are shed (default 64 KiB). */
  readonly overloadBytes?: number;
  /** Queued messages past which larger messages are shed (default 64). */
  readonly overloadItems?: number;
  /** Under overload, messages over this many bytes are shed (default 16 KiB). */
  readonly shedOverBytes?: number;
}

/**
 * Handling runs this long at most before reads get a turn (a prototype with
 * 2 ms and a 64 KiB read buffer still fell behind the flood's broker).
 */
const SLICE_MS = 0.5;

/**
 * Messages, or bytes, waiting past which the inbox is overloaded: one
 * message at a time is the usual, and only messages that Cumulocity never
 * sends are shed, so these can be low.
 */
const OVERLOAD_ITEMS = 64;
const OVERLOAD_BYTES = 64 * 1024;

/** Cumulocity's limit for an MQTT payload: no message from it is larger. */
export const SHED_OVER_BYTES = 16 * 1024;

/** Drops handled entries from the front of the queue array once this many have piled up. */
const COMPACT_AFTER = 1024;

/**
 * A bounded FIFO of messages from one connection: `put` copies, `kick`
 * starts the handling (it runs on by itself, in slices), `full` and
 * `room()` tell the reader when to wait.
 */
export class Inbox {
  readonly #options: InboxOptions;
  readonly #sliceMs: number;
  readonly #overloadBytes: number;
  readonly #overloadItems: number;
  readonly #shedOverBytes: number;
  #items: (InboxItem | undefined)[] = [];
  #head = 0;
  /** Payload bytes queued (in the ring or, when it had no room, on the heap). */
  #bytes = 0;
  #ring: Uint8Array | undefined;
  /** Where the next payload goes in the ring (when it fits there). */
  #tail = 0;
  #running = false;
  #closed = false;
  #roomWaiter: (() => void) | undefined;

  constructor(options: InboxOptions) {
    this.#options = options;
    this.#sliceMs = options.sliceMs ?? SLICE_MS;
    this.#overloadBytes = options.overloadBytes ?? OVERLOAD_BYTES;
    this.#overloadItems = options.overloadItems ?? OVERLOAD_ITEMS;
    this.#shedOverBytes = options.shedOverBytes ?? SHED_OVER_BYTES;
  }

  /** Items waiting to be handled. */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** True when the reader should wait for {@linkcode room} before reading on. */
  get full(): boolean {
    return this.#bytes >= this.#options.capacityBytes;
  }

  /**
   * Queues a taken message, its payload copied (the one given is valid only
   * now); under overload, a large one is shed instead.
   */
  put(message: InboundMessage): void {
    if (this.#closed) return;
    const bytes = message.payload.length;
    if (bytes > this.#shedOverBytes && this.#overloaded()) {
      const { topic, qos, packetId } = message;
      this.#items.push({
        kind: "shed",
        message: { topic, bytes, qos, packetId },
      });
      return;
    }
    const payload = this.#copy(message.payload);
    this.#bytes += bytes;
    this.#items.push({ kind: "message", message: { ...message, payload } });
  }

  #overloaded(): boolean {
    return this.#bytes >= this.#overloadBytes ||
      this.size >= this.#overloadItems;
  }

  /** Queues the report of a message skipped as oversized, so that it keeps its place. */
  putOversized(message: OversizedMessage): void {
    if (this.#closed) return;
    this.#items.push({ kind: "oversized", message });
  }

  /** Starts handling what is queued, unless that is already going on. */
  kick(): void {
    if (this.#running || this.size === 0) return;
    this.#running = true;
    this.#run().catch((error) => this.#options.onError(error));
  }

  /** Resolves once the queue is down to half its capacity, or closed. */
  room(): Promise<void> {
    if (!this.full || this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#roomWaiter = resolve;
    });
  }

  /**
   * The connection is gone: a waiting reader is released and nothing more
   * is put, but what is queued is still handled (each message came whole;
   * a request among them is served, only its acknowledgement goes nowhere).
   */
  close(): void {
    this.#closed = true;
    this.#wakeReader();
    this.kick();
  }

  async #run(): Promise<void> {
    try {
      let sliceStart = performance.now();
      while (this.size > 0) {
        const item = this.#items[this.#head]!;
        this.#items[this.#head++] = undefined;
        if (item.kind === "message") {
          this.#bytes -= item.message.payload.length;
        }
        this.#options.handle(item);
        if (this.#bytes * 2 <= this.#options.capacityBytes) this.#wakeReader();
        if (
          this.#head >= COMPACT_AFTER && this.#head * 2 >= this.#items.length
        ) {
          this.#items = this.#items.slice(this.#head);
          this.#head = 0;
        }
        if (performance.now() - sliceStart >= this.#sliceMs) {
          // A turn for the event loop: the reader's pending read completes.
          await new Promise((resolve) => setImmediate(resolve));
          sliceStart = performance.now();
        }
      }
    } finally {
      this.#running = false;
      if (this.size === 0) {
        this.#items = [];
        this.#head = 0;
        this.#tail = 0;
      }
      this.#wakeReader();
    }
  }

  #wakeReader(): void {
    const wake = this.#roomWaiter;
    this.#roomWaiter = undefined;
    wake?.();
  }

  /**
   * A copy of `payload` in the ring: at its tail, or at its start when the
   * tail is too near the end and the start is free; on the heap when the
   * ring has no such room (then the queue is past capacity and the reader
   * waits).
   */
  #copy(payload: Uint8Array): Uint8Array {
    const capacity = this.#options.capacityBytes;
    this.#ring ??= new Uint8Array(capacity);
    const oldest = this.#oldestInRing();
    const n = payload.length;
    let at = -1;
    if (oldest < 0) {
      at = n <= capacity ? 0 : -1;
    } else if (this.#tail > oldest) {
      if (capacity - this.#tail >= n) at = this.#tail;
      else if (oldest >= n) at = 0;
    } else if (oldest - this.#tail >= n) {
      at = this.#tail;
    }
    if (at < 0) return payload.slice();
    const copy = this.#ring.subarray(at, at + n);
    copy.set(payload);
    this.#tail = at + n;
    return copy;
  }

  /** Where the oldest queued payload in the ring starts, or -1 when none is. */
  #oldestInRing(): number {
    const ring = this.#ring?.buffer;
    for (let i = this.#head; i < this.#items.length; i++) {
      const item = this.#items[i]!;
      if (item.kind === "message" && item.message.payload.buffer === ring) {
        return item.message.payload.byteOffset;
      }
    }
    return -1;
  }
}
