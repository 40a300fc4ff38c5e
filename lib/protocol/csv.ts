/**
 * CSV as SmartREST uses it (RFC 4180 style): scanning payloads into records
 * and quoting one field for a status line. Pure code; nothing here throws.
 *
 * @module
 */

/** Longest quoted field sent to the cloud (characters, ellipsis included). */
const MAX_REASON_CHARS = 250;

/** One CSV record as scanned, with what was wrong with it. */
export interface CsvRecord {
  readonly fields: string[];
  /** Set when the record is not well-formed CSV (fields are then a best effort). */
  readonly problem: string | undefined;
  /** The record's text, without its separator, for log lines. */
  readonly text: string;
}

const COMMA = 0x2c;
const QUOTE = 0x22;
const LF = 0x0a;
const CR = 0x0d;

/** Whitespace that surrounds a field (not a record separator). */
function isBlank(code: number): boolean {
  // ASCII without a regular expression (this runs for every field).
  if (code < 0x80) {
    return code === 0x20 || (code >= 0x09 && code <= 0x0c && code !== LF);
  }
  return /\s/.test(String.fromCharCode(code));
}

function isFieldEnd(code: number): boolean {
  return code === COMMA || code === LF || code === CR;
}

/** Index of the next `,`, `\r` or `\n` at or after `from`, or the length. */
function nextFieldEnd(text: string, from: number): number {
  let i = from;
  while (i < text.length && !isFieldEnd(text.charCodeAt(i))) i++;
  return i;
}

/** Reads a quoted field whose opening quote is at `open`. */
function readQuoted(
  text: string,
  open: number,
): { value: string; end: number; problem?: string } {
  let value = "";
  let from = open + 1;
  for (;;) {
    const quote = text.indexOf('"', from);
    if (quote < 0) {
      return {
        value: value + text.slice(from),
        end: text.length,
        problem: "unterminated quoted field",
      };
    }
    value += text.slice(from, quote);
    if (text.charCodeAt(quote + 1) === QUOTE) {
      value += '"';
      from = quote + 2;
      continue;
    }
    let end = quote + 1;
    while (end < text.length && isBlank(text.charCodeAt(end))) end++;
    if (end < text.length && !isFieldEnd(text.charCodeAt(end))) {
      const stop = nextFieldEnd(text, end);
      return {
        value: value + text.slice(end, stop),
        end: stop,
        problem: "text after a closing quote",
      };
    }
    return { value, end };
  }
}

/** Splits text into CSV records, leniently, noting what is malformed. */
export function scanCsv(text: string): CsvRecord[] {
  return [...csvRecords(text)];
}

/**
 * The CSV records of `text` one at a time, as {@linkcode scanCsv} splits
 * them: a caller that stops early does not pay for the rest. When `wanted`
 * says no to a record's first field, the record is skipped to its end
 * without collecting its other fields (its `fields` is the first alone).
 */
export function* csvRecords(
  text: string,
  wanted: (first: string) => boolean = () => true,
): Generator<CsvRecord> {
  let i = 0;
  while (i < text.length) {
    const start = i;
    const fields: string[] = [];
    let problem: string | undefined;
    let quoted = false;
    let keep = true;
    for (;;) {
      let j = i;
      while (j < text.length && isBlank(text.charCodeAt(j))) j++;
      if (text.charCodeAt(j) === QUOTE) {
        const field = readQuoted(text, j);
        if (keep) fields.push(field.value);
        problem ??= field.problem;
        quoted = true;
        i = field.end;
      } else {
        const end = nextFieldEnd(text, i);
        if (keep) fields.push(text.slice(i, end).trim());
        i = end;
      }
      if (fields.length === 1 && keep) keep = wanted(fields[0]!);
      if (text.charCodeAt(i) !== COMMA) break;
      i++;
    }
    const recordEnd = i;
    if (text.charCodeAt(i) === CR) i++;
    if (
      text.charCodeAt(i) === LF &&
      (i === recordEnd || text.charCodeAt(i - 1) === CR)
    ) i++;
    const blank = !quoted && fields.length === 1 && fields[0] === "";
    if (!blank) {
      yield { fields, problem, text: text.slice(start, recordEnd) };
    }
  }
}

/**
 * Parse CSV records (RFC 4180 style, as SmartREST uses: quoted fields, `""`
 * escapes, quoted fields may contain commas and newlines; `\n`, `\r\n` or a
 * lone `\r` separate records; whitespace around fields outside quotes is
 * trimmed; blank lines are skipped). Lenient: malformed input (an unterminated
 * quote, text after a closing quote) still yields a best-effort result.
 */
export function parseCsv(payload: string): string[][] {
  if (typeof payload !== "string") return [];
  return scanCsv(payload).map((record) => record.fields);
}

/** Control characters and line/paragraph separators: never sent or logged raw. */
const UNSAFE_CHAR = /[\p{Cc}\p{Zl}\p{Zp}]/gu;
const LONE_SURROGATE = /\p{Cs}/gu;

/** Cuts text to at most `max` code units, ending in `…` when it was cut. */
function cut(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max - 1;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--; // do not split a surrogate pair
  return text.slice(0, end) + "…";
}

/**
 * CSV-quote one field for SmartREST: `"..."` with `""` for a quote. Control
 * characters and line separators become spaces, lone surrogates U+FFFD, and
 * the value is cut to 250 characters (ending in `…`), since it is meant for
 * short values such as a failure reason shown in Cumulocity.
 */
export function csvField(value: string): string {
  const clean = cut(
    String(value).replace(UNSAFE_CHAR, " ").replace(LONE_SURROGATE, "\ufffd"),
    MAX_REASON_CHARS,
  );
  return `"${clean.replaceAll('"', '""')}"`;
}
