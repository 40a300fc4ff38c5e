/**
 * The byte pump of an open session: TCP target <-> cloud WebSocket.
 *
 * Two one-way copy loops tied by one end: whichever direction ends first
 * (EOF, close frame, error, or the session's signal) ends the pump, after
 * what that direction already read has been written. Each loop awaits its
 * write before reading again, so at most one chunk per direction is in the
 * agent's hands: a slow target or a slow cloud stops the reads (backpressure
 * both ways) instead of growing a queue.
 *
 * A cloud leg of the agent's own WebSocket client ({@linkcode CloudSocket})
 * is pumped through its reused buffers: target bytes are read straight into
 * the frame's payload space, cloud payloads are written straight from the
 * receive buffer, so a session allocates nothing per chunk. Other legs
 * (streams) go through {@linkcode CHUNK_BYTES} reads.
 *
 * @module
 */
import { closeQuietly, writeAll } from "../util/conn.ts";
import type { CloudLeg, CloudSocket } from "../cloud/websocket.ts";

/** Size of one read from the target; also the largest frame we send. */
export const CHUNK_BYTES = 64 * 1024;

/** Opens the TCP leg; injectable so tests can add faults. */
export type Dial = (
  host: string,
  port: number,
  signal: AbortSignal,
) => Promise<Deno.Conn>;

/** Connects to host:port with `Deno.connect`. */
export const dialTcp: Dial = async (host, port, signal) => {
  const conn = await Deno.connect({ hostname: host, port, signal });
  try {
    conn.setNoDelay(true);
  } catch {
    // Not every platform supports it; latency then depends on Nagle.
  }
  return conn;
};

/** Byte counters of one session, read by the tunnel for its idle timer and summary. */
export interface Traffic {
  /** Bytes read from the target and sent to the cloud. */
  fromTarget: number;
  /** Bytes received from the cloud and written to the target. */
  toTarget: number;
}

/** Which side ended the pump, and how. */
export type PumpEnd =
  | { readonly by: "target"; readonly error?: unknown }
  | { readonly by: "cloud"; readonly code?: number; readonly error?: unknown }
  | { readonly by: "session" };

/** Options of {@linkcode pump}. */
export interface PumpOptions {
  /** Aborting ends the pump at once (timeouts, shutdown). */
  readonly signal: AbortSignal;
  /** Counters updated as bytes move. */
  readonly traffic: Traffic;
  /** Called once per text frame from the cloud (they are dropped, never written to the target). */
  readonly onTextFrame?: () => void;
}

/** Target -> cloud: one reused buffer; each write is awaited before the next read. */
async function copyTargetToCloud(
  tcp: Deno.Conn,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  traffic: Traffic,
): Promise<PumpEnd> {
  const buffer = new Uint8Array(CHUNK_BYTES);
  try {
    while (true) {
      const n = await tcp.read(buffer);
      if (n === null) return { by: "target" };
      traffic.fromTarget += n;
      await writer.write(buffer.subarray(0, n));
    }
  } catch (error) {
    return { by: "target", error };
  }
}

/** Cloud -> target: pulls one frame only after the previous one is written. */
async function copyCloudToTarget(
  reader: ReadableStreamDefaultReader<string | Uint8Array>,
  tcp: Deno.Conn,
  options: PumpOptions,
): Promise<PumpEnd> {
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return { by: "cloud" };
      if (typeof value === "string") {
        options.onTextFrame?.();
        continue;
      }
      options.traffic.toTarget += value.length;
      await writeAll(tcp, value);
    }
  } catch (error) {
    return { by: "cloud", error };
  }
}

/** Target -> cloud socket: reads into the frame's payload space, sends, repeats. */
async function readTargetIntoFrames(
  tcp: Deno.Conn,
  socket: CloudSocket,
  traffic: Traffic,
): Promise<PumpEnd> {
  while (true) {
    let n: number | null;
    try {
      n = await tcp.read(socket.sendSpace());
    } catch (error) {
      return { by: "target", error };
    }
    if (n === null) return { by: "target" };
    traffic.fromTarget += n;
    try {
      await socket.send(n);
    } catch (error) {
      return { by: "cloud", error };
    }
  }
}

/** Cloud socket -> target: writes each received payload view before receiving more. */
async function writeFramesToTarget(
  socket: CloudSocket,
  tcp: Deno.Conn,
  options: PumpOptions,
): Promise<PumpEnd> {
  while (true) {
    let bytes: Uint8Array | null;
    try {
      bytes = await socket.receive(options.onTextFrame);
    } catch (error) {
      return { by: "cloud", error };
    }
    if (bytes === null) return { by: "cloud" };
    options.traffic.toTarget += bytes.length;
    try {
      await writeAll(tcp, bytes);
    } catch (error) {
      return { by: "target", error };
    }
  }
}

/**
 * Copies bytes both ways until one side ends or `signal` aborts, then closes
 * both legs (a close frame to the cloud, a TCP close to the target) exactly
 * once. Resolves with the side that ended it; never rejects.
 */
export async function pump(
  tcp: Deno.Conn,
  cloud: CloudLeg,
  options: PumpOptions,
): Promise<PumpEnd> {
  const socket = cloud.socket;
  const writer = socket ? null : cloud.writable.getWriter();
  const reader = socket ? null : cloud.readable.getReader();
  let onAbort = () => {};
  const aborted = new Promise<PumpEnd>((resolve) => {
    onAbort = () => resolve({ by: "session" });
    if (options.signal.aborted) onAbort();
    options.signal.addEventListener("abort", onAbort, { once: true });
  });
  const up = socket
    ? readTargetIntoFrames(tcp, socket, options.traffic)
    : copyTargetToCloud(tcp, writer!, options.traffic);
  const down = socket
    ? writeFramesToTarget(socket, tcp, options)
    : copyCloudToTarget(reader!, tcp, options);
  const end = await Promise.race([up, down, aborted]);
  options.signal.removeEventListener("abort", onAbort);
  // Whatever ended first has delivered what it read; now end both legs.
  cloud.close(
    end.by === "target" ? "target closed" : "session closed by the device",
  );
  closeQuietly(tcp);
  // The other direction ends on its own once its pending read or write
  // fails on the closed legs; a stuck cloud must not hold up the session.
  // A socket leg's reads end with the close handshake (bounded by a timer).
  reader?.cancel().catch(() => {});
  writer?.abort().catch(() => {});
  if (end.by === "cloud" && end.error === undefined) {
    return { by: "cloud", code: (await cloud.closed).code };
  }
  return end;
}
