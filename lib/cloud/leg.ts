/**
 * The cloud leg of a session as the rest of the agent sees it: one
 * frame-level interface ({@linkcode CloudLeg}) whatever WebSocket client is
 * behind it, how it is opened ({@linkcode OpenCloudLeg}), its errors, the
 * device URL and auth headers, and the one place where a runtime, network or
 * TLS error becomes a reason a user can act on ({@linkcode errorReason}).
 *
 * @module
 */
import { errorMessage } from "../util/errors.ts";

/** How a WebSocket ended: the close code (1006 without a close frame) and reason. */
export interface CloseInfo {
  readonly code: number;
  readonly reason: string;
}

/**
 * An open cloud leg: raw bytes in binary frames both ways, through buffers
 * the leg owns and reuses, so the pump moves bytes without copying them.
 */
export interface CloudLeg {
  /** Subprotocol the server chose (`binary` from Cumulocity). */
  readonly protocol: string;
  /** Settles when the WebSocket is closed, either way; never rejects. */
  readonly closed: Promise<CloseInfo>;
  /**
   * Where to put the payload of the next frame; valid until the next
   * {@linkcode CloudLeg.send}. Its length is the most one frame takes (it may
   * grow while the session is busy).
   */
  sendSpace(): Uint8Array;
  /**
   * Sends the first `length` bytes of {@linkcode CloudLeg.sendSpace} as one
   * binary frame. Resolves once the leg can take the next frame (the bytes
   * are written, or queued below the leg's bound): awaiting it is the
   * backpressure towards the target.
   * @throws {Error} when the leg is closing or closed.
   */
  send(length: number): Promise<void>;
  /**
   * The next binary payload bytes from the cloud, a view that is valid until
   * the next call; null once the cloud closed (close frame or end of the
   * connection) or after {@linkcode CloudLeg.close}. Message boundaries are
   * not kept (the data is a byte stream). Text frames are never returned;
   * `onTextFrame` is called once per text message. Nothing more is read from
   * the cloud until the next call: not calling it is the backpressure
   * towards the cloud.
   * @throws {CloudProtocolError} when the cloud broke RFC 6455 (the leg has
   * then failed the connection with close 1002, 1007 or 1009), or the
   * connection's error.
   */
  receive(onTextFrame?: () => void): Promise<Uint8Array | null>;
  /**
   * Sends a close frame (once, code 1000, `reason` says why: a client may
   * only send 1000 or 3000-4999) and releases the connection once the cloud
   * answers or within a second.
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

/**
 * The cloud broke the WebSocket protocol (RFC 6455) and the leg failed the
 * connection: `code` is the close code it sent (1002 protocol error, 1007
 * invalid UTF-8, 1009 frame too big).
 */
export class CloudProtocolError extends Error {
  override name = "CloudProtocolError";
  readonly code: number;
  constructor(message: string, code: number) {
    super(message);
    this.code = code;
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

/** `user:password` as the value of a Basic authorization header. */
export function basicCredentials(username: string, password: string): string {
  const bytes = new TextEncoder().encode(`${username}:${password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

/** The handshake headers for `auth` (Authorization only; the subprotocol goes in `protocols`). */
export function authHeaders(auth: CloudAuth): Headers {
  const headers = new Headers();
  if (auth.kind === "jwt") {
    headers.set("Authorization", `Bearer ${auth.token}`);
  } else if (auth.kind === "basic") {
    headers.set(
      "Authorization",
      basicCredentials(auth.username, auth.password),
    );
  }
  return headers;
}

/** The reason when the HTTP CONNECT proxy (`proxy`) refused its credentials with `status`. */
export function proxyRefusedCredentials(
  status: number,
  proxy?: string,
): string {
  return `proxy${
    proxy === undefined ? "" : ` ${proxy}`
  } refused the credentials (HTTP ${status}): check proxy.username and proxy.password`;
}

/**
 * A user-facing reason for an HTTP status that refused the WebSocket
 * handshake (407: the proxy at `proxy` refused its credentials).
 */
export function describeStatus(status: number, proxy?: string): string {
  switch (status) {
    case 401:
      return "cloud refused the credentials (HTTP 401): check c8y.auth and the credentials or the JWT from the thin-edge bridge";
    case 403:
      return "cloud denied remote access (HTTP 403): the user needs the Remote Access permission";
    case 404:
      return "cloud does not know this connection (HTTP 404): the request expired or the key is wrong";
    case 407:
      return proxyRefusedCredentials(407, proxy);
    default:
      return `cloud answered HTTP ${status} instead of opening the WebSocket`;
  }
}

/** What kind of failure an error is, as far as a user can act on it. */
export type ErrorKind =
  | "refused"
  | "reset"
  | "certificate"
  | "status"
  | "other";

/** An error sorted by {@linkcode classifyError}. */
export interface ClassifiedError {
  readonly kind: ErrorKind;
  /** What happened, in words (no hint). */
  readonly detail: string;
  /** The HTTP status, for kind `status`. */
  readonly status?: number;
}

/** The runtime reports a handshake's HTTP status only inside its message. */
const STATUS_IN_MESSAGE = /status code:? (\d{3})/i;
/** rustls' words for a certificate it does not trust. */
const CERTIFICATE_IN_MESSAGE = /certificate|UnknownIssuer/i;
const CERTIFICATE_HINT =
  "set c8y.root_cert_path to the CA (PEM) that signed the server's certificate (the cloud's, or a TLS-inspecting proxy's)";

/**
 * Sorts a runtime, network or TLS error (or an abort reason) by what a user
 * can do about it. The runtime gives some facts only in its message text
 * (an HTTP status, a certificate problem): this is the one place that reads
 * them.
 */
export function classifyError(error: unknown): ClassifiedError {
  if (error instanceof Deno.errors.ConnectionRefused) {
    return { kind: "refused", detail: "connection refused" };
  }
  if (
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe
  ) {
    return { kind: "reset", detail: "connection reset" };
  }
  if (error instanceof CloudConnectError && error.status !== undefined) {
    return { kind: "status", detail: error.message, status: error.status };
  }
  const detail = errorMessage(error);
  if (error instanceof CloudConnectError) return { kind: "other", detail };
  // fetch() says only "fetch failed"; the facts are in its causes.
  const text = messageChain(error);
  const status = STATUS_IN_MESSAGE.exec(text);
  const code = Number(status?.[1]);
  if (/proxy authentication required/i.test(text)) {
    return { kind: "status", detail, status: 407 };
  }
  if (code >= 100 && code <= 599) {
    return { kind: "status", detail, status: code };
  }
  if (CERTIFICATE_IN_MESSAGE.test(text)) {
    return { kind: "certificate", detail };
  }
  return { kind: "other", detail };
}

/** The messages of `error` and of its causes (a few levels), joined. */
function messageChain(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && depth < 4; depth++) {
    parts.push(errorMessage(current));
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(": ");
}

/**
 * The user-facing reason for `error`: what happened, and for a refused
 * certificate or an HTTP status, the setting to change.
 */
export function errorReason(error: unknown): string {
  const classified = classifyError(error);
  switch (classified.kind) {
    case "certificate":
      return `${classified.detail}: ${CERTIFICATE_HINT}`;
    case "status":
      return error instanceof CloudConnectError
        ? classified.detail
        : describeStatus(classified.status!);
    default:
      return classified.detail;
  }
}

/**
 * The {@linkcode CloudConnectError} for a failed attempt to open the cloud
 * leg to `host` (through `proxy`, when given): an HTTP status becomes its
 * description, anything else "cannot reach the cloud at ...: <reason>".
 */
export function cloudConnectFailure(
  error: unknown,
  host: string,
  proxy?: string,
): CloudConnectError {
  if (error instanceof CloudConnectError) return error;
  const classified = classifyError(error);
  if (classified.kind === "status") {
    return new CloudConnectError(
      describeStatus(classified.status!, proxy),
      classified.status,
      { cause: error },
    );
  }
  const via = proxy === undefined ? "" : ` through proxy ${proxy}`;
  const hint = classified.kind === "certificate" || proxy === undefined
    ? ""
    : `: check proxy.address (${proxy})`;
  return new CloudConnectError(
    `cannot reach the cloud at ${host}${via}: ${errorReason(error)}${hint}`,
    undefined,
    { cause: error },
  );
}
