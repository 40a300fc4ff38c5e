/**
 * The client side of the WebSocket opening handshake (RFC 6455 §4.1): an
 * HTTP/1.1 upgrade request with subprotocol `binary` on an open connection,
 * and the checks on the server's answer.
 *
 * @module
 */
import { BUFFER_START_BYTES } from "./_buffers.ts";
import { CloudConnectError, describeStatus } from "./leg.ts";
import { writeAll } from "../util/conn.ts";

/** Longest HTTP response head accepted for the handshake. */
const RESPONSE_HEAD_MAX_BYTES = 16 * 1024;
const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const encoder = new TextEncoder();

/** An accepted upgrade: the chosen subprotocol, and the bytes read after the answer's head. */
export interface Upgraded {
  readonly protocol: string;
  /** The buffer the answer was read into; it becomes the session's receive buffer. */
  readonly rx: Uint8Array;
  /** The cloud's first frame bytes are `rx[start, end)` (it may send right away). */
  readonly start: number;
  readonly end: number;
}

/** A connection the handshake runs on (`Deno.Conn` has it). */
export interface HandshakeConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
}

function base64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/** Index of the blank line ending an HTTP head in `bytes[0, end)`, or -1. */
function headEnd(bytes: Uint8Array, end: number): number {
  for (let i = 3; i < end; i++) {
    if (
      bytes[i] === 10 && bytes[i - 1] === 13 && bytes[i - 2] === 10 &&
      bytes[i - 3] === 13
    ) {
      return i + 1;
    }
  }
  return -1;
}

/**
 * Sends the upgrade request for `url` with `headers` and reads the answer.
 * @throws {CloudConnectError} with the status when the server answered other than 101.
 * @throws {Error} when the answer is not a valid WebSocket acceptance.
 */
export async function upgrade(
  conn: HandshakeConn,
  url: URL,
  headers: Headers,
): Promise<Upgraded> {
  const key = base64(crypto.getRandomValues(new Uint8Array(16)));
  let head = `GET ${url.pathname}${url.search} HTTP/1.1\r\n` +
    `Host: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
    `Sec-WebSocket-Protocol: binary\r\nUser-Agent: c8y-tunnel\r\n`;
  for (const [name, value] of headers) head += `${name}: ${value}\r\n`;
  await writeAll(conn, encoder.encode(head + "\r\n"));
  let rx = new Uint8Array(BUFFER_START_BYTES);
  let end = 0;
  let bodyAt = -1;
  while (bodyAt < 0) {
    if (end === rx.length) {
      if (rx.length >= RESPONSE_HEAD_MAX_BYTES) {
        throw new Error("the handshake answer is too long");
      }
      const bigger = new Uint8Array(rx.length * 2);
      bigger.set(rx);
      rx = bigger;
    }
    const n = await conn.read(rx.subarray(end));
    if (n === null) throw new Error("connection closed during the handshake");
    end += n;
    bodyAt = headEnd(rx, end);
  }
  const lines = new TextDecoder().decode(rx.subarray(0, bodyAt)).split("\r\n");
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
  if (status === null) {
    throw new Error(
      `not an HTTP answer: ${JSON.stringify((lines[0] ?? "").slice(0, 40))}`,
    );
  }
  const code = Number(status[1]);
  if (code !== 101) throw new CloudConnectError(describeStatus(code), code);
  const fields = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) {
      fields.set(
        line.slice(0, colon).trim().toLowerCase(),
        line.slice(colon + 1).trim(),
      );
    }
  }
  const digest = await crypto.subtle.digest(
    "SHA-1",
    encoder.encode(key + WS_GUID),
  );
  if (
    fields.get("upgrade")?.toLowerCase() !== "websocket" ||
    fields.get("sec-websocket-accept") !== base64(new Uint8Array(digest))
  ) {
    throw new Error("the server did not accept the WebSocket");
  }
  return {
    protocol: fields.get("sec-websocket-protocol") ?? "",
    rx,
    start: bodyAt,
    end,
  };
}
