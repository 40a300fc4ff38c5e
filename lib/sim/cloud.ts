/**
 * Local simulator of the Cumulocity Cloud Remote Access service, so the agent
 * can be tested, demonstrated and benchmarked without a tenant.
 *
 * Device side: `GET /service/remoteaccess/device/<key>` upgraded to a WebSocket
 * (subprotocol `binary` when asked for), exactly what the agent dials.
 * Client side: either in-process ({@linkcode RemoteAccessSim.openSession}) or a
 * local TCP listener ({@linkcode RemoteAccessSim.listen}) that behaves like
 * Cumulocity's local proxy (`c8y remoteaccess server`): every TCP connection
 * becomes one session with a fresh connection key, bridged byte for byte to
 * the device's WebSocket.
 *
 * @module
 */

/** One connection attempt of a device to the simulator's device endpoint. */
export interface DeviceHandshake {
  /** The connection key from the URL path. */
  readonly key: string;
  /** The `Authorization` header as sent, or null when absent. */
  readonly authorization: string | null;
  /** Subprotocols the device asked for (`Sec-WebSocket-Protocol`). */
  readonly protocols: readonly string[];
  /** When the request arrived (`performance.now()`). */
  readonly time: number;
  /**
   * HTTP status answered: 101 (upgraded), 400 (not a WebSocket upgrade),
   * 401 (refused by `authorize`), 404 (unknown key), 409 (key already has a
   * device), 503 (simulator closing), whatever {@linkcode RemoteAccessSim.refuse}
   * set, or 0 for a handshake held unanswered by {@linkcode RemoteAccessSim.hang}.
   */
  readonly status: number;
}

/** Options of {@linkcode RemoteAccessSim.start}. */
export interface RemoteAccessSimOptions {
  /** Address to listen on. Default `127.0.0.1`. */
  hostname?: string;
  /** Port to listen on. Default 0 (any free port). */
  port?: number;
  /** PEM certificate chain; with `key`, the simulator serves https/wss. */
  cert?: string;
  /** PEM private key belonging to `cert`. */
  key?: string;
  /** Decides on the `Authorization` header; return false to answer 401. Default: accept all. */
  authorize?: (authorization: string | null) => boolean;
}

/** How a device WebSocket ended: the close frame's code and reason. */
export interface CloseInfo {
  readonly code: number;
  readonly reason: string;
}

/** The user's side of one remote-access session, as seen by the simulator. */
export interface ClientSession extends AsyncDisposable {
  /** Connection key the device must connect with. */
  readonly key: string;
  /**
   * Resolves when the device's WebSocket for this key is open. Rejects when
   * the session ends before that (disposed, dropped, simulator closed).
   */
  readonly connected: Promise<void>;
  /**
   * Sends bytes to the device as one binary frame; queued (copied) until the
   * device is connected. Like `WebSocket.send`, data given after the session
   * started closing is discarded.
   */
  send(data: Uint8Array): void;
  /** Bytes from the device, one chunk per binary frame; ends when the device side closes. */
  readonly received: ReadableStream<Uint8Array>;
  /**
   * Resolves when the device WebSocket has closed, with the code and reason of
   * the close frame that ended it (the device's when it closed first, ours
   * when we did; 1006 when it broke without one or never connected).
   */
  readonly closed: Promise<CloseInfo>;
  /**
   * Closes normally (close frame, default 1000). Bytes already given to
   * `send()` are delivered first; before the device connects, the close waits
   * for it so that queued bytes are not lost.
   */
  close(code?: number, reason?: string): void;
  /**
   * Simulates the cloud dropping the connection mid-stream: queued bytes are
   * discarded and the device gets close code 1011 at once. Deno cannot reset
   * the TCP connection of an upgraded WebSocket, so this is a close frame, not
   * a TCP reset; frames already handed to the runtime still precede it.
   * Before the device connects, the session is forgotten (its key gets 404).
   */
  drop(): void;
}

