/**
 * The MQTT client's connection to the broker as the Node-style stream that
 * npm `mqtt` expects, built on `Deno.connect`/`Deno.connectTls` instead of
 * `node:net`. Reading goes through one fixed 256 KiB buffer, and the bytes
 * pass {@linkcode PublishSizeFilter} before anything is copied: a PUBLISH
 * over `mqtt.max_payload` costs no allocation at all, a message taken by
 * `onMessage` is copied once, into the {@linkcode Inbox} ring that hands it
 * over while reading goes on, and only what the client gets is copied out.
 * (Measured on Deno 2.9.6: 200 MiB read through a `node:net` socket left
 * the process 118 MiB larger even after a full GC; through `Deno.connect`,
 * nothing.)
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";
import { Inbox, type InboxItem } from "./inbox.ts";
import { LostIds } from "./lost_ids.ts";
import {
  type InboundMessage,
  type OversizedMessage,
  pubAck,
  PublishSizeFilter,
} from "./size_guard.ts";

/**
 * Size of the one read buffer of a connection: a read takes in more than a
 * broker can send while the inbox hands messages over for one slice.
 */
const READ_BYTES = 256 * 1024;

/** Smallest ring of the inbox (it holds at least four payloads of the largest size). */
const INBOX_BYTES = 4 * 1024 * 1024;

/** Options of {@linkcode brokerStream}. */
export interface BrokerStreamOptions {
  /** Opens the connection (TCP or TLS). */
  readonly open: () => Promise<Deno.Conn>;
  /** PUBLISH payloads over this many bytes are skipped, never copied. */
  readonly maxPayloadBytes: number;
  /** Told about each skipped message (a QoS 1 one is acknowledged here). */
  readonly onOversized: (message: OversizedMessage) => void;
  /**
   * When given, every other QoS 0/1 message comes here through the
   * {@linkcode Inbox} (in order, with the oversized reports), and a QoS 1
   * one is acknowledged here once it returns: the MQTT client sees only the
   * other packets (CONNACK, SUBACK, PUBACK, PINGRESP), so a message costs
   * one copy, no stream and no packet object. The payload is valid only
   * during the call.
   */
  readonly onMessage?: (message: InboundMessage) => void;
  /**
   * With `onMessage`: told about each message shed under overload (see
   * {@linkcode Inbox}; a QoS 1 one is acknowledged here).
   */
  readonly onShed?: (message: OversizedMessage) => void;
  /**
   * With `onMessage`: told when the packet ids of the QoS 1 messages that
   * arrive skip some, that is, when the broker numbered messages for this
   * connection and dropped them (see lost_ids.ts): how many.
   */
  readonly onLostIds?: (count: number) => void;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    offset += await conn.write(data.subarray(offset));
  }
}

/** An error as npm `mqtt` reports socket errors: with a `code`. */
function withCode(error: unknown): Error {
  const e = error instanceof Error ? error : new Error(String(error));
  const coded = e as Error & { code?: string };
  coded.code ??= e.name;
  return e;
}

/**
 * A Duplex over a connection that `open()` makes, which ends as a
 * `net.Socket` does: writes go to the connection in order (the filter's
 * PUBACKs in the same queue, so no write cuts into another), reads come
 * from one fixed buffer through the size filter, with backpressure (no read
 * while the client has not taken the last chunk, or while the inbox is
 * full). The broker's EOF ends the stream and `destroy()` closes the
 * connection, even one still opening or a reader held by backpressure;
 * either way "close" comes exactly once (what the inbox holds is still
 * handled). The stream exists at once; writes wait for the connection.
 */
