/**
 * Private helpers for configuration messages: the error class, how a value
 * is shown (never a secret), and "did you mean" suggestions.
 *
 * @module
 */

/** Thrown for any bad configuration; the message names file, key, value and expectation. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Keys whose values never appear in a message. */
const SECRETS: ReadonlySet<string> = new Set([
  "proxy.password",
  "c8y.password",
]);

/** True for a TOML table (not an array, date or scalar). */
export function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null &&
    !Array.isArray(value) && !(value instanceof Date);
}

/** A value as written in a message: strings quoted, long ones shortened. */
export function show(value: unknown): string {
  let text: string;
  if (typeof value === "string") text = JSON.stringify(value);
  else if (value instanceof Date) text = value.toISOString();
  else if (Array.isArray(value)) text = `[${value.map(show).join(", ")}]`;
  else if (isTable(value)) text = "(a table)";
  else text = String(value);
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}

/** "<file>: key <key> = <value> is invalid: expected ..." (value hidden for secrets). */
export function invalid(
  file: string,
  key: string,
  raw: unknown,
  expected: string,
  hide = false,
): string {
  return hide || SECRETS.has(key)
    ? `${file}: key ${key} (value not shown) is invalid: expected ${expected}`
    : `${file}: key ${key} = ${show(raw)} is invalid: expected ${expected}`;
}

function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(
        (row[j] ?? 0) + 1,
        (next[j - 1] ?? 0) + 1,
        (row[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    row = next;
  }
  return row[b.length] ?? 0;
}

/** " (did you mean <candidate>?)" for a near miss (edit distance <= 2), else "". */
export function didYouMean(
  name: string,
  candidates: readonly string[],
): string {
  const best = candidates
    .map((candidate) => ({ candidate, d: distance(name, candidate) }))
    .sort((x, y) => x.d - y.d)[0];
  return best && best.d <= 2 && best.d <= name.length / 2
    ? ` (did you mean ${best.candidate}?)`
    : "";
}

/** Throws one ConfigError holding every issue, one per line; no-op for none. */
export function fail(issues: readonly string[]): void {
  if (issues.length > 0) throw new ConfigError(issues.join("\n"));
}
