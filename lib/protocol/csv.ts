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

/** Index just past the separator (`\n`, `\r\n` or `\r`) of a record that ends at `end`. */
function pastSeparator(text: string, end: number): number {
  const code = text.charCodeAt(end);
  if (code === LF) return end + 1;
  if (code !== CR) return end;
  return text.charCodeAt(end + 1) === LF ? end + 2 : end + 1;
}

/** Index of `search` in `text` at or after `from`, or the length. */
function indexOrLength(text: string, search: string, from: number): number {
  const at = text.indexOf(search, from);
  return at < 0 ? text.length : at;
}

/** Whether `text` has `530` at `at` (cheaper than `startsWith`). */
function startsWith530(text: string, at: number): boolean {
  return text.charCodeAt(at) === 0x35 && text.charCodeAt(at + 1) === 0x33 &&
    text.charCodeAt(at + 2) === 0x30;
}

/**
 * Where the next `\n`, `\r`, quote and comma are in a text, for a
 * scan that only moves forward: each is found by one `indexOf` (native, far
 * cheaper than reading characters one by one) and kept until the scan
 * passes it, however many records lie before it.
 */
class Marks {
  private lf = -1;
  private cr = -1;
  private quoteAt = -1;
  private commaAt = -1;

  constructor(readonly text: string) {}

  /** Where the line that holds `at` ends: its `\r` or `\n`, or the length. */
  lineEnd(at: number): number {
    if (this.lf < at) this.lf = indexOrLength(this.text, "\n", at);
    if (this.cr < at) this.cr = indexOrLength(this.text, "\r", at);
    return this.lf < this.cr ? this.lf : this.cr;
  }

  /** The first quote at or after `at` (or the length). */
  quote(at: number): number {
    if (this.quoteAt < at) this.quoteAt = indexOrLength(this.text, '"', at);
    return this.quoteAt;
  }

  /** Where the unquoted field around `at` ends: its `,`, `\r` or `\n`, or the length. */
  fieldEnd(at: number): number {
    if (this.commaAt < at) this.commaAt = indexOrLength(this.text, ",", at);
    const end = this.lineEnd(at);
    return this.commaAt < end ? this.commaAt : end;
  }

  /**
   * Where the record ends (its `\r` or `\n`, or the length) whose fields
   * from `at` on are skipped; `at` lies in an unquoted field or at the comma
   * after one. That is the line end unless a quoted field runs past it; the
   * quotes on the way are visited, not the characters.
   */
  recordEnd(at: number): number {
    const text = this.text;
    let end = this.lineEnd(at);
    let quote = this.quote(at);
    if (quote < end) {
      // The usual case: after a character that is not a quote, comma or
      // blank, the line's last quote closes a quoted field or is plain text
      // (never an opening quote or half of a ""), so no field stays open.
      let last = end - 1;
      while (text.charCodeAt(last) !== QUOTE) last--;
      const before = text.charCodeAt(last - 1);
      if (before !== QUOTE && before !== COMMA && !isBlank(before)) return end;
    }
    while (quote < end) {
      // A quote opens a field when only blanks lie between it and a comma.
      let before = quote - 1;
      while (isBlank(text.charCodeAt(before))) before--;
      const field = text.charCodeAt(before) === COMMA
        ? quotedEnd(text, quote)
        : this.fieldEnd(quote);
      if (text.charCodeAt(field) !== COMMA) return field;
      end = this.lineEnd(field);
      quote = this.quote(field);
    }
    return end;
  }
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
 * is only counted, nothing is copied. Its first field is classified in
 * place (once garbage is seen, only when the record starts with `530`, a
 * quote or a blank: any other one can only be counted), and its end found
 * from the quotes on its line ({@linkcode Marks}). Splits as
 * {@linkcode readRecord} does.
 */
export function skimRecords(
  text: string,
  from: number,
  whole: (start: number) => number,
): Skimmed {
  let others = 0;
  let garbage = false;
  const marks = new Marks(text);
  let i = from;
  while (i < text.length) {
    const end = marks.lineEnd(i);
    let k = i; // the end of the first field, once it is classified
    let code = text.charCodeAt(k);
    const classify = !garbage || i === end || code === QUOTE ||
      isBlank(code) || startsWith530(text, i);
    if (classify) {
      while (k < end && isBlank(code)) code = text.charCodeAt(++k);
      if (code === QUOTE) {
        i = whole(i);
        continue;
      }
      const start = k;
      let value = 0;
      while (code >= 0x30 && code <= 0x39) {
        value = value * 10 + code - 0x30;
        code = text.charCodeAt(++k);
      }
      const digits = k - start;
      while (k < end && isBlank(code)) code = text.charCodeAt(++k);
      const more = k < end && code !== COMMA; // other text in the field
      if (!more && digits === 3 && value === 530) {
        i = whole(i);
        continue;
      }
      if (!more && digits === 0 && k === end) { // a blank record
        i = pastSeparator(text, end);
        continue;
      }
      if (more) k = marks.fieldEnd(k);
      if (more || digits === 0 || digits > 5) garbage = true;
    }
    i = pastSeparator(text, marks.quote(k) < end ? marks.recordEnd(k) : end);
    others++;
  }
  return { others, garbage };
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
