/**
 * The text of a caught value, for messages and log lines: one helper instead
 * of `error instanceof Error ? error.message : String(error)` everywhere.
 * (Not the session's error classification: that is lib/session/tunnel.ts.)
 *
 * @module
 */

/** `error.message` for an Error, else `String(error)`; never throws. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  try {
    return String(error);
  } catch {
    return "unknown error";
  }
}
