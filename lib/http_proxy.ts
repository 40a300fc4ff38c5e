/**
 * The cloud leg through an HTTP client: an HTTP CONNECT proxy
 * (`proxy.address`, `proxy.username`, `proxy.password`) and extra CA
 * certificates (`c8y.root_cert_path`), DESIGN.md §1.3.
 *
 * Deno 2.9.6's WebSocketStream ignores a `client` option (checked: its
 * handshake bypasses the proxy and the extra CAs), while `new WebSocket(url,
 * { client })` honours both. So when a proxy or a CA is configured, the cloud
 * leg is a plain WebSocket wrapped into the {@linkcode CloudLeg} interface:
 * sends wait while `bufferedAmount` is above {@linkcode SEND_HIGH_WATER_BYTES}
 * (backpressure towards the cloud), but receiving has no backpressure (the
 * runtime delivers every frame at once), so a slow target makes the agent
 * queue what the cloud sends. Without proxy or CA, the WebSocketStream path
 * of `cloud.ts` is used unchanged.
 *
 * @module
 */
import { join } from "node:path";
import type { Config } from "./config.ts";
import {
  CloudConnectError,
  type CloudLeg,
  describeStatus,
  type OpenCloudLeg,
  openWebSocketStream,
} from "./cloud.ts";

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

/**
 * The cloud-leg opener for `config`: WebSocketStream when neither a proxy nor
 * `c8y.root_cert_path` is set, else a WebSocket through an HTTP client. The
 * CA files are read once, on first use; if that fails, every session fails
 * with the reason.
 */
export function cloudLegOpenerFor(config: Config): OpenCloudLeg {
  if (config.proxy.address === "" && config.c8y.rootCertPath === "") {
    return openWebSocketStream;
  }
  let opener: Promise<OpenCloudLeg> | undefined;
  return async (url, options) => {
    opener ??= cloudHttpOptions(config).then((http) =>
      http ? openWebSocketWithClient(http) : openWebSocketStream
    );
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
