/**
 * The text of a caught value, for messages and log lines: one helper instead
 * of `error instanceof Error ? error.message : String(error)` everywhere.
 * (Not the classification of network and TLS errors by what a user can do:
 * that is `classifyError` in lib/cloud/leg.ts.)
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