export function brokerStream(
  options: BrokerStreamOptions,
): Duplex & { setNoDelay(on: boolean): void } {
  let closed = false;
  let wanted = Promise.withResolvers<void>();
  wanted.resolve();
  const opening = options.open();
  opening.catch(() => {});
  /** The writes so far, in order; each next one starts when the last ended. */
  let writing: Promise<unknown> = Promise.resolve();
  const send = (data: Uint8Array): Promise<void> => {
    const sent = writing.then(() => opening).then((c) => writeAll(c, data));
    writing = sent.catch(() => {});
    return sent;
  };
  const acknowledge = (message: { qos: number; packetId: number }) => {
    if (message.qos === 1) send(pubAck(message.packetId)).catch(() => {});
  };
  const { onMessage } = options;
  const inbox = onMessage
    ? new Inbox({
      capacityBytes: Math.max(INBOX_BYTES, 4 * options.maxPayloadBytes),
      handle: (item: InboxItem) => {
        try {
          if (item.kind === "message") onMessage(item.message);
          else if (item.kind === "oversized") options.onOversized(item.message);
          else options.onShed?.(item.message);
        } finally {
          acknowledge(item.message);
        }
      },
      onError: (error) => stream.destroy(withCode(error)),
    })
    : undefined;
  const ids = new LostIds();
  /** Follows the ids of QoS 1 messages as they arrive (before any waits in the inbox). */
  const arrived = (message: { qos: number; packetId: number }) => {
    if (message.qos !== 1 || !options.onLostIds) return;
    const lost = ids.next(message.packetId);
    if (lost > 0) options.onLostIds(lost);
  };
  const filter = new PublishSizeFilter(options.maxPayloadBytes, {
    onOversized: (message) => {
      if (inbox) {
        inbox.putOversized(message);
        arrived(message);
        return;
      }
      acknowledge(message);
      options.onOversized(message);
    },
    ...(inbox
      ? {
        take: (message: InboundMessage) => {
          // Queued first: a report of lost ids may close the connection.
          inbox.put(message);
          arrived(message);
        },
      }
      : {}),
  });
  const stream = new Duplex({
    // The broker's EOF ends our side too (then "close"), as a net.Socket does.
    allowHalfOpen: false,
    read() {
      wanted.resolve();
    },
    write(chunk: Uint8Array, _encoding, callback) {
      send(chunk).then(() => callback(), (error) => callback(withCode(error)));
    },
    // MQTT.js writes a packet in many small pieces inside cork()/uncork():
    // they go out as one write (one TCP segment), as net.Socket sends them.
    writev(chunks, callback) {
      const total = chunks.reduce((n, c) => n + c.chunk.length, 0);
      const data = new Uint8Array(total);
      let at = 0;
      for (const { chunk } of chunks) {
        data.set(chunk, at);
        at += chunk.length;
      }
      send(data).then(() => callback(), (error) => callback(withCode(error)));
    },
    final(callback) {
      writing.then(() => opening).then((c) => c.closeWrite()).then(
        () => callback(),
        () => callback(),
      );
    },
    destroy(error, callback) {
      closed = true;
      inbox?.close();
      // Wakes a reader held by backpressure: it sees `closed` and stops.
      wanted.resolve();
      opening.then((c) => {
        try {
          c.close();
        } catch {
          // already closed
        }
      }, () => {});
      callback(error);
    },
  });
  const reading = async () => {
    let conn: Deno.Conn;
    try {
      conn = await opening;
    } catch (error) {
      stream.destroy(withCode(error));
      return;
    }
    // Destroyed while opening: destroy() closes the connection, say nothing.
    if (closed) return;
    stream.emit("connect");
    const buffer = new Uint8Array(READ_BYTES);
    try {
      while (!closed) {
        await wanted.promise;
        if (closed) return;
        const n = await conn.read(buffer);
        if (closed) return;
        if (n === null) {
          stream.push(null);
          return;
        }
        let more = true;
        for (const piece of filter.push(buffer.subarray(0, n))) {
          // The client may keep a chunk until its packet is complete: copy.
          more = stream.push(Buffer.from(piece)) && more;
        }
        if (!more) wanted = Promise.withResolvers<void>();
        // Handling goes on in slices while the next read is under way;
        // with the inbox full, the next read waits (then the broker queues).
        inbox?.kick();
        if (inbox?.full) await inbox.room();
      }
    } catch (error) {
      if (!closed) stream.destroy(withCode(error));
    }
  };
  reading();
  return Object.assign(stream, {
    setNoDelay(on: boolean) {
      opening.then((c) => (c as Deno.TcpConn).setNoDelay?.(on), () => {});
    },
  });
}
