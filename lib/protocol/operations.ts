/**
 * Remote-access operations as they arrive over MQTT (SmartREST template 530
 * and JSON `c8y_RemoteAccessConnect`), parsed into typed requests, and the
 * status lines sent back (SmartREST 501-506). Pure code: no I/O, no logging,
 * and no function here throws, whatever it is given.
 *
 * @module
 */
import {
  csvField,
  type CsvRecord,
  csvRecords,
  readRecord,
  skimRecords,
} from "./csv.ts";
import { jsonTooDeep, MAX_JSON_DEPTH } from "./json_depth.ts";
import { formatIPv6, parseIPv4, parseIPv6 } from "./ip.ts";

/**
 * Name of the operation: the JSON operation's fragment, the SmartREST
 * by-name status templates, and thin-edge's operation file name.
 */
export const OPERATION_NAME = "c8y_RemoteAccessConnect";

/** Longest connection key accepted (it becomes one URL path segment). */
const MAX_KEY_CHARS = 128;
/** Longest device id accepted as an MQTT topic level. */
const MAX_DEVICE_ID_CHARS = 1024;
/** Longest operation id accepted (Cumulocity ids are decimal numbers). */
const MAX_OPERATION_ID_DIGITS = 32;
/** How much of an offending value a reason quotes. */
const MAX_SHOWN_CHARS = 64;

/**
 * Identifies an operation well enough to report its status. `operationId`
 * present => JSON path (504/505/506), absent => SmartREST by name
 * (501/502/503). `key` is the connection key as received; it is only used to
 * recognise a second delivery, and may be empty for a rejected JSON operation
 * that carried none.
 */
export interface OperationRef {
  readonly deviceId: string;
  readonly key: string;
  readonly operationId?: string;
}

/**
 * A request that passed every check: `host` is a hostname (lowercased), an
 * IPv4 address, or an IPv6 address in canonical RFC 5952 form without
 * brackets; `port` is 1-65535; `key` is URL-path safe; `deviceId` is a valid
 * MQTT topic level.
 */
export interface RemoteAccessRequest extends OperationRef {
  readonly host: string;
  readonly port: number;
  readonly source: "smartrest" | "json";
}

/**
 * What became of one operation record:
 * - `request`: serve it;
 * - `rejected`: identifiable but unservable: report executing, then
 *   failed(reason);
 * - `ignored`: cannot be identified, or not for us: log (quiet => debug
 *   level) and drop, no status.
 *
 * Reasons never contain control characters: offending values are shown
 * shortened and escaped.
 */
export type ParseOutcome =
  | { readonly kind: "request"; readonly request: RemoteAccessRequest }
  | {
    readonly kind: "rejected";
    readonly ref: OperationRef;
    readonly reason: string;
  }
  | {
    readonly kind: "ignored";
    readonly reason: string;
    readonly quiet: boolean;
  };

/** Status of an operation as reported to Cumulocity. */
export type OperationStatus = "executing" | "successful" | "failed";

/** Reports one status of one operation, wherever it goes (a status line, a handoff reply). */
export type StatusReport = (status: OperationStatus, reason?: string) => void;

