/**
 * Tests of the agent's own WebSocket client (lib/cloud/websocket.ts, opened by
 * openCloudSocket in lib/cloud/opener.ts)
 * against a scripted server on a raw loopback socket, so every frame on the
 * wire is seen and chosen by the test.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  CloudConnectError,
  type CloudLeg,
  CloudProtocolError,
} from "../lib/cloud/leg.ts";
import { openCloudSocket } from "../lib/cloud/opener.ts";
import { MAX_FRAME_PAYLOAD, WebSocketClient } from "../lib/cloud/websocket.ts";
import {
  closeFrame,
  concat,
  frame,
  HOSTILE_CASES,
  hostileServer,
  PRELUDE,
} from "./hostile_frames.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const encoder = new TextEncoder();

/** One accepted connection of the scripted server, after reading the request head. */
interface ServerSide {
  readonly conn: Deno.Conn;
  readonly request: string;
  /** Reads one whole frame sent by the client (unmasked), or null at EOF. */
  frame(): Promise<
    | { fin: boolean; opcode: number; masked: boolean; payload: Uint8Array }
    | null
  >;
  write(bytes: Uint8Array): Promise<void>;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    offset += await conn.write(data.subarray(offset));
  }
}

/**
 * A loopback server that answers the upgrade (or `status`) and hands each
 * connection to `script`; the `early` bytes go out in the same write as the 101.
 */
function scriptedServer(
  script: (side: ServerSide) => Promise<void>,
  options: { status?: number; accept?: string; early?: Uint8Array } = {},
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    let buffer = new Uint8Array(0);
    const more = async () => {
      const chunk = new Uint8Array(65536);
      const n = await conn.read(chunk);
      if (n === null) return false;
      const next = new Uint8Array(buffer.length + n);
      next.set(buffer);
      next.set(chunk.subarray(0, n), buffer.length);
      buffer = next;
      return true;
    };
    let head = -1;
    while ((head = new TextDecoder().decode(buffer).indexOf("\r\n\r\n")) < 0) {
      if (!await more()) throw new Error("client closed during the handshake");
    }
    const request = new TextDecoder().decode(buffer.subarray(0, head));
    buffer = buffer.slice(head + 4);
    const key = /^sec-websocket-key: *(\S+)/im.exec(request)?.[1] ?? "";
    const digest = await crypto.subtle.digest(
      "SHA-1",
      encoder.encode(key + GUID),
    );
    const accept = options.accept ??
      btoa(String.fromCharCode(...new Uint8Array(digest)));
    const status = options.status ?? 101;
    const answer = status === 101
      ? `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: binary\r\n\r\n`
      : `HTTP/1.1 ${status} Nope\r\ncontent-length: 0\r\n\r\n`;
    const head101 = encoder.encode(answer);
    const early = options.early ?? new Uint8Array(0);
    const first = new Uint8Array(head101.length + early.length);
    first.set(head101);
    first.set(early, head101.length);
    await writeAll(conn, first);
    const side: ServerSide = {
      conn,
      request,
      write: (bytes) => writeAll(conn, bytes),
      async frame() {
        const need = async (n: number) => {
          while (buffer.length < n) if (!await more()) return false;
          return true;
        };
        if (!await need(2)) return null;
        const len7 = buffer[1]! & 0x7f;
        const masked = (buffer[1]! & 0x80) !== 0;
        const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
        if (!await need(2 + ext + (masked ? 4 : 0))) return null;
        const view = new DataView(buffer.buffer, buffer.byteOffset);
        const n = ext === 0
          ? len7
          : ext === 2
          ? view.getUint16(2)
          : Number(view.getBigUint64(2));
        const at = 2 + ext + (masked ? 4 : 0);
        if (!await need(at + n)) return null;
        const mask = buffer.slice(at - 4, at);
        const payload = buffer.slice(at, at + n);
        if (masked) {
          for (let i = 0; i < n; i++) payload[i] = payload[i]! ^ mask[i & 3]!;
        }
        const result = {
          fin: (buffer[0]! & 0x80) !== 0,
          opcode: buffer[0]! & 0x0f,
          masked,
          payload,
        };
        buffer = buffer.slice(at + n);
        return result;
      },
    };
    try {
      await script(side);
    } finally {
      try {
        conn.close();
      } catch { /* closed by the script */ }
    }
  })();
  return {
    url: `ws://127.0.0.1:${listener.addr.port}/service/remoteaccess/device/k1`,
    async close() {
      try {
        await done;
      } finally {
        listener.close();
      }
    },
  };
}

function open(url: string, headers = new Headers()): Promise<CloudLeg> {
  return openCloudSocket(url, {
    headers,
    signal: new AbortController().signal,
  });
}