/** A local TCP listener of the simulator (like `c8y remoteaccess server`). */
export interface ClientListener extends AsyncDisposable {
  /** Port it listens on. */
  readonly port: number;
  /** Address it listens on. */
  readonly hostname: string;
  /** Stops accepting and ends every session it started. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@linkcode RemoteAccessSim.listen}. */
export interface ListenOptions {
  /** Address to listen on. Default `127.0.0.1`. */
  hostname?: string;
  /** Port to listen on. Default 0 (any free port). */
  port?: number;
  /**
   * Called once per accepted TCP connection with its fresh connection key;
   * the caller makes the device connect (e.g. publishes a 530 for it). If it
   * throws, that connection is closed.
   */
  onRequest: (key: string) => void | Promise<void>;
  /** Told about an `onRequest` failure. Default: `console.error`. */
  onError?: (error: unknown, key: string) => void;
}

/** Builds a SmartREST 530 line (`530,<device>,<host>,<port>,<key>`), CSV-quoting fields where needed. */
export function smartRest530(
  deviceId: string,
  host: string,
  port: number,
  key: string,
): string {
  return ["530", deviceId, host, String(port), key].map(csvField).join(",");
}

function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

const DEVICE_PATH = /^\/service\/remoteaccess\/device\/([^/]+)\/?$/;
/** Bytes a listener session queues before the device connects; above it, the TCP client is not read. */
const PRECONNECT_LIMIT = 1024 * 1024;
/** Above this `ws.bufferedAmount`, the TCP client is not read. */
const HIGH_WATER = 4 * 1024 * 1024;
const POLL_MS = 1;
const READ_CHUNK = 64 * 1024;
/** Size of the buffer that merges queued device frames into one TCP write. */
const COALESCE = 1024 * 1024;
const UNCONNECTED: CloseInfo = {
  code: 1006,
  reason: "session ended before the device connected",
};

type SessionState =
  | {
    kind: "waiting";
    queue: Uint8Array[];
    bytes: number;
    ws: WebSocket | null;
    closeRequest: CloseInfo | null;
  }
  | { kind: "open"; ws: WebSocket }
  | { kind: "closing"; ws: WebSocket; sent: CloseInfo }
  | { kind: "closed"; info: CloseInfo };

/** One session: the client side plus, once connected, the device WebSocket. */
class Session implements ClientSession {
  readonly key: string;
  readonly connected: Promise<void>;
  readonly closed: Promise<CloseInfo>;
  readonly received: ReadableStream<Uint8Array>;
  #state: SessionState = {
    kind: "waiting",
    queue: [],
    bytes: 0,
    ws: null,
    closeRequest: null,
  };
  #connected = Promise.withResolvers<void>();
  #closed = Promise.withResolvers<CloseInfo>();
  #changed = Promise.withResolvers<void>();
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #sink: ((chunk: Uint8Array) => void) | null;
  #onEnd: (session: Session) => void;