const ESCAPES: Readonly<Record<string, string>> = {
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
  "\\": "\\\\",
};
/** Characters that shorten() escapes: controls, format (bidi) characters, separators, lone surrogates. */
const LOG_UNSAFE = /[\\\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u;

/**
 * Shorten a payload for a log line: backslashes and control, format (bidi)
 * and separator characters escaped (`\n`, `\u{202e}`), cut to `max` (default
 * 200) characters with an ellipsis. Safe to log whatever the input.
 */
export function shorten(text: string, max = 200): string {
  const limit = Number.isFinite(max) ? Math.max(1, Math.floor(max)) : 200;
  const value = String(text);
  // Nothing to escape in what is shown: cut it (the common case, no copy per character).
  const shown = value.slice(0, limit + 1);
  if (!LOG_UNSAFE.test(shown)) {
    if (value.length <= limit) return value;
    let end = limit - 1;
    const last = value.charCodeAt(end - 1);
    if (last >= 0xd800 && last <= 0xdbff) end--; // keep a surrogate pair whole
    return value.slice(0, end) + "…";
  }
  const pieces: string[] = [];
  let length = 0;
  for (const char of value) {
    const piece = LOG_UNSAFE.test(char)
      ? ESCAPES[char] ?? `\\u{${char.codePointAt(0)?.toString(16)}}`
      : char;
    pieces.push(piece);
    length += piece.length;
    if (length > limit) {
      while (length > limit - 1) length -= pieces.pop()?.length ?? length;
      return pieces.join("") + "…";
    }
  }
  return pieces.join("");
}

/** A value quoted for a reason or a log line: `"..."`, shortened and escaped. */
function show(value: string): string {
  return `"${shorten(value, MAX_SHOWN_CHARS)}"`;
}

// ---------------------------------------------------------------------------
// Validation shared by both paths

/** Why `id` cannot be an MQTT topic level, or undefined when it can. */
function deviceIdProblem(id: string): string | undefined {
  if (id === "") return "empty device id";
  if (id.length > MAX_DEVICE_ID_CHARS) {
    return `device id longer than ${MAX_DEVICE_ID_CHARS} characters`;
  }
  // MQTT forbids NUL and lone surrogates in topics; / + # change its meaning;
  // controls and non-characters are discouraged by the spec and only confuse.
  if (/[/+#\p{Cc}\p{Cs}\p{Zl}\p{Zp}\ufdd0-\ufdef\ufffe\uffff]/u.test(id)) {
    return `device id ${
      show(id)
    } cannot be an MQTT topic level (no / + # or control characters allowed)`;
  }
  return undefined;
}

const HOST_EXPECTED = "expected a hostname, IPv4 address or IPv6 address";

/** The host normalized for connecting, or a reason why it cannot be used. */
function checkHost(raw: string): { host: string } | { reason: string } {
  if (raw === "") return { reason: "empty host in request" };
  const bracketed = raw.startsWith("[") && raw.endsWith("]");
  const inner = bracketed ? raw.slice(1, -1) : raw;
  if (bracketed || inner.includes(":")) {
    const ip = parseIPv6(inner);
    return ip
      ? { host: formatIPv6(ip.value) }
      : { reason: `invalid host ${show(raw)}: ${HOST_EXPECTED}` };
  }
  if (parseIPv4(inner)) return { host: inner };
  if (inner.endsWith(".")) {
    return {
      reason: `invalid host ${show(raw)}: write it without the trailing dot`,
    };
  }
  const labels = inner.split(".");
  const last = labels[labels.length - 1] ?? "";
  // A numeric last label makes resolvers read the whole name as an IPv4
  // address (`0x7f.1`, `127.1`): accept only plain dotted quads as addresses.
  const numeric = /^([0-9]+|0x[0-9a-f]*)$/i.test(last);
  const valid = inner.length <= 253 && !numeric &&
    labels.every((label) =>
      /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(label)
    );
  return valid
    ? { host: inner.toLowerCase() }
    : { reason: `invalid host ${show(raw)}: ${HOST_EXPECTED}` };
}

/** The port as a number, or a reason naming the request's target. */
function checkPort(
  raw: string | number,
  host: string,
): { port: number } | { reason: string } {
  const port = typeof raw === "number"
    ? raw
    : /^[0-9]{1,10}$/.test(raw)
    ? Number(raw)
    : NaN;
  if (Number.isInteger(port) && port >= 1 && port <= 65535) return { port };
  const shown = typeof raw === "number" ? String(raw) : show(raw);
  return { reason: `invalid port ${shown} for host ${host}: expected 1-65535` };
}

/** Why a connection key cannot go into the URL path, or undefined when it can. */
function keyProblem(key: string): string | undefined {
  if (
    key.length <= MAX_KEY_CHARS && /^[A-Za-z0-9._~-]+$/.test(key) &&
    /[A-Za-z0-9]/.test(key)
  ) return undefined;
  return `invalid connection key ${
    show(key)
  }: expected 1-${MAX_KEY_CHARS} characters of A-Z a-z 0-9 . _ ~ - ` +
    "including a letter or digit";
}

/** Validates host, port and key of an identified operation. */
function toOutcome(
  ref: OperationRef,
  rawHost: string,
  rawPort: string | number,
  source: RemoteAccessRequest["source"],
): ParseOutcome {
  const reject = (reason: string): ParseOutcome => ({
    kind: "rejected",
    ref,
    reason,
  });
  const host = checkHost(rawHost);
  if ("reason" in host) return reject(host.reason);
  const port = checkPort(
    rawPort,
    host.host.includes(":") ? `[${host.host}]` : host.host,
  );
  if ("reason" in port) return reject(port.reason);
  const badKey = keyProblem(ref.key);
  if (badKey !== undefined) return reject(badKey);
  return {
    kind: "request",
    request: { ...ref, host: host.host, port: port.port, source },
  };
}

// ---------------------------------------------------------------------------
// SmartREST 530

/**
 * Records of one SmartREST payload that are ignored (not 530s, or 530s
 * that cannot be identified) and still get an outcome (and so a log line)
 * of their own; the rest get one together.
 */
export const MAX_OTHER_RECORDS = 4;

/** Any character that makes a record not blank (from `lastIndex`). */
const NON_BLANK = /\S/g;

/** A SmartREST template id: 1 to 5 digits (other text is garbage). */
function isTemplateId(text: string): boolean {
  if (text.length === 0 || text.length > 5) return false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x30 || code > 0x39) return false;
  }
  return true;
}

