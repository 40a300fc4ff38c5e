/**
 * Process-wide state of the agent's WebSocket client (private to
 * lib/cloud/): the growth budget shared by the buffers of all sessions, and
 * a pool of random bytes for masking keys.
 *
 * @module
 */

/** Start size of both buffers of a session: small for idle sessions, doubled while busy. */
export const BUFFER_START_BYTES = 8 * 1024;
/**
 * How many bytes the buffers of all sessions together may grow beyond their
 * start size: busy sessions share it, the others keep 8 KiB buffers, so the
 * agent's buffer memory is bounded whatever the number of sessions (one
 * session grows by 112 KiB at most).
 */
export const GROWTH_BUDGET_BYTES = 8 * 1024 * 1024;
let growthInUse = 0;

/** Reserves `bytes` of the shared growth budget; false when it is spent. */
export function takeGrowth(bytes: number): boolean {
  if (growthInUse + bytes > GROWTH_BUDGET_BYTES) return false;
  growthInUse += bytes;
  return true;
}

/** Gives back what {@linkcode takeGrowth} reserved (when a session ends). */
export function returnGrowth(bytes: number): void {
  growthInUse -= bytes;
}

/** Random bytes for masking keys, refilled from the CSPRNG in blocks. */
const maskPool = new Uint8Array(4096);
let maskPoolOffset = maskPool.length;

/** Writes a fresh 4-byte masking key into `into` at `at`. */
export function nextMaskKey(into: Uint8Array, at: number): void {
  if (maskPoolOffset === maskPool.length) {
    crypto.getRandomValues(maskPool);
    maskPoolOffset = 0;
  }
  into.set(maskPool.subarray(maskPoolOffset, maskPoolOffset + 4), at);
  maskPoolOffset += 4;
}