  constructor(
    key: string,
    onEnd: (session: Session) => void,
    sink: ((chunk: Uint8Array) => void) | null = null,
  ) {
    this.key = key;
    this.#onEnd = onEnd;
    this.#sink = sink;
    this.connected = this.#connected.promise;
    this.connected.catch(() => {});
    this.closed = this.#closed.promise;
    let cancelled = false;
    this.received = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      cancel: () => {
        cancelled = true;
      },
    });
    this.#sink ??= (chunk) => {
      if (!cancelled) this.#controller.enqueue(chunk);
    };
  }

  /** True while a device may still connect with this key. */
  get claimable(): boolean {
    return this.#state.kind === "waiting" && this.#state.ws === null;
  }

  /** False once the session is closing: nothing more will be sent. */
  get accepting(): boolean {
    const state = this.#state;
    return state.kind === "open" ||
      (state.kind === "waiting" && state.closeRequest === null);
  }

  /** True when more bytes may be sent without exceeding the buffer marks. */
  get writable(): boolean {
    const state = this.#state;
    if (state.kind === "waiting") return state.bytes < PRECONNECT_LIMIT;
    if (state.kind === "open") return state.ws.bufferedAmount < HIGH_WATER;
    return true;
  }

  /** Resolves when `writable` may have changed: on connect/close, else after a short poll. */
  whenWritable(): Promise<void> {
    if (this.#state.kind === "waiting") return this.#changed.promise;
    return new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }

  /** Binds the device WebSocket (just upgraded) to this session. */
  attach(ws: WebSocket): void {
    const state = this.#state;
    if (state.kind !== "waiting" || state.ws !== null) {
      throw new Error(
        `Cannot attach a device to session ${this.key}: state is ${state.kind}`,
      );
    }
    state.ws = ws;
    ws.binaryType = "arraybuffer";
    const sink = this.#sink!;
    ws.onmessage = (event: MessageEvent) => {
      const data = event.data;
      if (data instanceof ArrayBuffer) sink(new Uint8Array(data));
      // Text frames are not part of the protocol; they are ignored.
    };
    ws.onopen = () => this.#open(ws);
    ws.onclose = (event: CloseEvent) => this.#finish(event.code, event.reason);
    ws.onerror = () => {}; // a close event follows
  }

  send(data: Uint8Array): void {
    const state = this.#state;
    if (state.kind === "open") {
      // The device's close frame may have arrived before its close event.
      if (state.ws.readyState === WebSocket.OPEN) state.ws.send(data);
    } else if (state.kind === "waiting" && state.closeRequest === null) {
      state.queue.push(data.slice());
      state.bytes += data.byteLength;
    }
  }

  close(code = 1000, reason = ""): void {
    const state = this.#state;
    if (state.kind === "waiting") {
      state.closeRequest ??= { code, reason };
    } else if (state.kind === "open") {
      this.#closeWs(state.ws, { code, reason });
    }
  }

  drop(): void {
    const dropped = { code: 1011, reason: "connection dropped by the cloud" };
    const state = this.#state;
    if (state.kind === "open") {
      this.#closeWs(state.ws, dropped);
    } else if (state.kind === "waiting") {
      state.queue = [];
      state.bytes = 0;
      if (state.ws === null) this.#end(UNCONNECTED);
      else state.closeRequest = dropped;
    }
  }

  /** Ends the session now: a waiting session without device is forgotten, a connected one closed (1001 by default). */
  async dispose(code = 1000, reason = ""): Promise<void> {
    const state = this.#state;
    if (state.kind === "waiting" && state.ws === null) {
      this.#end(UNCONNECTED);
    } else if (state.kind === "waiting") {
      state.closeRequest = { code, reason };
    } else if (state.kind === "open") {
      this.#closeWs(state.ws, { code, reason });
    }
    await this.closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #open(ws: WebSocket): void {
    const state = this.#state;
    if (state.kind !== "waiting") {
      ws.close(1011, "session ended");
      return;
    }
    this.#set({ kind: "open", ws });
    this.#connected.resolve();
    for (const chunk of state.queue) ws.send(chunk);
    if (state.closeRequest !== null) this.#closeWs(ws, state.closeRequest);
  }

  #closeWs(ws: WebSocket, info: CloseInfo): void {
    this.#set({ kind: "closing", ws, sent: info });
    try {
      ws.close(info.code, info.reason);
    } catch {
      // already closing on the device's initiative; its close event follows
    }
  }

  #finish(code: number, reason: string): void {
    const state = this.#state;
    if (state.kind === "closed") return;
    // Deno reports code 0 when the connection broke without a close frame.
    this.#end(
      state.kind === "closing"
        ? state.sent
        : { code: code === 0 ? 1006 : code, reason },
    );
  }

  #end(info: CloseInfo): void {
    const wasOpen = this.#state.kind !== "waiting";
    this.#set({ kind: "closed", info });
    if (!wasOpen) {
      this.#connected.reject(
        new Error(
          `Cannot connect session ${this.key}: it ended before the device connected`,
        ),
      );
    }
    try {
      this.#controller.close();
    } catch {
      // already closed or cancelled by the reader
    }
    this.#onEnd(this);
    this.#closed.resolve(info);
  }

  #set(state: SessionState): void {
    this.#state = state;
    const changed = this.#changed;
    this.#changed = Promise.withResolvers<void>();
    changed.resolve();
  }
}