function ignored(reason: string, quiet: boolean): ParseOutcome {
  return { kind: "ignored", reason, quiet };
}

/** True when {@linkcode parse530} would ignore `record` (cheaper: no reason text). */
function unusable530(record: CsvRecord): boolean {
  const [, deviceId = "", , , key = ""] = record.fields;
  return record.problem !== undefined || key === "" ||
    deviceIdProblem(deviceId) !== undefined;
}

function parse530(record: CsvRecord): ParseOutcome {
  if (record.problem !== undefined) {
    return ignored(
      `malformed 530 record (${record.problem}): ${show(record.text)}`,
      false,
    );
  }
  const [, deviceId = "", host = "", port = "", key = ""] = record.fields;
  const badDevice = deviceIdProblem(deviceId);
  if (badDevice !== undefined) {
    return ignored(`530 record with ${badDevice}: ${show(record.text)}`, false);
  }
  if (key === "") {
    return ignored(
      `530 record without a connection key: ${show(record.text)}`,
      false,
    );
  }
  const ref: OperationRef = { deviceId, key };
  if (record.fields.length !== 5) {
    return {
      kind: "rejected",
      ref,
      reason:
        `malformed request: ${record.fields.length} fields instead of 5 (530,device,host,port,key)`,
    };
  }
  return toOutcome(ref, host, port, "smartrest");
}

/**
 * One MQTT payload from `<prefix>/s/ds`: may hold several CSV records (`\n` or
 * `\r\n` separated); returns one outcome per 530 record
 * (`530,<device external id>,<host>,<port>,<connection key>`) plus ignored
 * outcomes for the rest (quiet for other templates, loud for garbage). Blank
 * lines yield nothing.
 */
export function parseSmartRest(payload: string): ParseOutcome[] {
  if (typeof payload !== "string") {
    return [ignored("SmartREST payload is not text", false)];
  }
  const outcomes: ParseOutcome[] = [];
  // A payload without "530" holds no request: only its first records are
  // looked at (for the log), the rest is not split at all.
  const mayHold530 = payload.includes("530");
  let others = 0;
  let loud = false;
  /** Handles one record; false once only 530s matter (the bulk loop below). */
  const take = (record: CsvRecord): boolean => {
    const template = record.fields[0] ?? "";
    if (template === "530") {
      if (others >= MAX_OTHER_RECORDS && unusable530(record)) {
        // Counted only: its reason would not be shown.
        loud = true;
        others++;
        return false;
      }
      const outcome = parse530(record);
      if (outcome.kind !== "ignored") {
        outcomes.push(outcome); // a status goes out for each of these
        return true;
      }
      // An unusable 530 gets no status: it counts with the other records.
      loud = true;
      if (++others <= MAX_OTHER_RECORDS) outcomes.push(outcome);
      return true;
    }
    others++;
    const quiet = isTemplateId(template);
    loud ||= !quiet;
    if (others <= MAX_OTHER_RECORDS) {
      outcomes.push(
        quiet
          ? ignored(
            `SmartREST template ${template} is not a remote access request`,
            true,
          )
          : ignored(`not a SmartREST record: ${show(record.text)}`, false),
      );
    }
    return others < MAX_OTHER_RECORDS;
  };
  // The first records one by one, each with its fields.
  let at = payload.length;
  for (const record of csvRecords(payload)) {
    if (!take(record)) {
      at = record.next;
      break;
    }
  }
  // The bulk (thousands of records in a hostile payload): only each
  // record's first field is read and nothing is kept of the others; a 530
  // (or a record with a quoted first field) is read whole.
  if (!mayHold530) {
    // Not split further: one more record is enough for the summary.
    NON_BLANK.lastIndex = at;
    if (NON_BLANK.test(payload)) others++;
  }
  if (mayHold530 && at < payload.length) {
    const skimmed = skimRecords(payload, at, (start) => {
      const record = readRecord(payload, start);
      if (record === undefined) return payload.length;
      take(record);
      return record.next;
    });
    others += skimmed.others;
    loud ||= skimmed.garbage;
  }
  if (others > MAX_OTHER_RECORDS) {
    outcomes.push(
      ignored(
        mayHold530
          ? `${
            others - MAX_OTHER_RECORDS
          } more records ignored (not remote access requests, or unusable ones)`
          : `more records after ${MAX_OTHER_RECORDS}, none a remote access request (no 530 in the payload)`,
        !loud,
      ),
    );
  }
  return outcomes;
}

