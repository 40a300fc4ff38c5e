/**
 * The cloud leg of a session: the WebSocket to Cumulocity's remote-access
 * service for one connection key. Opened with the runtime's WebSocketStream,
 * which reads only when pulled and resolves writes when sent, so both
 * directions have backpressure without polling `bufferedAmount`.
 *
 * @module
 */

/** An open cloud leg: raw bytes in binary frames both ways. */
export interface CloudLeg {
  /** Frames from the cloud; text frames arrive as strings (not expected). */
  readonly readable: ReadableStream<string | Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  /** Subprotocol the server chose (`binary` from Cumulocity). */
  readonly protocol: string;
  /** Settles when the WebSocket is closed, either way; never rejects. */
  readonly closed: Promise<{ readonly code: number; readonly reason: string }>;
  /**
   * Sends a close frame (once, code 1000) and releases the socket. The
   * reason must not be empty: Deno 2.9.6 then drops the code from the frame.
   * A client may only send 1000 or 3000-4999, so the reason says why.
   */
  close(reason: string): void;
}

/** Opens a WebSocket to `url`; injectable so tests can add faults. */
export type OpenCloudLeg = (
  url: string,
  options: { readonly headers: Headers; readonly signal: AbortSignal },
) => Promise<CloudLeg>;

/** Why the cloud leg could not be opened; `status` is the HTTP status when the server answered. */
export class CloudConnectError extends Error {
  override name = "CloudConnectError";
  readonly status: number | undefined;
  constructor(message: string, status?: number, options?: ErrorOptions) {
    super(message, options);
    this.status = status;
  }
}

/** Cumulocity's device endpoint for a connection key: https -> wss, http -> ws. */
export function deviceUrl(c8yUrl: string, key: string): string {
  const url = new URL(c8yUrl);
  url.protocol = url.protocol === "http:" ? "ws:" : "wss:";
  url.pathname = `/service/remoteaccess/device/${encodeURIComponent(key)}`;
  url.search = "";
  url.hash = "";
  return url.href;
}

/** How the device authenticates to the cloud leg. */
export type CloudAuth =
  | { readonly kind: "jwt"; readonly token: string }
  | {
    readonly kind: "basic";
    readonly username: string;
    readonly password: string;
  }
  | { readonly kind: "none" };

/** The handshake headers for `auth` (Authorization only; the subprotocol goes in `protocols`). */
export function authHeaders(auth: CloudAuth): Headers {
  const headers = new Headers();
  if (auth.kind === "jwt") {
    headers.set("Authorization", `Bearer ${auth.token}`);
  } else if (auth.kind === "basic") {
    const bytes = new TextEncoder().encode(`${auth.username}:${auth.password}`);
    headers.set(
      "Authorization",
      `Basic ${btoa(String.fromCharCode(...bytes))}`,
    );
  }
  return headers;
}

const STATUS_IN_MESSAGE = /status code:? (\d{3})/i;

/** A user-facing reason for an HTTP status that refused the WebSocket handshake. */
export function describeStatus(status: number): string {
  switch (status) {
    case 401:
      return "cloud refused the credentials (HTTP 401): check c8y.auth and the credentials or the JWT from the thin-edge bridge";
    case 403:
      return "cloud denied remote access (HTTP 403): the user needs the Remote Access permission";
    case 404:
      return "cloud does not know this connection (HTTP 404): the request expired or the key is wrong";
    default:
      return `cloud answered HTTP ${status} instead of opening the WebSocket`;
  }
}

/**
 * Opens the cloud leg with WebSocketStream (subprotocol `binary`).
 *
 * The signal only ever reaches the runtime while the handshake is pending:
 * Deno 2.9.6 throws an uncaught "Bad resource ID" when a WebSocketStream's
 * signal aborts after the handshake has finished, successfully or not.
 */
export const openWebSocketStream: OpenCloudLeg = async (url, options) => {
  options.signal.throwIfAborted();
  const handshake = new AbortController();
  const onAbort = () => handshake.abort(options.signal.reason);
  options.signal.addEventListener("abort", onAbort, { once: true });
  let stream: WebSocketStream;
  try {
    stream = new WebSocketStream(url, {
      protocols: ["binary"],
      headers: options.headers,
      signal: handshake.signal,
    });
  } catch (error) {
    options.signal.removeEventListener("abort", onAbort);
    throw new CloudConnectError(
      `Cannot open WebSocket to ${url}: ${String(error)}`,
      undefined,
      {
        cause: error,
      },
    );
  }
  const closed = stream.closed.then(
    // The runtime resolves with `closeCode` (as the spec says), typed as `code`.
    (info) => ({
      code: (info as { closeCode?: number }).closeCode ?? info.code ?? 1005,
      reason: info.reason ?? "",
    }),
    () => ({ code: 1006, reason: "connection lost" }),
  );
  try {
    const opened = await stream.opened;
    let closing = false;
    return {
      readable: opened.readable as ReadableStream<string | Uint8Array>,
      writable: opened.writable as WritableStream<Uint8Array>,
      protocol: opened.protocol,
      closed,
      close(reason) {
        if (closing) return;
        closing = true;
        try {
          // The spec's key is closeCode; the bundled types call it code.
          stream.close({ closeCode: 1000, reason } as WebSocketCloseInfo);
        } catch {
          // Already closed by the peer.
        }
      },
    };
  } catch (error) {
    if (options.signal.aborted) throw options.signal.reason;
    // The runtime reports HTTP statuses only inside its message text.
    const match = error instanceof Error
      ? STATUS_IN_MESSAGE.exec(error.message)
      : null;
    const status = match?.[1] ? Number(match[1]) : undefined;
    const message = status !== undefined
      ? describeStatus(status)
      : `cannot reach the cloud at ${new URL(url).host}: ${
        error instanceof Error ? error.message : String(error)
      }${
        /certificate|UnknownIssuer/i.test(String(error))
          ? ": set c8y.root_cert_path to the CA (PEM) that signed its certificate"
          : ""
      }`;
    throw new CloudConnectError(message, status, { cause: error });
  } finally {
    options.signal.removeEventListener("abort", onAbort);
  }
};
