/**
 * In-memory fakes of the two legs a pump moves bytes between: a
 * {@linkcode CloudLeg} and a target connection, both driven by the test, so
 * backpressure and endings can be checked step by step without timing.
 *
 * @module
 */
import type { CloseInfo, CloudLeg } from "../lib/cloud/leg.ts";

/** Chunks recorded in order (copies), with a wait for a total. */
class ByteLog {
  readonly chunks: Uint8Array[] = [];
  #total = 0;
  #waiters: { bytes: number; resolve: () => void }[] = [];

  add(chunk: Uint8Array): void {
    this.chunks.push(chunk.slice());
    this.#total += chunk.length;
    for (const waiter of [...this.#waiters]) {
      if (this.#total >= waiter.bytes) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  }

  /** Resolves once at least `bytes` have been added in total. */
  atLeast(bytes: number): Promise<void> {
    if (this.#total >= bytes) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ bytes, resolve }));
  }

  /** Everything added, joined. */
  joined(): Uint8Array {
    const out = new Uint8Array(this.#total);
    let at = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }
}

/** A cloud leg whose frames the test pushes and whose sends it can hold. */
export class FakeCloudLeg implements CloudLeg {
  readonly protocol = "binary";
  readonly closed: Promise<CloseInfo>;
  readonly #sent = new ByteLog();
  /** The reason given to close(), once called. */
  closeReason: string | undefined;
  /** Calls of receive() so far. */
  receives = 0;
  /** Called at the start of each receive() and send() (to check invariants). */
  onCall: (what: "receive" | "send") => void = () => {};
  #resolveClosed!: (info: CloseInfo) => void;
  #space = new Uint8Array(64 * 1024);
  #incoming: (Uint8Array | string | Error)[] = [];
  #ended: CloseInfo | null = null;
  #wake: (() => void) | null = null;
  #hold: PromiseWithResolvers<void> | null = null;
  /** A send() is waiting for releaseSends(). */
  sendPending = false;

  constructor() {
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
  }

  /** Queues bytes (or a text message) for receive(). */
  push(data: Uint8Array | string): void {
    this.#incoming.push(typeof data === "string" ? data : data.slice());
    this.#wakeUp();
  }

  /** Makes a later receive() reject with `error` (after what was pushed before). */
  fail(error: Error): void {
    this.#incoming.push(error);
    this.#wakeUp();
  }

  /** The cloud closes with `code` once what was pushed has been received. */
  end(code = 1000): void {
    this.#ended = { code, reason: "" };
    this.#wakeUp();
  }

  /** Sends wait from now on until releaseSends(). */
  holdSends(): void {
    this.#hold ??= Promise.withResolvers();
  }

  /** Lets held and later sends complete. */
  releaseSends(): void {
    this.#hold?.resolve();
    this.#hold = null;
  }

  /** Copies of every payload sent, in order. */
  get sent(): readonly Uint8Array[] {
    return this.#sent.chunks;
  }

  /** Resolves once at least `bytes` have been sent in total. */
  sentAtLeast(bytes: number): Promise<void> {
    return this.#sent.atLeast(bytes);
  }

  /** Everything sent, joined. */
  sentBytes(): Uint8Array {
    return this.#sent.joined();
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  sendSpace(): Uint8Array {
    return this.#space;
  }

  async send(length: number): Promise<void> {
    this.onCall("send");
    if (this.closeReason !== undefined) {
      throw new Error("Cannot send to the cloud: the WebSocket is closing");
    }
    this.#sent.add(this.#space.subarray(0, length));
    if (this.#hold) {
      this.sendPending = true;
      await this.#hold.promise;
      this.sendPending = false;
    }
  }

  async receive(onTextFrame?: () => void): Promise<Uint8Array | null> {
    this.onCall("receive");
    this.receives++;
    while (true) {
      if (this.closeReason !== undefined) return null;
      const next = this.#incoming.shift();
      if (next instanceof Error) throw next;
      if (typeof next === "string") {
        onTextFrame?.();
        continue;
      }
      if (next !== undefined) return next;
      if (this.#ended) {
        this.#resolveClosed(this.#ended);
        return null;
      }
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  close(reason: string): void {
    if (this.closeReason !== undefined) return;
    this.closeReason = reason;
    this.#wakeUp();
    this.releaseSends();
    this.#resolveClosed(this.#ended ?? { code: 1000, reason });
  }
}

/**
 * An in-memory target connection: reads return what the test pushed (null
 * after end()), writes are recorded and can be held.
 */
export class FakeTarget {
  readonly #written = new ByteLog();
  closed = false;
  /** Calls of read() so far. */
  reads = 0;
  /** Called at the start of each read() and write() (to check invariants). */
  onCall: (what: "read" | "write") => void = () => {};
  /** A write() is waiting for releaseWrites(). */
  writePending = false;
  #incoming: Uint8Array[] = [];
  #eof = false;
  #wake: (() => void) | null = null;
  #hold: PromiseWithResolvers<void> | null = null;
  #closedWaiters: (() => void)[] = [];

  /** Bytes for the pump's next reads. */
  push(bytes: Uint8Array): void {
    this.#incoming.push(bytes.slice());
    this.#wakeUp();
  }

  /** The target closes its side once what was pushed has been read. */
  end(): void {
    this.#eof = true;
    this.#wakeUp();
  }

  holdWrites(): void {
    this.#hold ??= Promise.withResolvers();
  }

  releaseWrites(): void {
    this.#hold?.resolve();
    this.#hold = null;
  }

  /** Everything written to the target, in order (copies). */
  get written(): readonly Uint8Array[] {
    return this.#written.chunks;
  }

  /** Resolves once at least `bytes` have been written in total. */
  writtenAtLeast(bytes: number): Promise<void> {
    return this.#written.atLeast(bytes);
  }

  /** Resolves once the pump closed the target. */
  whenClosed(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => this.#closedWaiters.push(resolve));
  }

  /** Everything written, joined. */
  writtenBytes(): Uint8Array {
    return this.#written.joined();
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  async read(into: Uint8Array): Promise<number | null> {
    this.onCall("read");
    this.reads++;
    while (true) {
      if (this.closed) throw new Deno.errors.BadResource("closed");
      const next = this.#incoming[0];
      if (next !== undefined) {
        const n = Math.min(next.length, into.length);
        into.set(next.subarray(0, n));
        if (n === next.length) this.#incoming.shift();
        else this.#incoming[0] = next.subarray(n);
        return n;
      }
      if (this.#eof) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  async write(bytes: Uint8Array): Promise<number> {
    this.onCall("write");
    if (this.closed) throw new Deno.errors.BadResource("closed");
    if (this.#hold) {
      this.writePending = true;
      await this.#hold.promise;
      this.writePending = false;
      if (this.closed) throw new Deno.errors.BadResource("closed");
    }
    this.#written.add(bytes);
    return bytes.length;
  }

  close(): void {
    if (this.closed) throw new Deno.errors.BadResource("closed twice");
    this.closed = true;
    this.#wakeUp();
    this.releaseWrites();
    for (const resolve of this.#closedWaiters.splice(0)) resolve();
  }
}
