/**
 * The JWT that the thin-edge bridge hands out (`<prefix>/s/uat` ->
 * `71,<token>` on `<prefix>/s/dat`): reading the answer and the token's
 * expiry. Used by the reconnecting link and by the one-shot client.
 *
 * @module
 */
import { jsonTooDeep } from "../protocol/json_depth.ts";

/** The token in a `71,<token>` answer (quotes removed), or undefined for anything else. */
export function parseJwtAnswer(text: string): string | undefined {
  const line = text.trim();
  if (!line.startsWith("71,")) return undefined;
  const token = line.slice(3).trim().replace(/^"|"$/g, "");
  return token === "" ? undefined : token;
}

/** Reads `exp` (unix seconds) from a JWT's payload without verifying it; null when absent. */
export function jwtExpiry(token: string): number | null {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const json = atob(
      part.replace(/-/g, "+").replace(/_/g, "/").padEnd(
        part.length + (4 - part.length % 4) % 4,
        "=",
      ),
    );
    if (jsonTooDeep(json)) return null;
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp : null;
  } catch {
    return null;
  }
}
