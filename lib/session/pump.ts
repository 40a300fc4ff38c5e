/**
 * The byte pump of an open session: TCP target <-> cloud leg.
 *
 * Two named one-way loops tied by one end: whichever direction ends first
 * (EOF, close frame, error, or the session's signal) ends the pump, after
 * what that direction already read has been written; then both legs are
 * closed exactly once. Each loop awaits its write before reading again, so
 * at most one chunk per direction is in the agent's hands: a slow target or
 * a slow cloud stops the reads (backpressure both ways) instead of growing a
 * queue.
 *
 * Zero-copy through the leg's reused buffers: target bytes are read straight
 * into the next frame's payload space, cloud payloads are written straight
 * from the receive buffer, so a session allocates nothing per chunk.
 *
 * @module
 */
import { closeQuietly, writeAll } from "../util/conn.ts";
import type { CloudLeg } from "../cloud/leg.ts";

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

/** What the pump needs of the target's connection (a `Deno.Conn` has it). */
export type TargetConn = Pick<Deno.Conn, "read" | "write" | "close">;

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
  /** Called once per text message from the cloud (they are dropped, never written to the target). */
  readonly onTextFrame?: () => void;
}

/** Target -> cloud: reads into the frame's payload space, sends, repeats. */
async function targetToCloud(
  tcp: TargetConn,
  cloud: CloudLeg,
  traffic: Traffic,
): Promise<PumpEnd> {
  while (true) {
    let n: number | null;
    try {
      n = await tcp.read(cloud.sendSpace());
    } catch (error) {
      return { by: "target", error };
    }
    if (n === null) return { by: "target" };
    traffic.fromTarget += n;
    try {
      await cloud.send(n);
    } catch (error) {
      return { by: "cloud", error };
    }
  }
}

/** Cloud -> target: writes each received payload view before receiving more. */
async function cloudToTarget(
  cloud: CloudLeg,
  tcp: TargetConn,
  options: PumpOptions,
): Promise<PumpEnd> {
  while (true) {
    let bytes: Uint8Array | null;
    try {
      bytes = await cloud.receive(options.onTextFrame);
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
  tcp: TargetConn,
  cloud: CloudLeg,
  options: PumpOptions,
): Promise<PumpEnd> {
  let onAbort = () => {};
  const aborted = new Promise<PumpEnd>((resolve) => {
    onAbort = () => resolve({ by: "session" });
    if (options.signal.aborted) onAbort();
    options.signal.addEventListener("abort", onAbort, { once: true });
  });
  const end = await Promise.race([
    targetToCloud(tcp, cloud, options.traffic),
    cloudToTarget(cloud, tcp, options),
    aborted,
  ]);
  options.signal.removeEventListener("abort", onAbort);
  // Whatever ended first has delivered what it read; now end both legs. The
  // other loop ends on its own once its pending read or write fails on the
  // closed legs (the cloud's close handshake is bounded by a timer).
  cloud.close(
    end.by === "target" ? "target closed" : "session closed by the device",
  );
  closeQuietly(tcp);
  if (end.by === "cloud" && end.error === undefined) {
    return { by: "cloud", code: (await cloud.closed).code };
  }
  return end;
}
