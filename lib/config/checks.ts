/**
 * Validators for single settings: each takes a raw TOML value and returns
 * the typed value or what was expected. Pure; shared by our file's schema
 * and the readers of thin-edge's files.
 *
 * @module
 */
import { invalid, show } from "./_messages.ts";

/** setTimeout() fires at once above 2^31-1 ms, so no duration may exceed this. */
export const MAX_SECONDS = 2_147_483;

/** One bad element of an array value: its index and what is wrong with it. */
export interface ItemIssue {
  readonly index: number;
  readonly raw: unknown;
  readonly reason: string;
}

/**
 * The outcome of checking one raw TOML value: the typed value, or what was
 * expected (`hide`: never show the value), or the bad elements of an array.
 */
export type Checked<T> =
  | { readonly ok: true; readonly value: T }
  | {
    readonly ok: false;
    readonly expected: string;
    readonly hide?: true;
    readonly items?: readonly ItemIssue[];
  };
/** Checks and converts one raw TOML value. */
export type Check<T> = (raw: unknown) => Checked<T>;

/** A passed check. */
export const ok = <T>(value: T): Checked<T> => ({ ok: true, value });
/** A failed check: what was expected. */
export const bad = (expected: string, hide?: true): Checked<never> =>
  hide ? { ok: false, expected, hide } : { ok: false, expected };

/**
 * The messages for a failed check of `key` in `file`: one line, or one per
 * bad array element ("key tunnel.allow[1] = ... is invalid: <reason>").
 */
export function issuesOf(
  file: string,
  key: string,
  raw: unknown,
  checked: Checked<unknown>,
): string[] {
  if (checked.ok) return [];
  if (checked.items) {
    return checked.items.map((item) =>
      `${file}: key ${key}[${item.index}] = ${
        show(item.raw)
      } is invalid: ${item.reason}`
    );
  }
  return [invalid(file, key, raw, checked.expected, checked.hide)];
}

/** An absolute path (as thin-edge requires for its path keys). */
export const absolutePath: Check<string> = (raw) =>
  typeof raw === "string" && raw.startsWith("/") && !CONTROL.test(raw)
    ? ok(raw)
    : bad(ABSOLUTE);

const ABSOLUTE = 'an absolute path, e.g. "/etc/tedge/device-certs/ca.pem"';
/** "" (not set) or an absolute path. */
export const optionalPath: Check<string> = (raw) =>
  raw === ""
    ? ok("")
    : absolutePath(raw).ok
    ? ok(raw as string)
    : bad(ABSOLUTE);

/** "" (not set) or what `check` accepts. */
export function optional(
  check: Check<string>,
  expected: string,
): Check<string> {
  return (raw) => {
    if (raw === "") return ok("");
    const checked = check(raw);
    return checked.ok ? checked : bad(`"" (not set) or ${expected}`);
  };
}

/** Any string, "" included. */
export const anyString: Check<string> = (raw) =>
  typeof raw === "string" ? ok(raw) : bad("a string");

/** A string that is not blank. */
export const nonEmpty: Check<string> = (raw) =>
  typeof raw === "string" && raw.trim() !== ""
    ? ok(raw)
    : bad("a non-empty string");

/** Control characters, refused in names, ids and topics. */
// deno-lint-ignore no-control-regex
export const CONTROL = /[\u0000-\u001f\u007f]/;

/** A non-blank string without control characters (names, ids). */
export const word: Check<string> = (raw) =>
  typeof raw === "string" && raw.trim() !== "" && !CONTROL.test(raw)
    ? ok(raw)
    : bad("a non-empty string without control characters");

/** One of the given words. */
export function oneOf<T extends string>(values: readonly T[]): Check<T> {
  return (raw) =>
    (values as readonly unknown[]).includes(raw)
      ? ok(raw as T)
      : bad(`one of ${values.join(", ")}`);
}

/** An integer from min to max; `expected` says so in the message. */
export function integer(
  min: number,
  max: number,
  expected: string,
): Check<number> {
  return (raw) =>
    typeof raw === "number" && Number.isInteger(raw) && raw >= min &&
      raw <= max
      ? ok(raw)
      : bad(expected);
}

