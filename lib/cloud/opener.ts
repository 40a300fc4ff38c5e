/**
 * How the cloud leg is opened for a config (DESIGN.md §1.2, §1.3): the
 * agent's own WebSocket client on `Deno.connect` (+ `Deno.startTls` for
 * wss), its TCP connection dialled directly or through an http:// proxy
 * with CONNECT, trusting the extra CAs of `c8y.root_cert_path`; or, for an
 * https:// proxy only, the runtime's WebSocket (lib/cloud/runtime_websocket.ts).
 * Either way the session gets the same frame-level {@linkcode CloudLeg}.
 *
 * @module
 */
import type { Config } from "../config/config.ts";
import { loadCaCerts } from "../config/ca_certs.ts";
import { closeQuietly } from "../util/conn.ts";
import { errorMessage } from "../util/errors.ts";
import { upgrade } from "./handshake.ts";
import { dialThroughProxy, type ProxySettings } from "./http_connect.ts";
import {
  CloudConnectError,
  cloudConnectFailure,
  type CloudLeg,
  type OpenCloudLeg,
} from "./leg.ts";
import {
  type CloudHttpOptions,
  openWebSocketWithClient,
} from "./runtime_websocket.ts";
import { WebSocketClient } from "./websocket.ts";

export {
  type CloudHttpOptions,
  createCloudHttpClient,
} from "./runtime_websocket.ts";

/** Options of {@linkcode cloudSocketOpener}. */
export interface CloudSocketOptions {
  /** Extra trusted CA certificates (PEM) for wss, added to the built-in roots. */
  readonly caCerts?: readonly string[];
  /**
   * Opens the TCP connection to the cloud's host:port instead of
   * `Deno.connect`, e.g. through an HTTP CONNECT proxy; TLS is then started
   * on what it returns.
   */
  readonly dial?: (
    hostname: string,
    port: number,
    signal: AbortSignal,
  ) => Promise<Deno.TcpConn>;
  /** Named in errors when `dial` goes through a proxy. */
  readonly proxy?: string;
}

/**
 * An opener of cloud legs with the agent's own WebSocket client,
 * subprotocol `binary`. Bytes the cloud sends right after its handshake
 * answer are kept for the first receive.
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
        : await Deno.connect({ hostname, port, signal: options.signal });
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
      const upgraded = await upgrade(conn, target, options.headers);
      options.signal.throwIfAborted();
      return new WebSocketClient(
        conn,
        upgraded.protocol,
        upgraded.rx,
        upgraded.start,
        upgraded.end,
      );
    } catch (error) {
      if (conn !== undefined) closeQuietly(conn);
      if (options.signal.aborted) throw options.signal.reason;
      throw cloudConnectFailure(error, target.host, socketOptions.proxy);
    } finally {
      options.signal.removeEventListener("abort", onAbort);
    }
  };
}

/** Opens the cloud leg with the agent's own WebSocket client (no proxy, no extra CAs). */
export const openCloudSocket: OpenCloudLeg = cloudSocketOpener();

/** The proxy part of {@linkcode CloudHttpOptions} from the config; undefined without `proxy.address`. */
export function proxyOptions(config: Config): ProxySettings | undefined {
  const { address, username, password } = config.proxy;
  if (address === "") return undefined;
  return username === ""
    ? { url: address }
    : { url: address, basicAuth: { username, password } };
}

/**
 * The proxy and CA options for `config`: null when neither a proxy nor
 * extra CAs are configured.
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
        proxy: proxy.url,
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
  return async (url, options): Promise<CloudLeg> => {
    opener ??= cloudHttpOptions(config).then(openerFor);
    let open: OpenCloudLeg;
    try {
      open = await opener;
    } catch (error) {
      opener = undefined; // try again next time (the file may be fixed)
      throw new CloudConnectError(
        errorMessage(error),
      );
    }
    return await open(url, options);
  };
}
