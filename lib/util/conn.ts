/**
 * Two small helpers for byte connections (`Deno.Conn`, or anything with the
 * same `write`/`close`) that several modules need.
 *
 * @module
 */

/** The part of a connection the helpers use; `Deno.Conn` has it. */
export interface Writer {
  write(data: Uint8Array): Promise<number>;
}

/** Something that can be closed, maybe twice. */
export interface Closer {
  close(): void;
}

/** Writes all of `data` (a `Deno.Conn` write may take only part of it). */
export async function writeAll(conn: Writer, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    offset += await conn.write(offset === 0 ? data : data.subarray(offset));
  }
}

/** Closes a connection that may already be closed. */
export function closeQuietly(conn: Closer): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
