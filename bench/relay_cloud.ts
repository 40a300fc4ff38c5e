/**
 * A bench-only remote-access cloud WITH backpressure towards the device, in
 * its own process. Same stdout protocol as bench/cloud_process.ts: one JSON
 * line `{"url":…,"port":…}`, then `key <connection key>` per client.
 *
 * Why it exists: lib/sim's device endpoint is a server-side Deno WebSocket,
 * which cannot stop reading, so when the user's client reads slowly the
 * simulator queues everything the device sends (measured: +81 MiB in the
 * simulator for a 64 MiB download at 8 MiB/s) and the device never feels a
 * slow consumer. Cumulocity does push back (TCP flow control). This cloud
 * reads a device frame only after its payload was written to the client,
 * so the slow-consumer measurement tests the device side's bounds.
 * It speaks just enough RFC 6455 for that: binary frames, close, no
 * extensions; the device's masked frames are unmasked 4 bytes at a time.
 *
 * Usage: deno run -A bench/relay_cloud.ts
 *
 * @module
 */
import { closeQuietly, writeAll } from "../lib/util/conn.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const PATH = /^GET \/service\/remoteaccess\/device\/([^/ ?]+)/;
const BUFFER = 64 * 1024;
const encoder = new TextEncoder();
const print = (line: string): void => {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
};

/** Client connections waiting for their device, by key. */
const waiting = new Map<
  string,
  (device: Deno.Conn, early: Uint8Array) => void
>();

const devices = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const clients = Deno.listen({ hostname: "127.0.0.1", port: 0 });
print(JSON.stringify({
  url: `http://127.0.0.1:${devices.addr.port}`,
  port: clients.addr.port,
}));

(async () => {
  for await (const conn of devices) {
    handshake(conn).catch(() => closeQuietly(conn));
  }
})();
(async () => {
  for await (const conn of clients) {
    serveClient(conn).catch(() => closeQuietly(conn));
  }
})();

