/**
 * The HTTP CONNECT dialer (RFC 9110 §9.3.6): a TCP connection to the cloud
 * through an http:// proxy (`proxy.address`, `proxy.username`,
 * `proxy.password`), on which the caller starts TLS and the WebSocket.
 *
 * @module
 */
import {
  basicCredentials,
  CloudConnectError,
  proxyRefusedCredentials,
} from "./leg.ts";
import { closeQuietly, writeAll } from "../util/conn.ts";
import { errorMessage } from "../util/errors.ts";

/** A proxy as configured: its URL ("http://host:port") and credentials. */
export interface ProxySettings {
  readonly url: string;
  readonly basicAuth?: {
    readonly username: string;
    readonly password: string;
  };
}

/** Longest proxy answer head accepted for CONNECT. */
const PROXY_HEAD_MAX_BYTES = 16 * 1024;

/**
 * Opens a TCP connection to hostname:port through an HTTP proxy with
 * `CONNECT`, sending `Proxy-Authorization: Basic` when credentials are
 * given. Resolves with the tunnelled connection once the proxy answered 2xx;
 * nothing after the answer's head is read (the tunnel's bytes are the
 * caller's).
 * @throws {CloudConnectError} naming the proxy and what it answered.
 */
export async function dialThroughProxy(
  proxy: ProxySettings,
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
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({
      hostname: proxyUrl.hostname.replace(/^\[|\]$/g, ""),
      port: Number(proxyUrl.port || 80),
      signal,
    });
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    throw new CloudConnectError(
      `cannot reach proxy ${proxy.url} (proxy.address): ${errorMessage(error)}`,
      undefined,
      { cause: error },
    );
  }
  const onAbort = () => closeQuietly(conn);
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    const authority = hostname.includes(":")
      ? `[${hostname}]:${port}`
      : `${hostname}:${port}`;
    let request = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n` +
      "User-Agent: c8y-tunnel\r\n";
    if (proxy.basicAuth) {
      const { username, password } = proxy.basicAuth;
      request += `Proxy-Authorization: ${
        basicCredentials(username, password)
      }\r\n`;
    }
    await writeAll(conn, new TextEncoder().encode(`${request}\r\n`));
    // Byte by byte up to the blank line: what follows is the tunnel's.
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
    if (status === 407 || status === 401) {
      // The answer to CONNECT is the proxy's own: some proxies say 401 where
      // 407 is meant for bad proxy credentials, so the hint is the same.
      throw new CloudConnectError(
        proxyRefusedCredentials(status, proxy.url),
        status,
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
      `proxy ${proxy.url} failed during CONNECT: ${errorMessage(error)}`,
      undefined,
      { cause: error },
    );
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}
