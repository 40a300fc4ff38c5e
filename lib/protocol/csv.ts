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
  /** Where the next record starts (just past this one's separator). */
  readonly next: number;
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

/**
 * Index just past the quoted field whose opening quote is at `open` (and
 * past text after its closing quote, up to the field's end), as
 * {@linkcode readQuoted} reads it, without collecting its value.
 */
function quotedEnd(text: string, open: number): number {
  let from = open + 1;
  for (;;) {
    const quote = text.indexOf('"', from);
    if (quote < 0) return text.length;
    if (text.charCodeAt(quote + 1) === QUOTE) {
      from = quote + 2;
      continue;
    }
    let end = quote + 1;
    while (end < text.length && isBlank(text.charCodeAt(end))) end++;
    return nextFieldEnd(text, end);
  }
}

/**
 * Skips the fields of a record from `from` (the start of a field), one by
 * one, as {@linkcode readRecord} splits them but without copying anything:
 * the index of the `\r` or `\n` that ends the record, or the length.
 */
function walkFields(text: string, from: number): number {
  let i = from;
  for (;;) {
    let j = i;
    while (j < text.length && isBlank(text.charCodeAt(j))) j++;
    i = text.charCodeAt(j) === QUOTE
      ? quotedEnd(text, j)
      : nextFieldEnd(text, i);
    if (text.charCodeAt(i) !== COMMA) return i;
    i++;
  }
}

/** Index just past the separator (`\n`, `\r\n` or `\r`) of a record that ends at `end`. */
function pastSeparator(text: string, end: number): number {
  let i = end;
  if (text.charCodeAt(i) === CR) i++;
  if (
    text.charCodeAt(i) === LF && (i === end || text.charCodeAt(i - 1) === CR)
  ) i++;
  return i;
}

/** Index of `char` in `text` at or after `from`, or the length. */
function indexOrLength(text: string, char: string, from: number): number {
  const at = text.indexOf(char, from);
  return at < 0 ? text.length : at;
}

/** What {@linkcode skimRecords} counted. */
export interface Skimmed {
  /** Records that are not blank and were not handed to `whole`. */
  others: number;
  /** Some of them do not start with a template id (garbage, not another template). */
  garbage: boolean;
}

/**
 * Walks the records of `text` from `from` for the few that matter: a
 * record whose first field is `530`, or is quoted, goes to `whole` (which
 * reads it and returns where the next record starts); every other record
 * is only counted: its first field is classified in place, the rest is
 * skipped to the line end found by `indexOf`, nothing is copied. Splits as
 * {@linkcode readRecord} does (a record with a quote after its first field
 * is walked field by field).
 */
export function skimRecords(
  text: string,
  from: number,
  whole: (start: number) => number,
): Skimmed {
  const skimmed: Skimmed = { others: 0, garbage: false };
  const n = text.length;
  // The next quote and \r at or after the last search: rare, so each
  // occurrence is searched for once, however many records lie before it.
  let quote = -1;
  let cr = -1;
  /** The end of a record whose fields from `field` on are skipped. */
  const restEnd = (field: number): number => {
    if (quote < field) quote = indexOrLength(text, '"', field);
    if (cr < field) cr = indexOrLength(text, "\r", field);
    const end = Math.min(indexOrLength(text, "\n", field), cr);
    return quote < end ? walkFields(text, field) : end;
  };
  let i = from;
  while (i < n) {
    let start = i;
    while (start < n && isBlank(text.charCodeAt(start))) start++;
    if (text.charCodeAt(start) === QUOTE) {
      i = whole(i);
      continue;
    }
    const fieldEnd = nextFieldEnd(text, start);
    let end = fieldEnd; // trimmed as String.prototype.trim would
    while (end > start && isBlank(text.charCodeAt(end - 1))) end--;
    const length = end - start;
    let id = length > 0 && length <= 5; // a template id: 1-5 digits
    for (let k = start; id && k < end; k++) {
      const code = text.charCodeAt(k);
      id = code >= 0x30 && code <= 0x39;
    }
    if (id && length === 3 && text.startsWith("530", start)) {
      i = whole(i);
      continue;
    }
    const more = text.charCodeAt(fieldEnd) === COMMA;
    i = pastSeparator(text, more ? restEnd(fieldEnd + 1) : fieldEnd);
    if (length === 0 && !more) continue; // a blank record
    skimmed.others++;
    if (!id) skimmed.garbage = true;
  }
  return skimmed;
}

/** Splits text into CSV records, leniently, noting what is malformed. */
export function scanCsv(text: string): CsvRecord[] {
  return [...csvRecords(text)];
}

/**
 * The record of `text` that starts at `from` (blank records skipped), with
 * all its fields, as {@linkcode scanCsv} splits it; undefined when only
 * blank records are left.
 */
export function readRecord(text: string, from: number): CsvRecord | undefined {
  let i = from;
  while (i < text.length) {
    const start = i;
    const fields: string[] = [];
    let problem: string | undefined;
    let quoted = false;
    for (;;) {
      let j = i;
      while (j < text.length && isBlank(text.charCodeAt(j))) j++;
      if (text.charCodeAt(j) === QUOTE) {
        const field = readQuoted(text, j);
        fields.push(field.value);
        problem ??= field.problem;
        quoted = true;
        i = field.end;
      } else {
        const end = nextFieldEnd(text, i);
        fields.push(text.slice(i, end).trim());
        i = end;
      }
      if (text.charCodeAt(i) !== COMMA) break;
      i++;
    }
    const recordEnd = i;
    i = pastSeparator(text, recordEnd);
    const blank = !quoted && fields.length === 1 && fields[0] === "";
    if (!blank) {
      return { fields, problem, text: text.slice(start, recordEnd), next: i };
    }
  }
  return undefined;
}

/**
 * The CSV records of `text` one at a time, as {@linkcode scanCsv} splits
 * them: a caller that stops early does not pay for the rest.
 */
export function* csvRecords(text: string): Generator<CsvRecord> {
  for (
    let record = readRecord(text, 0);
    record !== undefined;
    record = readRecord(text, record.next)
  ) yield record;
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