// ---------------------------------------------------------------------------
// JSON c8y_RemoteAccessConnect

type JsonObject = { readonly [key: string]: unknown };

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function member(object: unknown, key: string): unknown {
  return isObject(object) && Object.hasOwn(object, key)
    ? object[key]
    : undefined;
}

function showJson(value: unknown): string {
  return value === undefined
    ? "missing"
    : shorten(JSON.stringify(value) ?? String(value), MAX_SHOWN_CHARS);
}

const OPERATION_ID = new RegExp(`^[0-9]{1,${MAX_OPERATION_ID_DIGITS}}$`);

/** The operation id as decimal text, or undefined when it cannot go into a CSV status line. */
function operationId(value: unknown): string | undefined {
  if (typeof value === "number") {
    return Number.isSafeInteger(value) && value >= 0
      ? String(value)
      : undefined;
  }
  if (typeof value === "string" && OPERATION_ID.test(value)) return value;
  return undefined;
}

/**
 * The operations in one payload from `<prefix>/devicecontrol/notifications`:
 * Cumulocity delivers the operations that queued while the device was
 * offline in one message, one JSON object per line (thin-edge's mapper
 * splits them the same way). A payload that is one JSON document as a whole
 * (e.g. pretty-printed) is one operation; blank lines are skipped.
 */
export function jsonOperationLines(payload: string): string[] {
  if (!payload.includes("\n")) return [payload];
  // Nesting is counted before any JSON.parse, here too.
  if (!startsObject(payload) || jsonTooDeep(payload)) {
    return linesOf(payload);
  }
  try {
    JSON.parse(payload);
    return [payload];
  } catch {
    return linesOf(payload);
  }
}

/**
 * True when `text` starts (after whitespace) with `{`: only an object can be
 * an operation, and anything else is not given to `JSON.parse` (a failing
 * parse costs an exception, and garbage is what fails).
 */
function startsObject(text: string): boolean {
  return text.trimStart().charCodeAt(0) === 0x7b;
}

/** The lines of `payload` that are not blank. */
function linesOf(payload: string): string[] {
  return payload.split(/\r?\n/).filter((line) => line.trim() !== "");
}

/**
 * One payload from `<prefix>/devicecontrol/notifications`. Invalid JSON, a
 * non-object, a missing or non-numeric `id` or an unusable
 * `externalSource.externalId` -> ignored, loud (no status can be sent);
 * other operations (no `c8y_RemoteAccessConnect`) -> ignored, quiet.
 * `port` may be a number or a numeric string.
 */