type SimState =
  | { kind: "running"; server: Deno.HttpServer<Deno.NetAddr> }
  | { kind: "closing"; done: Promise<void> };

/**
 * The local remote-access service: a device endpoint (WebSocket) and client
 * sessions bridged to it. Start with {@linkcode RemoteAccessSim.start}; close
 * (or `await using`) frees every socket, listener and timer.
 *
 * @example
 * ```ts
 * await using sim = await RemoteAccessSim.start();
 * const session = sim.openSession();
 * // make the device connect to `${sim.url}` with session.key, then:
 * await session.connected;
 * session.send(new TextEncoder().encode("hello"));
 * ```
 */
export class RemoteAccessSim implements AsyncDisposable {
  /** Base URL, `http://127.0.0.1:<port>` (https with TLS): what goes into `c8y.url`. */
  readonly url: string;
  readonly #handshakes: DeviceHandshake[] = [];
  readonly #sessions = new Map<string, Session>();
  readonly #listeners = new Set<Listener>();
  readonly #refused = new Map<string, number>();
  readonly #hung = new Set<string>();
  readonly #hanging = new Set<() => void>();
  readonly #delivered = new Map<string, number>();
  readonly #waiters = new Map<
    string,
    Array<
      { resolve: (h: DeviceHandshake) => void; reject: (e: unknown) => void }
    >
  >();
  readonly #authorize: ((authorization: string | null) => boolean) | undefined;
  #state: SimState;

  private constructor(
    server: Deno.HttpServer<Deno.NetAddr>,
    url: string,
    authorize: ((authorization: string | null) => boolean) | undefined,
  ) {
    this.#state = { kind: "running", server };
    this.url = url;
    this.#authorize = authorize;
  }

  /** Starts the simulator on a loopback port (127.0.0.1, port 0 by default). */
  static start(options: RemoteAccessSimOptions = {}): Promise<RemoteAccessSim> {
    // errors reject the promise instead of throwing synchronously
    return new Promise((resolve) =>
      resolve(RemoteAccessSim.#startNow(options))
    );
  }

  static #startNow(options: RemoteAccessSimOptions): RemoteAccessSim {
    const hostname = options.hostname ?? "127.0.0.1";
    const port = options.port ?? 0;
    const tls = options.cert !== undefined || options.key !== undefined;
    if (tls && (options.cert === undefined || options.key === undefined)) {
      throw new TypeError(
        "Cannot start the remote-access simulator with TLS: give both cert and key (PEM)",
      );
    }
    // Requests are handled on a later tick, when the simulator exists.
    const ref: { sim: RemoteAccessSim | null } = { sim: null };
    const handler = (request: Request) =>
      ref.sim === null
        ? text(503, "simulator starting")
        : ref.sim.#handle(request);
    const serveOptions = {
      hostname,
      port,
      onListen() {},
      onError: () => new Response("internal error", { status: 500 }),
    };
    let server: Deno.HttpServer<Deno.NetAddr>;
    try {
      server = tls
        ? Deno.serve({
          ...serveOptions,
          cert: options.cert!,
          key: options.key!,
        }, handler)
        : Deno.serve(serveOptions, handler);
    } catch (error) {
      throw new Error(
        `Cannot start the remote-access simulator on ${hostname}:${port}: ${
          error instanceof Error ? error.message : String(error)
        }`,
        { cause: error },
      );
    }
    const url = `${tls ? "https" : "http"}://${
      urlHost(server.addr.hostname)
    }:${server.addr.port}`;
    ref.sim = new RemoteAccessSim(server, url, options.authorize);
    return ref.sim;
  }

  /** Every device connection attempt so far, in order of arrival. */
  get handshakes(): readonly DeviceHandshake[] {
    return this.#handshakes;
  }

