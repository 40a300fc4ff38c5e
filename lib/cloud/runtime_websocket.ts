/**
 * The cloud leg on the runtime's `WebSocket`, used only for an https://
 * proxy: TLS to the proxy itself cannot carry a second TLS session through
 * `Deno.startTls`, so the agent's own client cannot run there, and the
 * runtime's `new WebSocket(url, { client })` over `Deno.createHttpClient({
 * proxy, caCerts })` can (Deno 2.9.6's WebSocketStream ignores a `client`,
 * checked). Adapted here to the frame-level {@linkcode CloudLeg}.
 *
 * Sending: `send()` copies the frame (checked), so the send space is one
 * reused buffer. Nothing signals that the runtime's queue (`bufferedAmount`)
 * drained, so a send that leaves more than {@linkcode SEND_HIGH_WATER_BYTES}
 * queued waits until it is below half of that, sleeping for the time the
 * queue should take to drain at the rate last seen (one timer per few MiB
 * at full speed, not one per frame).
 *
 * Receiving has a limit this adapter cannot lift: the runtime reads and
 * queues every message as it arrives, whatever the target's speed (no
 * backpressure towards the cloud), and enforces its own 64 MiB message limit
 * and protocol checks. A slow target behind an https:// proxy therefore
 * makes the agent queue what the cloud sends.
 *
 * @module
 */
import {
  type CloseInfo,
  CloudConnectError,
  cloudConnectFailure,
  type CloudLeg,
  type OpenCloudLeg,
} from "./leg.ts";
import type { ProxySettings } from "./http_connect.ts";
import { MAX_FRAME_PAYLOAD } from "./websocket.ts";

/** What the runtime's HTTP client needs for the cloud leg. */
export interface CloudHttpOptions {
  /** Proxy URL ("http://host:port") and its credentials, when one is configured. */
  readonly proxy?: ProxySettings;
  /** Extra trusted CA certificates (PEM texts), added to the built-in roots. */
  readonly caCerts?: readonly string[];
}

/** Above this many queued bytes, a send waits (about full speed on loopback). */
export const SEND_HIGH_WATER_BYTES = 4 * 1024 * 1024;
/** A waiting send resumes once the queue is below this. */
const SEND_LOW_WATER_BYTES = SEND_HIGH_WATER_BYTES / 2;
/** Longest single sleep while the queue drains. */
const MAX_WAIT_MS = 50;

/** A runtime HTTP client for `options`; the caller closes it. */
export function createCloudHttpClient(
  options: CloudHttpOptions,
): Deno.HttpClient {
  return Deno.createHttpClient({
    ...(options.caCerts ? { caCerts: [...options.caCerts] } : {}),
    ...(options.proxy
      ? {
        proxy: {
          url: options.proxy.url,
          ...(options.proxy.basicAuth
            ? { basicAuth: { ...options.proxy.basicAuth } }
            : {}),
        },
      }
      : {}),
  });
}

/**
 * Opens the cloud leg with `new WebSocket(url, { client })` so that the proxy
 * and extra CAs apply (see the module doc for the receive-side limit). The
 * HTTP client lives only for the handshake.
 */