async function handshake(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const buffer = new Uint8Array(16 * 1024);
  let end = 0;
  let head = -1;
  while (head < 0) {
    const n = await conn.read(buffer.subarray(end));
    if (n === null) throw new Error("device closed during the handshake");
    end += n;
    head = new TextDecoder().decode(buffer.subarray(0, end)).indexOf(
      "\r\n\r\n",
    );
  }
  const text = new TextDecoder().decode(buffer.subarray(0, head));
  const key = decodeURIComponent(PATH.exec(text)?.[1] ?? "");
  const wsKey = /^sec-websocket-key:\s*(\S+)/im.exec(text)?.[1] ?? "";
  const attach = waiting.get(key);
  if (attach === undefined) {
    await writeAll(
      conn,
      encoder.encode("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
    );
    closeQuietly(conn);
    return;
  }
  waiting.delete(key);
  const digest = await crypto.subtle.digest(
    "SHA-1",
    encoder.encode(wsKey + GUID),
  );
  const accept = btoa(String.fromCharCode(...new Uint8Array(digest)));
  await writeAll(
    conn,
    encoder.encode(
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n` +
        `sec-websocket-accept: ${accept}\r\nsec-websocket-protocol: binary\r\n\r\n`,
    ),
  );
  attach(conn, buffer.slice(head + 4, end));
}

async function serveClient(client: Deno.TcpConn): Promise<void> {
  client.setNoDelay(true);
  const key = crypto.randomUUID();
  const attached = new Promise<{ device: Deno.Conn; early: Uint8Array }>((
    resolve,
  ) => waiting.set(key, (device, early) => resolve({ device, early })));
  print(`key ${key}`);
  const timeout = setTimeout(() => {
    if (waiting.delete(key)) closeQuietly(client);
  }, 15_000);
  const { device, early } = await attached;
  clearTimeout(timeout);
  let closed = false;
  const end = () => {
    if (closed) return;
    closed = true;
    closeQuietly(client);
    // A close frame, then the device closes (or we do shortly after).
    device.write(new Uint8Array([0x88, 2, 0x03, 0xe8])).catch(() => {});
    setTimeout(() => closeQuietly(device), 200);
  };
  await Promise.allSettled([
    deviceToClient(device, client, early).finally(end),
    clientToDevice(client, device).finally(end),
  ]);
}

/** Device frames -> client bytes; reads the device only after the client took the last payload. */
async function deviceToClient(
  device: Deno.Conn,
  client: Deno.Conn,
  early: Uint8Array,
): Promise<void> {
  const buf = new Uint8Array(BUFFER + 16);
  const words = new Uint32Array(buf.buffer);
  buf.set(early);
  let start = 0;
  let end = early.length;
  const need = async (n: number) => {
    if (end - start >= n) return true;
    buf.copyWithin(0, start, end);
    end -= start;
    start = 0;
    while (end < n) {
      const r = await device.read(buf.subarray(end, BUFFER));
      if (r === null) return false;
      end += r;
    }
    return true;
  };
  while (true) {
    if (!await need(2)) return;
    const opcode = buf[start]! & 0x0f;
    const len7 = buf[start + 1]! & 0x7f;
    const masked = (buf[start + 1]! & 0x80) !== 0;
    const headerLength = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) +
      (masked ? 4 : 0);
    if (!await need(headerLength)) return;
    let length = len7;
    if (len7 === 126) length = (buf[start + 2]! << 8) | buf[start + 3]!;
    if (len7 === 127) {
      length = 0;
      for (let i = 2; i < 10; i++) length = length * 256 + buf[start + i]!;
    }
    const mask = masked
      ? buf.slice(start + headerLength - 4, start + headerLength)
      : null;
    const maskWord = mask ? new Uint32Array(mask.buffer)[0]! : 0;
    start += headerLength;
    if (opcode === 8) return; // close from the device
    let maskOffset = 0;
    let left = length;
    while (left > 0) {
      if (start === end && !await need(1)) return;
      // Unmask in place from a 4-byte aligned start (copy down when needed).
      if (start % 4 !== 0) {
        buf.copyWithin(0, start, end);
        end -= start;
        start = 0;
      }
      const take = Math.min(left, end - start);
      if (mask) {
        const rotated = maskOffset === 0
          ? maskWord
          : (maskWord >>> (8 * maskOffset)) |
            (maskWord << (32 - 8 * maskOffset));
        const first = start >>> 2;
        const count = take >>> 2;
        for (let i = first; i < first + count; i++) {
          words[i] = words[i]! ^ rotated;
        }
        for (let i = count << 2; i < take; i++) {
          buf[start + i] = buf[start + i]! ^ mask[(maskOffset + i) & 3]!;
        }
        maskOffset = (maskOffset + take) & 3;
      }
      if (opcode === 2 || opcode === 0) {
        await writeAll(client, buf.subarray(start, start + take));
      }
      start += take;
      left -= take;
    }
  }
}

/** Client bytes -> binary frames to the device (unmasked, as a server sends). */
async function clientToDevice(
  client: Deno.Conn,
  device: Deno.Conn,
): Promise<void> {
  const buf = new Uint8Array(BUFFER + 10);
  while (true) {
    const n = await client.read(buf.subarray(10));
    if (n === null) return;
    let at: number;
    if (n < 126) {
      at = 8;
      buf[9] = n;
    } else if (n < 65536) {
      at = 6;
      buf[7] = 126;
      buf[8] = n >>> 8;
      buf[9] = n & 0xff;
    } else {
      at = 0;
      buf[1] = 127;
      buf.fill(0, 2, 6);
      new DataView(buf.buffer).setUint32(6, n);
    }
    buf[at] = 0x82;
    await writeAll(device, buf.subarray(at, 10 + n));
  }
}

Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
Deno.addSignalListener("SIGINT", () => Deno.exit(0));
