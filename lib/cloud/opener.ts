/**
 * The cloud leg through an HTTP CONNECT proxy (`proxy.address`,
 * `proxy.username`, `proxy.password`) and with extra CA certificates
 * (`c8y.root_cert_path`), DESIGN.md §1.3.
 *
 * The agent's own WebSocket client (`cloudSocketOpener` in cloud.ts) takes
 * the CAs for its `Deno.startTls`, and a `dial` function that opens its TCP
 * connection: {@linkcode dialThroughProxy} sends `CONNECT host:port` to an
 * http:// proxy and hands back the tunnelled connection. So proxy and CAs
 * keep the client's bounded buffers and backpressure both ways.
 *
 * An https:// proxy (TLS to the proxy itself) cannot carry a second TLS
 * session through `Deno.startTls`, so for it the cloud leg is the runtime's
 * `new WebSocket(url, { client })` over `Deno.createHttpClient({ proxy,
 * caCerts })` ({@linkcode openWebSocketWithClient}; Deno 2.9.6's
 * WebSocketStream ignores a `client`, checked). Its sends wait while
 * `bufferedAmount` is above {@linkcode SEND_HIGH_WATER_BYTES}, but receiving
 * has no backpressure: a slow target makes the agent queue what the cloud
 * sends.
 *
 * @module
 */
import { join } from "node:path";
import type { Config } from "../config/config.ts";
import {
  CloudConnectError,
  type CloudLeg,
  cloudSocketOpener,
  describeStatus,
  type OpenCloudLeg,
  openCloudSocket,
} from "./websocket.ts";

/** What the runtime's HTTP client needs for the cloud leg. */
export interface CloudHttpOptions {
  /** Proxy URL ("http://host:port") and its credentials, when one is configured. */
  readonly proxy?: {
    readonly url: string;
    readonly basicAuth?: {
      readonly username: string;
      readonly password: string;
    };
  };
  /** Extra trusted CA certificates (PEM texts), added to the built-in roots. */
  readonly caCerts?: readonly string[];
}

/** Above this many unsent bytes, a write to the cloud waits (about full speed on loopback). */
export const SEND_HIGH_WATER_BYTES = 4 * 1024 * 1024;

const PEM_CERT = "-----BEGIN CERTIFICATE-----";

/**
 * Reads extra CA certificates from `path`: a PEM file, or a directory whose
 * regular files (symlinks followed) holding PEM certificates are all taken.
 * @throws {Error} naming `c8y.root_cert_path`, the path and what is wrong.
 */
