/**
 * Small statistics and formatting helpers for the benchmark report.
 *
 * @module
 */

/** The value below which `p` (0..1) of the sorted values lie (nearest rank). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(
    sorted.length - 1,
    Math.max(0, Math.ceil(p * sorted.length) - 1),
  );
  return sorted[rank]!;
}

/** Median (mean of the middle two for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return NaN;
  const sorted = [...finite].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? sorted[mid]!
    : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Bytes -> MiB. */
export function mib(bytes: number): number {
  return bytes / (1024 * 1024);
}

/** A number with a sensible count of digits for a table cell; "—" for NaN. */
export function fmt(value: number, digits?: number): string {
  if (!Number.isFinite(value)) return "—";
  const d = digits ??
    (Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2);
  return value.toFixed(d);
}

/** A Markdown table. */
export function table(
  header: readonly string[],
  rows: readonly string[][],
): string {
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length))
  );
  const line = (cells: readonly string[]) =>
    `| ${
      cells.map((
        c,
        i,
      ) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(
        " | ",
      )
    } |`;
  const rule = `| ${
    widths.map((w, i) => (i === 0 ? "-".repeat(w) : "-".repeat(w - 1) + ":"))
      .join(" | ")
  } |`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}