/** Seconds in the file, milliseconds out. */
export function seconds(zero: string | null): Check<number> {
  const expected = zero === null
    ? `a number of seconds > 0 and <= ${MAX_SECONDS}`
    : `a number of seconds from 0 to ${MAX_SECONDS} (0 = ${zero})`;
  return (raw) => {
    if (typeof raw !== "number" || !(raw >= 0 && raw <= MAX_SECONDS)) {
      return bad(expected);
    }
    const ms = Math.round(raw * 1000);
    return zero === null && ms < 1 ? bad(expected) : ok(ms);
  };
}

/** An MQTT topic (prefix) without wildcards; singleLevel also forbids "/". */
export function topic(singleLevel: boolean): Check<string> {
  const expected = singleLevel
    ? "a non-empty MQTT topic level (no /, +, # or control characters)"
    : "a non-empty MQTT topic without +, #, control characters, or a leading, trailing or double /";
  return (raw) =>
    typeof raw === "string" && raw !== "" && !/[+#]/.test(raw) &&
      !CONTROL.test(raw) &&
      (singleLevel
        ? !raw.includes("/")
        : !raw.startsWith("/") && !raw.endsWith("/") && !raw.includes("//"))
      ? ok(raw)
      : bad(expected);
}

/** thin-edge's `mqtt.device_topic_id` in its default scheme, `device/<id>//` (services hang below it). */
export const deviceTopicId: Check<string> = (raw) =>
  typeof raw === "string" && /^device\/[^/+#]+\/\/$/.test(raw) &&
    !CONTROL.test(raw)
    ? ok(raw)
    : bad('a device topic id of thin-edge\'s default scheme, "device/<id>//"');

/** "" (the default connection) or a thin-edge profile name. */
export const profileName: Check<string> = (raw) =>
  typeof raw === "string" && (raw === "" || PROFILE_NAME.test(raw))
    ? ok(raw)
    : bad(
      '"" (the default [c8y] connection) or a thin-edge profile name (letters, digits, - and _), e.g. "second"',
    );

/** The characters of a thin-edge cloud profile name. */
export const PROFILE_NAME = /^[A-Za-z0-9_-]+$/;

/** An array of strings. */
export const stringArray: Check<readonly string[]> = (raw) =>
  Array.isArray(raw) && raw.every((entry) => typeof entry === "string")
    ? ok([...raw] as string[])
    : bad('an array of strings such as ["127.0.0.1:22"]');

/** Parses "scheme://host[:port]" or a bare "host[:port]" (given the default scheme). */
function parseOrigin(raw: string, defaultScheme: string): URL | null {
  const text = raw.includes("://") ? raw : `${defaultScheme}://${raw}`;
  if (!URL.canParse(text)) return null;
  const url = new URL(text);
  const bareOrigin = (url.pathname === "/" || url.pathname === "") &&
    url.search === "" && url.hash === "" && url.hostname !== "";
  return bareOrigin ? url : null;
}

/** A Cumulocity URL or bare host[:port]; the value is its origin (https:// by default). */
export const c8yUrl: Check<string> = (raw) => {
  const expected =
    'an http:// or https:// URL without path, or a bare host[:port], e.g. "https://example.cumulocity.com"';
  if (typeof raw !== "string" || raw.trim() === "") return bad(expected);
  const url = parseOrigin(raw.trim(), "https");
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    return bad(expected);
  }
  if (url.username !== "" || url.password !== "") {
    return bad(`${expected}, without user:password (use c8y.auth)`, true);
  }
  return ok(url.origin);
};

/** "" (no proxy) or an http(s) proxy origin (http:// by default). */
export const proxyAddress: Check<string> = (raw) => {
  const expected =
    '"" (no proxy) or an http:// or https:// proxy address, e.g. "http://proxy.local:3128"';
  if (typeof raw !== "string") return bad(expected);
  if (raw.trim() === "") return ok("");
  const url = parseOrigin(raw.trim(), "http");
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    return bad(expected);
  }
  if (url.username !== "" || url.password !== "") {
    return bad(
      `${expected}, without user:password (set proxy.username and proxy.password)`,
      true,
    );
  }
  return ok(url.origin);
};