Deno.test("openCloudSocket() sends the upgrade with subprotocol binary and auth, and keeps bytes sent with the 101", async () => {
  let request = "";
  const server = scriptedServer(async (side) => {
    request = side.request;
    assert.equal((await side.frame())?.opcode, 0x8); // our close
    await side.write(frame(0x8, new Uint8Array([0x03, 0xe8])));
  }, { early: frame(0x2, encoder.encode("hello")) });
  const leg = await open(
    server.url,
    new Headers({ Authorization: "Bearer t0k3n" }),
  );
  assert.equal(leg.protocol, "binary");
  assert.match(request, /^GET \/service\/remoteaccess\/device\/k1 HTTP\/1\.1/);
  assert.match(request, /^sec-websocket-protocol: binary$/im);
  assert.match(request, /^authorization: Bearer t0k3n$/im);
  const bytes = await leg.receive();
  assert.equal(new TextDecoder().decode(bytes!), "hello");
  leg.close("done");
  assert.equal((await leg.closed).code, 1000);
  await server.close();
});

Deno.test("openCloudSocket() reports a 401 as CloudConnectError with the status and what to check", async () => {
  const server = scriptedServer(() => Promise.resolve(), { status: 401 });
  await assert.rejects(open(server.url), (error: unknown) => {
    assert.ok(error instanceof CloudConnectError);
    assert.equal(error.status, 401);
    assert.match(error.message, /c8y\.auth/);
    return true;
  });
  await server.close();
});

Deno.test("openCloudSocket() refuses a server whose Sec-WebSocket-Accept is wrong", async () => {
  const server = scriptedServer(() => Promise.resolve(), {
    accept: "bm9wZQ==",
  });
  await assert.rejects(open(server.url), CloudConnectError);
  await server.close();
});

Deno.test("WebSocketClient.receive() joins fragments, skips text, and answers pings between fragments", async () => {
  const pong = Promise.withResolvers<Uint8Array>();
  const server = scriptedServer(async (side) => {
    await side.write(frame(0x2, encoder.encode("ab"), { fin: false }));
    await side.write(frame(0x9, encoder.encode("png")));
    await side.write(frame(0x0, encoder.encode("cd")));
    await side.write(frame(0x1, encoder.encode("text is not data")));
    await side.write(frame(0x2, encoder.encode("ef")));
    await side.write(frame(0x2, encoder.encode("gh"), { long: true }));
    await side.write(frame(0x8, new Uint8Array([0x03, 0xe8])));
    const reply = await side.frame();
    assert.equal(reply?.opcode, 0xa);
    assert.ok(reply?.masked, "client frames must be masked");
    pong.resolve(reply!.payload);
    assert.equal((await side.frame())?.opcode, 0x8); // the echo of our close
  });
  const leg = await open(server.url);
  let texts = 0;
  let data = "";
  while (true) {
    const bytes = await leg.receive(() => texts++);
    if (bytes === null) break;
    data += new TextDecoder().decode(bytes);
  }
  assert.equal(data, "abcdefgh");
  assert.equal(texts, 1);
  assert.equal(new TextDecoder().decode(await pong.promise), "png");
  assert.deepEqual(await leg.closed, { code: 1000, reason: "" });
  await server.close();
});

Deno.test("WebSocketClient.send() writes masked binary frames, 126 and 127 length forms, and grows its space after full frames", async () => {
  const payloads: Uint8Array[] = [];
  const server = scriptedServer(async (side) => {
    while (true) {
      const f = await side.frame();
      if (f === null || f.opcode === 0x8) break;
      assert.equal(f.opcode, 0x2);
      assert.ok(f.fin && f.masked);
      payloads.push(f.payload);
    }
    await side.write(frame(0x8, new Uint8Array([0x03, 0xe8])));
  });
  const leg = await open(server.url);
  const socket = leg;
  const sizes: number[] = [];
  for (let round = 0; round < 6; round++) {
    const space = socket.sendSpace();
    sizes.push(space.length);
    for (let i = 0; i < space.length; i++) space[i] = (i * 7 + round) & 0xff;
    await socket.send(space.length);
  }
  socket.sendSpace().set([1, 2, 3]);
  await socket.send(3);
  leg.close("done");
  await leg.closed;
  await server.close();
  assert.ok(sizes.at(-1) === MAX_FRAME_PAYLOAD, `space grew to ${sizes}`);
  assert.ok(sizes[0]! < MAX_FRAME_PAYLOAD);
  assert.equal(payloads.length, 7);
  for (let round = 0; round < 6; round++) {
    const p = payloads[round]!;
    assert.equal(p.length, sizes[round]);
    assert.ok(p.every((b, i) => b === ((i * 7 + round) & 0xff)));
  }
  assert.deepEqual([...payloads[6]!], [1, 2, 3]);
});

Deno.test("WebSocketClient.close() without an answer from the server closes the socket within a second", async () => {
  const server = scriptedServer(async (side) => {
    assert.equal((await side.frame())?.opcode, 0x8);
    // no answer; wait for the client to give up
    assert.equal(await side.frame(), null);
  });
  const leg = await open(server.url);
  const t0 = performance.now();
  leg.close("bye");
  const info = await leg.closed;
  const elapsed = performance.now() - t0;
  assert.equal(info.code, 1006);
  assert.ok(elapsed < 1500, `closed after ${elapsed} ms`);
  await server.close();
});