  /** Makes the device endpoint answer `key` with HTTP `status` (200-599) instead of upgrading. */
  refuse(key: string, status: number): void {
    if (!Number.isInteger(status) || status < 200 || status > 599) {
      throw new RangeError(
        `Cannot refuse key ${key} with status ${status}: expected an HTTP status from 200 to 599`,
      );
    }
    this.#refused.set(key, status);
  }

  /** Makes the device endpoint accept connections for `key` but never answer the handshake (until the simulator closes, which answers 503). */
  hang(key: string): void {
    this.#hung.add(key);
  }

  /**
   * Resolves with the next handshake of `key` not yet returned by an earlier
   * call, whatever its status; waits for it if it has not happened yet.
   */
  waitForHandshake(
    key: string,
    options: { signal?: AbortSignal } = {},
  ): Promise<DeviceHandshake> {
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const delivered = this.#delivered.get(key) ?? 0;
    let seen = 0;
    for (const handshake of this.#handshakes) {
      if (handshake.key !== key) continue;
      if (seen++ === delivered) {
        this.#delivered.set(key, delivered + 1);
        return Promise.resolve(handshake);
      }
    }
    if (this.#state.kind !== "running") {
      return Promise.reject(
        new Error(
          `Cannot wait for a handshake of key ${key}: the simulator is closed`,
        ),
      );
    }
    const { promise, resolve, reject } = Promise.withResolvers<
      DeviceHandshake
    >();
    const waiters = this.#waiters.get(key) ?? [];
    this.#waiters.set(key, waiters);
    const onAbort = () => {
      const index = waiters.indexOf(waiter);
      if (index >= 0) waiters.splice(index, 1);
      reject(signal!.reason);
    };
    const waiter = {
      resolve: (h: DeviceHandshake) => {
        signal?.removeEventListener("abort", onAbort);
        resolve(h);
      },
      reject: (e: unknown) => {
        signal?.removeEventListener("abort", onAbort);
        reject(e);
      },
    };
    waiters.push(waiter);
    signal?.addEventListener("abort", onAbort, { once: true });
    return promise;
  }

  /** Opens the in-process client side of one session (key: a fresh UUID unless given). */
  openSession(key: string = crypto.randomUUID()): ClientSession {
    return this.#createSession(key, null);
  }

  /**
   * Starts a local TCP listener: every accepted connection becomes a session
   * with a fresh key, announced through `onRequest(key)`, and is bridged to
   * the device once it connects with that key.
   */
  listen(options: ListenOptions): ClientListener {
    if (this.#state.kind !== "running") {
      throw new Error("Cannot listen: the remote-access simulator is closed");
    }
    const hostname = options.hostname ?? "127.0.0.1";
    let tcp: Deno.TcpListener;
    try {
      tcp = Deno.listen({ hostname, port: options.port ?? 0 });
    } catch (error) {
      throw new Error(
        `Cannot listen on ${hostname}:${options.port ?? 0}: ${
          error instanceof Error ? error.message : String(error)
        }`,
        { cause: error },
      );
    }
    const listener = new Listener(
      tcp,
      (key, sink) => this.#createSession(key, sink),
      options,
      () => this.#listeners.delete(listener),
    );
    this.#listeners.add(listener);
    return listener;
  }