export async function loadCaCerts(path: string): Promise<string[]> {
  const key = "c8y.root_cert_path";
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    throw new Error(
      `cannot read ${key} = "${path}": ${
        error instanceof Deno.errors.NotFound ? "no such file or directory" : (
          error instanceof Error ? error.message : String(error)
        )
      }: give a PEM file or a directory of PEM files, or "" for none`,
    );
  }
  const texts: string[] = [];
  if (info.isDirectory) {
    const names: string[] = [];
    for await (const entry of Deno.readDir(path)) names.push(entry.name);
    names.sort();
    for (const name of names) {
      const file = join(path, name);
      try {
        if (!(await Deno.stat(file)).isFile) continue;
        const text = await Deno.readTextFile(file);
        if (text.includes(PEM_CERT)) texts.push(text);
      } catch {
        // A dangling symlink or an unreadable file is not a certificate.
      }
    }
  } else {
    const text = await Deno.readTextFile(path).catch((error) => {
      throw new Error(
        `cannot read ${key} = "${path}": ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    });
    if (text.includes(PEM_CERT)) texts.push(text);
  }
  const unique = [...new Set(texts)];
  if (unique.length === 0) {
    throw new Error(
      `${key} = "${path}" holds no PEM certificate ("${PEM_CERT}"): give a PEM file or a directory of PEM files, or "" for none`,
    );
  }
  return unique;
}

/** The proxy part of {@linkcode CloudHttpOptions} from the config; undefined without `proxy.address`. */
export function proxyOptions(
  config: Config,
): CloudHttpOptions["proxy"] | undefined {
  const { address, username, password } = config.proxy;
  if (address === "") return undefined;
  return username === ""
    ? { url: address }
    : { url: address, basicAuth: { username, password } };
}

/**
 * The HTTP options for `config`: null when neither a proxy nor extra CAs are
 * configured (the plain WebSocketStream path applies).
 * @throws {Error} when `c8y.root_cert_path` cannot be read.
 */
export async function cloudHttpOptions(
  config: Config,
): Promise<CloudHttpOptions | null> {
  const proxy = proxyOptions(config);
  const path = config.c8y.rootCertPath;
  const caCerts = path === "" ? undefined : await loadCaCerts(path);
  if (!proxy && !caCerts) return null;
  return { ...(proxy ? { proxy } : {}), ...(caCerts ? { caCerts } : {}) };
}

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

/** Longest proxy answer head accepted for CONNECT. */
const PROXY_HEAD_MAX_BYTES = 16 * 1024;

/**
 * Opens a TCP connection to hostname:port through an HTTP proxy with
 * `CONNECT` (RFC 9110 §9.3.6), sending `Proxy-Authorization: Basic` when
 * credentials are given. Resolves with the tunnelled connection (TLS, if
 * any, is started on it by the caller) once the proxy answered 2xx.
 * @throws {CloudConnectError} naming the proxy and what it answered.
 */
export async function dialThroughProxy(
  proxy: NonNullable<CloudHttpOptions["proxy"]>,
  hostname: string,
  port: number,
  signal: AbortSignal,
): Promise<Deno.TcpConn> {
  const proxyUrl = new URL(proxy.url);
  if (proxyUrl.protocol !== "http:") {
    throw new CloudConnectError(
      `Cannot use proxy ${proxy.url}: only http:// proxies can tunnel the agent's own WebSocket client`,
    );
  }
  const proxyHost = proxyUrl.hostname.replace(/^\[|\]$/g, "");
  const proxyPort = Number(proxyUrl.port || 80);
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: proxyHost, port: proxyPort, signal });
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    throw new CloudConnectError(
      `cannot reach proxy ${proxy.url} (proxy.address): ${
        error instanceof Error ? error.message : String(error)
      }`,
      undefined,
      { cause: error },
    );
  }
  const onAbort = () => {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  };
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const authority = hostname.includes(":")
      ? `[${hostname}]:${port}`
      : `${hostname}:${port}`;
    let request = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n` +
      "User-Agent: c8y-tunnel\r\n";
    if (proxy.basicAuth) {
      const bytes = new TextEncoder().encode(
        `${proxy.basicAuth.username}:${proxy.basicAuth.password}`,
      );
      request += `Proxy-Authorization: Basic ${
        btoa(String.fromCharCode(...bytes))
      }\r\n`;
    }
    const out = new TextEncoder().encode(`${request}\r\n`);
    for (let offset = 0; offset < out.length;) {
      offset += await conn.write(out.subarray(offset));
    }
    // Read the answer's head only: the tunnel's first bytes are the caller's.
    const head = new Uint8Array(PROXY_HEAD_MAX_BYTES);
    let end = 0;
    const ended = () =>
      end >= 4 && head[end - 4] === 13 && head[end - 3] === 10 &&
      head[end - 2] === 13 && head[end - 1] === 10;
    while (!ended()) {
      if (end === head.length) {
        throw new CloudConnectError(
          `proxy ${proxy.url} sent an answer head longer than ${PROXY_HEAD_MAX_BYTES} bytes`,
        );
      }
      const n = await conn.read(head.subarray(end, end + 1));
      if (n === null) {
        throw new CloudConnectError(
          `proxy ${proxy.url} closed the connection before answering CONNECT ${authority}`,
        );
      }
      end += n;
    }
    const statusLine = new TextDecoder().decode(head.subarray(0, end))
      .split("\r\n")[0] ?? "";
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1]);
    if (status === 407) {
      throw new CloudConnectError(
        `proxy ${proxy.url} refused the credentials (HTTP 407): check proxy.username and proxy.password`,
        407,
      );
    }
    if (!(status >= 200 && status < 300)) {
      throw new CloudConnectError(
        `proxy ${proxy.url} refused CONNECT ${authority}: ${
          Number.isNaN(status)
            ? `not an HTTP answer ${JSON.stringify(statusLine.slice(0, 40))}`
            : `HTTP ${status}`
        }`,
        Number.isNaN(status) ? undefined : status,
      );
    }
    return conn;
  } catch (error) {
    onAbort();
    if (signal.aborted) throw signal.reason;
    if (error instanceof CloudConnectError) throw error;
    throw new CloudConnectError(
      `proxy ${proxy.url} failed during CONNECT: ${
        error instanceof Error ? error.message : String(error)
      }`,
      undefined,
      { cause: error },
    );
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** Turns a failed handshake into a message a user can act on. */
function handshakeError(
  url: string,
  options: CloudHttpOptions,
  message: string,
): CloudConnectError {
  const status = /status code:? (\d{3})/i.exec(message);
  const proxy = options.proxy?.url;
  if (/proxy authentication required/i.test(message) || status?.[1] === "407") {
    return new CloudConnectError(
      `proxy ${proxy} refused the credentials (HTTP 407): check proxy.username and proxy.password`,
      407,
    );
  }
  if (status?.[1]) {
    return new CloudConnectError(
      describeStatus(Number(status[1])),
      Number(status[1]),
    );
  }
  const detail = message.replace(/^failed to connect to WebSocket: /, "");
  const hint = /certificate|UnknownIssuer/i.test(detail)
    ? ": check c8y.root_cert_path (CA certificates of the cloud or of a TLS-inspecting proxy)"
    : proxy
    ? `: check proxy.address (${proxy})`
    : "";
  return new CloudConnectError(
    `cannot reach the cloud at ${new URL(url).host}${
      proxy ? ` through proxy ${proxy}` : ""
    }: ${detail}${hint}`,
  );
}

/**
 * Opens the cloud leg with `new WebSocket(url, { client })` so that the proxy
 * and extra CAs apply (see the module doc for the backpressure caveat). The
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
    const leg = wrapWebSocket(ws);
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
          () => reject(handshakeError(url, options, failure)),
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

/** The CloudLeg view of a WebSocket; handlers are attached at once so no early frame is lost. */
function wrapWebSocket(ws: WebSocket): CloudLeg {
  let controller!: ReadableStreamDefaultController<string | Uint8Array>;
  let cancelled = false;
  const readable = new ReadableStream<string | Uint8Array>({
    start: (c) => {
      controller = c;
    },
    cancel: () => {
      cancelled = true;
    },
  });
  ws.onmessage = (event: MessageEvent) => {
    if (cancelled) return;
    const data = event.data;
    controller.enqueue(
      data instanceof ArrayBuffer ? new Uint8Array(data) : String(data),
    );
  };
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.addEventListener("close", (event) => {
      try {
        controller.close();
      } catch {
        // Cancelled by the reader.
      }
      // Deno reports code 0 when the connection broke without a close frame.
      resolve({
        code: event.code === 0 ? 1006 : event.code,
        reason: event.reason,
      });
    }, { once: true });
  });
  let isClosed = false;
  closed.then(() => isClosed = true);
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      if (ws.readyState !== WebSocket.OPEN) {
        throw new Error("Cannot send to the cloud: the WebSocket is closed");
      }
      ws.send(chunk);
      while (ws.bufferedAmount > SEND_HIGH_WATER_BYTES && !isClosed) {
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    },
  });
  let closing = false;
  return {
    readable,
    writable,
    get protocol() {
      return ws.protocol;
    },
    closed,
    close(reason) {
      if (closing) return;
      closing = true;
      try {
        ws.close(1000, reason);
      } catch {
        // Already closed by the peer.
      }
    },
  };
}

/** The opener for resolved options: the agent's own client, or the runtime's WebSocket for an https:// proxy. */
export function openerFor(http: CloudHttpOptions | null): OpenCloudLeg {
  if (http === null) return openCloudSocket;
  const proxy = http.proxy;
  if (proxy && new URL(proxy.url).protocol !== "http:") {
    return openWebSocketWithClient(http);
  }
  return cloudSocketOpener({
    ...(http.caCerts ? { caCerts: http.caCerts } : {}),
    ...(proxy
      ? {
        dial: (hostname: string, port: number, signal: AbortSignal) =>
          dialThroughProxy(proxy, hostname, port, signal),
      }
      : {}),
  });
}

/**
 * The cloud-leg opener for `config`: the agent's own WebSocket client,
 * through the proxy and with the extra CAs when configured. The CA files are
 * read once, on first use; if that fails, every session fails with the
 * reason (and the next session tries again).
 */
export function cloudLegOpenerFor(config: Config): OpenCloudLeg {
  if (config.proxy.address === "" && config.c8y.rootCertPath === "") {
    return openCloudSocket;
  }
  let opener: Promise<OpenCloudLeg> | undefined;
  return async (url, options) => {
    opener ??= cloudHttpOptions(config).then(openerFor);
    let open: OpenCloudLeg;
    try {
      open = await opener;
    } catch (error) {
      opener = undefined; // try again next time (the file may be fixed)
      throw new CloudConnectError(
        error instanceof Error ? error.message : String(error),
      );
    }
    return await open(url, options);
  };
}