Deno.test("WebSocketClient.receive() ends with an error, never a crash or a huge buffer, on hostile frames", async () => {
  const hostile: [string, Uint8Array][] = [
    ["a 2^63 length", new Uint8Array([0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0])],
    ["a reserved opcode", frame(0x3, encoder.encode("x"))],
    [
      "RSV bits set",
      frame(0x2, encoder.encode("x")).map((b, i) => i === 0 ? b | 0x70 : b),
    ],
    ["a 200-byte ping", frame(0x9, new Uint8Array(200))],
    ["a fragmented ping", frame(0x9, encoder.encode("p"), { fin: false })],
    ["garbage", new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])],
  ];
  for (const [name, bytes] of hostile) {
    const server = scriptedServer(async (side) => {
      await side.write(bytes);
      // Keep the connection open: the client must stop on its own.
      await side.frame().catch(() => null);
    });
    const leg = await open(server.url);
    const outcome = await leg.receive().then(
      (value) => value === null ? "end" : `data ${value.length}`,
      (error: unknown) => error instanceof Error ? "error" : "odd rejection",
    );
    assert.ok(outcome === "error" || outcome === "end", `${name}: ${outcome}`);
    leg.close("test over");
    await leg.closed;
    await server.close();
  }
});

for (const hostile of HOSTILE_CASES) {
  Deno.test(`WebSocketClient fails the connection with ${hostile.code} on ${hostile.name}, after delivering the valid frames before it`, async () => {
    const server = hostileServer(() => concat(PRELUDE, hostile.bytes));
    const leg = await open(server.wsUrl);
    let delivered = "";
    const outcome = await (async () => {
      while (true) {
        const bytes = await leg.receive();
        if (bytes === null) return null;
        delivered += new TextDecoder().decode(bytes);
      }
    })().catch((error: unknown) => error);
    assert.ok(outcome instanceof CloudProtocolError, String(outcome));
    assert.equal(outcome.code, hostile.code);
    assert.ok(
      outcome.message.includes(hostile.violation),
      `${outcome.message} should name ${hostile.violation}`,
    );
    assert.equal(delivered, `ok${hostile.delivered ?? ""}`);
    const seen = await server.seen(0);
    assert.equal(seen.closeCode, hostile.code, "the close code sent");
    assert.ok(
      seen.endedAt - seen.sentAt < 1000,
      `connection closed ${seen.endedAt - seen.sentAt} ms after the frame`,
    );
    assert.equal((await leg.closed).code, hostile.code);
    await server.close();
  });
}

Deno.test("WebSocketClient echoes a valid close code, answers a close without code with none, and never sends 1005", async () => {
  const codes = [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999];
  for (const code of [...codes, null]) {
    const server = hostileServer(() =>
      code === null ? frame(0x8, new Uint8Array(0)) : closeFrame(code, [0x68])
    );
    const leg = await open(server.wsUrl);
    assert.equal(await leg.receive(), null);
    const info = await leg.closed;
    const seen = await server.seen(0);
    if (code === null) {
      assert.deepEqual(info, { code: 1005, reason: "" });
      assert.equal(seen.closeCode, null, "an empty close frame back");
    } else {
      assert.deepEqual(info, { code, reason: "h" });
      assert.equal(seen.closeCode, code);
    }
    await server.close();
  }
});

Deno.test("WebSocketClient answers a ping flood from a cloud that does not read with one queued pong, for the latest ping", async () => {
  const pings = Array.from(
    { length: 10_000 },
    (_, i) => frame(0x9, `p${i}`),
  );
  const bytes = concat(...pings, frame(0x2, "x"));
  const writes: Uint8Array[] = [];
  const stuck = Promise.withResolvers<void>();
  const second = Promise.withResolvers<void>();
  let at = 0;
  const conn = {
    read(p: Uint8Array) {
      if (at >= bytes.length) return Promise.resolve(null);
      const n = Math.min(p.length, bytes.length - at);
      p.set(bytes.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
    async write(p: Uint8Array) {
      writes.push(p.slice());
      if (writes.length === 2) second.resolve();
      await stuck.promise; // the cloud reads nothing until released
      return p.length;
    },
    close() {},
  };
  const client = new WebSocketClient(
    conn,
    "binary",
    new Uint8Array(8192),
    0,
    0,
  );
  // All pings are read (the data frame after them comes out).
  assert.equal(new TextDecoder().decode((await client.receive())!), "x");
  assert.equal(writes.length, 1, "one pong written, the rest not queued");
  stuck.resolve();
  await second.promise;
  client.close("test over");
  await client.closed;
  const pongs = writes.map((w) => {
    const payload = w.subarray(6).map((b, i) => b ^ w[2 + (i & 3)]!);
    return { opcode: w[0]! & 0x0f, text: new TextDecoder().decode(payload) };
  }).filter((f) => f.opcode === 0xa);
  assert.deepEqual(pongs.map((p) => p.text), ["p0", "p9999"]);
});