  /** Closes the server, every session and every listener. Idempotent. */
  close(): Promise<void> {
    if (this.#state.kind === "closing") return this.#state.done;
    const server = this.#state.server;
    const done = (async () => {
      for (const release of this.#hanging) release();
      this.#hanging.clear();
      for (const [key, waiters] of this.#waiters) {
        for (const waiter of waiters.splice(0)) {
          waiter.reject(
            new Error(
              `Cannot wait for a handshake of key ${key}: the simulator closed`,
            ),
          );
        }
      }
      await Promise.all([...this.#listeners].map((l) => l.close()));
      await Promise.all(
        [...this.#sessions.values()].map((s) =>
          s.dispose(1001, "remote-access simulator closed")
        ),
      );
      await server.shutdown();
    })();
    this.#state = { kind: "closing", done };
    return done;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #createSession(
    key: string,
    sink: ((chunk: Uint8Array) => void) | null,
  ): Session {
    if (this.#state.kind !== "running") {
      throw new Error(
        "Cannot open a session: the remote-access simulator is closed",
      );
    }
    if (this.#sessions.has(key)) {
      throw new Error(
        `Cannot open a session with key ${key}: a session with this key is already open`,
      );
    }
    const session = new Session(key, (s) => {
      if (this.#sessions.get(s.key) === s) this.#sessions.delete(s.key);
    }, sink);
    this.#sessions.set(key, session);
    return session;
  }

  #handle(request: Request): Response | Promise<Response> {
    const time = performance.now();
    const match = DEVICE_PATH.exec(new URL(request.url).pathname);
    if (match === null) {
      return text(404, "not a remote-access device endpoint");
    }
    let key: string;
    try {
      key = decodeURIComponent(match[1]!);
    } catch {
      key = match[1]!;
    }
    const authorization = request.headers.get("authorization");
    const protocols = (request.headers.get("sec-websocket-protocol") ?? "")
      .split(",").map((p) => p.trim()).filter((p) => p !== "");
    const answer = (status: number) => {
      this.#record({ key, authorization, protocols, time, status });
      return status;
    };

    if (this.#state.kind !== "running") {
      return text(answer(503), "remote-access simulator closing");
    }
    if (this.#hung.has(key)) {
      answer(0);
      return new Promise<Response>((resolve) => {
        this.#hanging.add(() => resolve(text(503, "simulator closed")));
      });
    }
    const refused = this.#refused.get(key);
    if (refused !== undefined) return text(answer(refused), "refused");
    if (this.#authorize !== undefined && !this.#authorize(authorization)) {
      return text(answer(401), "unauthorized");
    }
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return text(answer(400), "expected a WebSocket upgrade");
    }
    const session = this.#sessions.get(key);
    if (session === undefined) {
      return text(answer(404), "unknown connection key");
    }
    if (!session.claimable) {
      return text(answer(409), "connection key already in use");
    }
    let upgrade: { socket: WebSocket; response: Response };
    try {
      upgrade = Deno.upgradeWebSocket(
        request,
        protocols.includes("binary") ? { protocol: "binary" } : {},
      );
    } catch {
      return text(answer(400), "invalid WebSocket upgrade");
    }
    session.attach(upgrade.socket);
    answer(101);
    return upgrade.response;
  }

  #record(handshake: DeviceHandshake): void {
    this.#handshakes.push(handshake);
    const waiter = this.#waiters.get(handshake.key)?.shift();
    if (waiter !== undefined) {
      this.#delivered.set(
        handshake.key,
        (this.#delivered.get(handshake.key) ?? 0) + 1,
      );
      waiter.resolve(handshake);
    }
  }
}

/** One local TCP listener and the sessions of its connections. */
class Listener implements ClientListener {
  readonly port: number;
  readonly hostname: string;
  readonly #tcp: Deno.TcpListener;
  readonly #connections = new Set<
    { conn: Deno.TcpConn; session: Session | null; done: Promise<void> }
  >();
  readonly #accepting: Promise<void>;
  readonly #createSession: (
    key: string,
    sink: (chunk: Uint8Array) => void,
  ) => Session;
  readonly #options: ListenOptions;
  readonly #onClose: () => void;
  #closing: Promise<void> | undefined;

  constructor(
    tcp: Deno.TcpListener,
    createSession: (key: string, sink: (chunk: Uint8Array) => void) => Session,
    options: ListenOptions,
    onClose: () => void,
  ) {
    this.#tcp = tcp;
    this.port = tcp.addr.port;
    this.hostname = tcp.addr.hostname;
    this.#createSession = createSession;
    this.#options = options;
    this.#onClose = onClose;
    this.#accepting = this.#accept();
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#onClose();
      this.#tcp.close();
      await this.#accepting;
      await Promise.all(
        [...this.#connections].map(async (c) => {
          if (c.session !== null) {
            await c.session.dispose(1001, "client listener closed");
          }
          closeQuietly(c.conn);
          await c.done;
        }),
      );
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#tcp) {
        if (this.#closing !== undefined) {
          closeQuietly(conn);
          continue;
        }
        const entry = {
          conn,
          session: null as Session | null,
          done: Promise.resolve(),
        };
        this.#connections.add(entry);
        entry.done = this.#serve(entry).finally(() =>
          this.#connections.delete(entry)
        );
      }
    } catch {
      // the listener was closed
    }
  }

  async #serve(
    entry: { conn: Deno.TcpConn; session: Session | null },
  ): Promise<void> {
    const conn = entry.conn;
    try {
      conn.setNoDelay(true);
    } catch {
      // not fatal
    }
    const key = crypto.randomUUID();
    // device -> TCP: chunks written in order; a failed write ends the session.
    // A server-side Deno WebSocket cannot be paused, so when TCP lags, small
    // frames are coalesced into one reused buffer to cut the write calls.
    let pending: Uint8Array[] = [];
    let writing: Promise<void> | null = null;
    let writeFailed = false;
    let scratch: Uint8Array | null = null;
    const writeLoop = async () => {
      try {
        while (pending.length > 0) {
          const batch = pending;
          pending = [];
          let i = 0;
          while (i < batch.length) {
            const first = batch[i]!;
            if (i + 1 === batch.length || first.byteLength >= COALESCE / 2) {
              await writeAll(conn, first);
              i++;
              continue;
            }
            scratch ??= new Uint8Array(COALESCE);
            let size = 0;
            for (
              let chunk = batch[i];
              chunk !== undefined && size + chunk.byteLength <= COALESCE;
              chunk = batch[++i]
            ) {
              scratch.set(chunk, size);
              size += chunk.byteLength;
            }
            await writeAll(conn, scratch.subarray(0, size));
          }
        }
      } catch {
        writeFailed = true;
        pending = [];
        session.close(1000, "client connection closed");
      } finally {
        writing = null;
      }
    };
    let session: Session;
    try {
      session = this.#createSession(key, (chunk) => {
        if (writeFailed) return;
        pending.push(chunk);
        writing ??= writeLoop();
      });
    } catch {
      closeQuietly(conn); // the simulator is closing
      return;
    }
    entry.session = session;

    const reading = this.#pumpToDevice(conn, session);
    const announced = (async () => {
      try {
        await this.#options.onRequest(key);
      } catch (error) {
        try {
          (this.#options.onError ?? reportError)(error, key);
        } catch {
          // a failing error handler must not break the listener
        }
        await session.dispose(1011, "onRequest failed");
      }
    })();

    await session.closed;
    while (writing !== null) await writing;
    closeQuietly(conn);
    await reading;
    await announced;
  }

  /** TCP client -> device: one reused buffer, paused while the device side is backed up. */
  async #pumpToDevice(conn: Deno.TcpConn, session: Session): Promise<void> {
    const buffer = new Uint8Array(READ_CHUNK);
    try {
      while (session.accepting) {
        if (!session.writable) {
          await session.whenWritable();
          continue;
        }
        const n = await conn.read(buffer);
        if (n === null) break;
        session.send(buffer.subarray(0, n));
      }
    } catch {
      // reset by the client, or closed by us after the session ended
    }
    session.close(1000, "client connection closed");
  }
}

async function writeAll(conn: Deno.Conn, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.byteLength) {
    offset += await conn.write(
      offset === 0 ? chunk : chunk.subarray(offset),
    );
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

function reportError(error: unknown, key: string): void {
  console.error(
    `remote-access simulator: onRequest failed for connection key ${key}:`,
    error,
  );
}

function text(status: number, body: string): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/plain" },
  });
}

function urlHost(hostname: string): string {
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}