export function parseJsonOperation(payload: string): ParseOutcome {
  if (typeof payload !== "string") {
    return ignored("JSON operation payload is not text", false);
  }
  if (jsonTooDeep(payload)) {
    return ignored(
      `JSON operation nested deeper than ${MAX_JSON_DEPTH} levels (${payload.length} characters): not parsed`,
      false,
    );
  }
  if (!startsObject(payload)) {
    return ignored(`JSON operation is not an object: ${show(payload)}`, false);
  }
  let operation: unknown;
  try {
    operation = JSON.parse(payload);
  } catch {
    return ignored(`invalid JSON operation: ${show(payload)}`, false);
  }
  if (!isObject(operation)) {
    return ignored(`JSON operation is not an object: ${show(payload)}`, false);
  }
  if (!Object.hasOwn(operation, OPERATION_NAME)) {
    return ignored(
      `JSON operation (id ${showJson(operation.id)}) is not ${OPERATION_NAME}`,
      true,
    );
  }
  const id = operationId(operation.id);
  if (id === undefined) {
    return ignored(
      `${OPERATION_NAME} with invalid id ${
        showJson(operation.id)
      }: expected decimal digits`,
      false,
    );
  }
  const externalId = member(operation.externalSource, "externalId");
  if (typeof externalId !== "string") {
    return ignored(
      `${OPERATION_NAME} ${id} has no externalSource.externalId: cannot choose the status topic`,
      false,
    );
  }
  const badDevice = deviceIdProblem(externalId);
  if (badDevice !== undefined) {
    return ignored(`${OPERATION_NAME} ${id} with ${badDevice}`, false);
  }

  const params = operation[OPERATION_NAME];
  const key = member(params, "connectionKey");
  const ref: OperationRef = {
    deviceId: externalId,
    key: typeof key === "string" ? key : "",
    operationId: id,
  };
  const reject = (reason: string): ParseOutcome => ({
    kind: "rejected",
    ref,
    reason,
  });
  if (!isObject(params)) {
    return reject(`malformed request: ${OPERATION_NAME} is not an object`);
  }
  const host = member(params, "hostname");
  if (typeof host !== "string") {
    return reject(
      host === undefined
        ? "empty host in request"
        : `invalid host ${showJson(host)}: ${HOST_EXPECTED}`,
    );
  }
  const port = member(params, "port");
  if (typeof port !== "number" && typeof port !== "string") {
    const checked = checkHost(host);
    if ("reason" in checked) return reject(checked.reason);
    return reject(
      `invalid port ${
        showJson(port)
      } for host ${checked.host}: expected 1-65535`,
    );
  }
  if (typeof key !== "string") {
    return reject(`invalid connection key ${showJson(key)}: expected a string`);
  }
  return toOutcome(ref, host, port, "json");
}

// ---------------------------------------------------------------------------
// Status

/** The operation id as a CSV field: bare when it is plain digits (as the parser guarantees). */
function idField(id: string): string {
  return /^[0-9]+$/.test(id) ? id : csvField(id);
}

/**
 * The payload of one status update (its topic is mqtt/topics.ts
 * `statusOut(ref.deviceId)`): by name (501/503/502) when the ref has no
 * operation id, by id (504/506/505) otherwise; a failure always carries a
 * quoted reason.
 */
export function statusPayload(
  ref: OperationRef,
  status: OperationStatus,
  reason?: string,
): string {
  const target = ref.operationId === undefined
    ? OPERATION_NAME
    : idField(ref.operationId);
  const byId = ref.operationId !== undefined;
  const why = csvField(
    reason === undefined || reason.trim() === ""
      ? "remote access failed"
      : reason,
  );
  return status === "executing"
    ? `${byId ? 504 : 501},${target}`
    : status === "successful"
    ? `${byId ? 506 : 503},${target}`
    : `${byId ? 505 : 502},${target},${why}`;
}

// ---------------------------------------------------------------------------
// Plugin mode

/** The first 530 of a `connect` argument as a request, or the reason it cannot be served. */
export type ConnectRequest =
  | { readonly ok: true; readonly request: RemoteAccessRequest }
  | { readonly ok: false; readonly reason: string };

/**
 * Parses the SmartREST payload that tedge-mapper-c8y gives to `connect` in
 * plugin mode (its first 530 record); the same parse serves `connect`, its
 * detached child and the daemon's handoff server.
 */
export function parseConnectLine(line: string): ConnectRequest {
  const outcomes = parseSmartRest(line);
  const first = outcomes.find((o) => o.kind !== "ignored") ?? outcomes[0];
  if (first === undefined) {
    return {
      ok: false,
      reason:
        'no request given: expected a SmartREST 530 line "530,<device>,<host>,<port>,<key>"',
    };
  }
  switch (first.kind) {
    case "request":
      return { ok: true, request: first.request };
    case "rejected":
      return { ok: false, reason: first.reason };
    case "ignored":
      return {
        ok: false,
        reason:
          `not a remote access request (${first.reason}): expected "530,<device>,<host>,<port>,<key>"`,
      };
  }
}