export function openWebSocketWithClient(
  options: CloudHttpOptions,
): OpenCloudLeg {
  return async (url, { headers, signal }) => {
    signal.throwIfAborted();
    const client = createCloudHttpClient(options);
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, {
        protocols: ["binary"],
        headers,
        client,
      } as WebSocketOptions);
    } catch (error) {
      client.close();
      throw new CloudConnectError(
        `Cannot open WebSocket to ${url}: ${String(error)}`,
        undefined,
        { cause: error },
      );
    }
    ws.binaryType = "arraybuffer";
    const leg = new RuntimeWebSocketLeg(ws);
    let onAbort = () => {};
    try {
      await new Promise<void>((resolve, reject) => {
        let failure = "connection closed during the handshake";
        ws.addEventListener("open", () => resolve(), { once: true });
        ws.addEventListener("error", (event) => {
          failure = (event as ErrorEvent).message || failure;
        });
        ws.addEventListener(
          "close",
          () =>
            reject(
              cloudConnectFailure(
                new Error(
                  failure.replace(/^failed to connect to WebSocket: /, ""),
                ),
                new URL(url).host,
                options.proxy?.url,
              ),
            ),
          { once: true },
        );
        onAbort = () => {
          reject(signal.reason);
          try {
            ws.close();
          } catch {
            // Already closing.
          }
        };
        signal.addEventListener("abort", onAbort, { once: true });
      });
    } finally {
      signal.removeEventListener("abort", onAbort);
      client.close();
    }
    return leg;
  };
}

/** The frame-level leg over a runtime WebSocket; handlers are attached at once so no early frame is lost. */
class RuntimeWebSocketLeg implements CloudLeg {
  readonly closed: Promise<CloseInfo>;
  readonly #ws: WebSocket;
  readonly #space = new Uint8Array(MAX_FRAME_PAYLOAD);
  /** Messages received and not yet taken, from #head on. */
  #queue: (Uint8Array | string)[] = [];
  #head = 0;
  /** Resolves the pending receive's wait. */
  #wake: (() => void) | null = null;
  /** Resolves the pending send's wait. */
  #sendWake: (() => void) | null = null;
  #ended = false;
  /** Bytes per millisecond the send queue drained at, last time it was measured. */
  #drainRate = 64 * 1024;

  constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (event: MessageEvent) => {
      const data = event.data;
      this.#queue.push(
        data instanceof ArrayBuffer ? new Uint8Array(data) : String(data),
      );
      this.#wakeUp();
    };
    this.closed = new Promise((resolve) => {
      ws.addEventListener("close", (event) => {
        this.#ended = true;
        this.#wakeUp();
        this.#sendWake?.();
        // Deno reports code 0 when the connection broke without a close frame.
        resolve({
          code: event.code === 0 ? 1006 : event.code,
          reason: event.reason,
        });
      }, { once: true });
    });
  }

  get protocol(): string {
    return this.#ws.protocol;
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
    const ws = this.#ws;
    if (ws.readyState !== WebSocket.OPEN) {
      throw new Error("Cannot send to the cloud: the WebSocket is closed");
    }
    ws.send(this.#space.subarray(0, length)); // copies
    if (ws.bufferedAmount <= SEND_HIGH_WATER_BYTES) return;
    while (ws.bufferedAmount > SEND_LOW_WATER_BYTES && !this.#ended) {
      const before = ws.bufferedAmount;
      const start = performance.now();
      const ms = Math.min(
        MAX_WAIT_MS,
        Math.max(1, (before - SEND_LOW_WATER_BYTES) / this.#drainRate),
      );
      await this.#sleep(ms);
      const drained = before - ws.bufferedAmount;
      const elapsed = performance.now() - start;
      if (drained > 0 && elapsed > 0) this.#drainRate = drained / elapsed;
    }
  }

  /** Waits `ms`, or less when the socket closes. */
  async #sleep(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      this.#sendWake = resolve;
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    this.#sendWake = null;
  }

  async receive(onTextFrame?: () => void): Promise<Uint8Array | null> {
    while (true) {
      if (this.#head < this.#queue.length) {
        const message = this.#queue[this.#head]!;
        this.#queue[this.#head++] = "";
        if (this.#head === this.#queue.length) {
          this.#queue = [];
          this.#head = 0;
        }
        if (typeof message === "string") {
          onTextFrame?.();
          continue;
        }
        return message;
      }
      if (this.#ended || this.#ws.readyState >= WebSocket.CLOSING) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  close(reason: string): void {
    try {
      this.#ws.close(1000, reason);
    } catch {
      // Already closed by the peer.
    }
  }
}
