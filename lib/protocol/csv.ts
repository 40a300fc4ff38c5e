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

/** A quote or a line end (from `lastIndex`): where skipping must look closer. */
const QUOTE_OR_LINE_END = /["\r\n]/g;

/**
 * Skips the fields of a record from `from` (the start of a field) to the
 * record's end, as {@linkcode csvRecords} splits them but without copying
 * anything: the index of the `\r` or `\n` that ends it, or the length.
 * A record without quotes ends at the next line end, found by the RegExp
 * engine; only one with a quote is walked field by field.
 */
function skipFields(text: string, from: number): number {
  QUOTE_OR_LINE_END.lastIndex = from;
  if (!QUOTE_OR_LINE_END.test(text)) return text.length;
  const special = QUOTE_OR_LINE_END.lastIndex - 1;
  if (text.charCodeAt(special) !== QUOTE) return special;
  return walkFields(text, from);
}

/** {@linkcode skipFields} field by field, for a record with a quote in it. */
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

/**
 * What {@linkcode readHead} saw of one record. Its first field is
 * classified, never copied: `"530"`; `"id"`, another SmartREST template id
 * (1-5 digits); `"other"`, anything else; `"quoted"`, a quoted first field
 * (read such a record with {@linkcode csvRecords}); `"blank"`, a record
 * that {@linkcode csvRecords} skips.
 */
interface RecordHead {
  kind: "530" | "id" | "other" | "quoted" | "blank";
  /** Where the next record starts (not set for `"quoted"`). */
  next: number;
}

/**
 * Reads the record that starts at `from` into `head` (reused, so that
 * walking thousands of records allocates nothing), classifying its first
 * field and skipping the rest: the bulk of a hostile payload costs a look
 * at each character and no copy.
 */
function readHead(text: string, from: number, head: RecordHead): void {
  let start = from;
  while (start < text.length && isBlank(text.charCodeAt(start))) start++;
  if (text.charCodeAt(start) === QUOTE) {
    head.kind = "quoted";
    return;
  }
  const fieldEnd = nextFieldEnd(text, start);
  let end = fieldEnd; // trimmed as String.prototype.trim would
  while (end > start && isBlank(text.charCodeAt(end - 1))) end--;
  const length = end - start;
  let digits = length > 0 && length <= 5;
  for (let i = start; digits && i < end; i++) {
    const code = text.charCodeAt(i);
    digits = code >= 0x30 && code <= 0x39;
  }
  const more = text.charCodeAt(fieldEnd) === COMMA;
  head.kind = !digits
    ? (length === 0 && !more ? "blank" : "other")
    : length === 3 && text.startsWith("530", start)
    ? "530"
    : "id";
  head.next = pastSeparator(
    text,
    more ? skipFields(text, fieldEnd + 1) : fieldEnd,
  );
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
 * is only counted, in one pass over its characters that copies nothing.
 * Splits as {@linkcode csvRecords} does; a record it cannot classify on
 * the fast path (blanks around its first field, a quote in a later field)
 * is read with {@linkcode readHead}.
 */
export function skimRecords(
  text: string,
  from: number,
  whole: (start: number) => number,
): Skimmed {
  const skimmed: Skimmed = { others: 0, garbage: false };
  const head: RecordHead = { kind: "blank", next: 0 };
  const n = text.length;
  let quote = -1;
  let cr = -1;
  let i = from;
  while (i < n) {
    // The first field: digits only (the common case) is classified here.
    let k = i;
    let digits = 0;
    let plain = true;
    let code = 0;
    for (; k < n; k++) {
      code = text.charCodeAt(k);
      if (code === COMMA || code === LF || code === CR) break;
      if (code >= 0x30 && code <= 0x39) digits++;
      else {
        plain = false;
        break;
      }
    }
    // The rest of the record: to its line end, unless a quote comes first
    // (found by indexOf; the next quote and \r are remembered, as they are
    // rare, so that each is searched for once).
    let end = k;
    if (plain && code === COMMA) {
      if (quote <= k) quote = indexOrLength(text, '"', k + 1);
      if (cr <= k) cr = indexOrLength(text, "\r", k + 1);
      end = Math.min(indexOrLength(text, "\n", k + 1), cr);
      if (quote < end) end = walkFields(text, k + 1);
    }
    if (!plain) {
      readHead(text, i, head);
      if (head.kind === "530" || head.kind === "quoted") {
        i = whole(i);
        continue;
      }
      i = head.next;
      if (head.kind === "blank") continue;
      skimmed.others++;
      if (head.kind === "other") skimmed.garbage = true;
      continue;
    }
    if (digits === 3 && text.startsWith("530", i)) {
      i = whole(i);
      continue;
    }
    i = pastSeparator(text, end);
    if (digits === 0 && code !== COMMA) continue; // a blank line
    skimmed.others++;
    if (digits === 0 || digits > 5) skimmed.garbage = true;
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
