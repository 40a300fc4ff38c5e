/**
 * One helper for "this must happen within N ms": start-up waits, probes,
 * the handoff, shutdown. The timer never outlives the promise it guards.
 *
 * @module
 */

/** Thrown by {@linkcode deadline} when the time is up. */
export class DeadlineError extends Error {
  override name = "DeadlineError";
}

/**
 * Resolves or rejects as `promise` does, or rejects with a
 * {@linkcode DeadlineError} carrying `message` after `ms`, or with
 * `options.signal`'s reason when it aborts, whichever comes first.
 *
 * @example
 * ```ts
 * const client = await deadline(connect(), 2500, "broker did not answer");
 * ```
 * @throws {DeadlineError} when `ms` pass first.
 */
export async function deadline<T>(
  promise: Promise<T>,
  ms: number,
  message: string,
  options: { readonly signal?: AbortSignal } = {},
): Promise<T> {
  const { signal } = options;
  signal?.throwIfAborted();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort = () => {};
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new DeadlineError(message)), ms);
        onAbort = () => reject(signal?.reason);
        signal?.addEventListener("abort", onAbort, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * True when `promise` settles (either way) within `ms`, false when the time
 * runs out first; never rejects. For clean-ups that must not hold up an exit.
 */
export async function settlesWithin(
  promise: Promise<unknown>,
  ms: number,
): Promise<boolean> {
  try {
    await deadline(promise.catch(() => {}), ms, "");
    return true;
  } catch {
    return false;
  }
}

/** How long a command may take to close everything after SIGTERM/SIGINT (DESIGN.md §1.5: exit within 5 s). */
export const SHUTDOWN_MS = 4500;
