/**
 * `tunnel.allow`: the syntax of one allowlist rule, parsed once when the
 * config is loaded (Config.tunnel.allow holds the parsed rules), and what a
 * rule matches. session/policy.ts decides admissions with them.
 *
 * Rules: `host:port`, `host:*`, `CIDR:port`, `*:port`, `*:*`; IPv6 in
 * brackets (`[::1]:22`, `[fd00::/8]:*`). A CIDR rule matches IP literals
 * only, and a host-name rule matches that name only: names are never
 * resolved here, so DNS cannot widen what the allowlist lets through.
 *
 * @module
 */
import { parseIp } from "../protocol/ip.ts";
import { type Check, type ItemIssue, ok, stringArray } from "./checks.ts";

/** The host part of one allowlist rule. */
export type HostPattern =
  | { readonly kind: "any" }
  | { readonly kind: "name"; readonly name: string }
  | {
    readonly kind: "cidr";
    readonly family: 4 | 6;
    readonly network: bigint;
    readonly bits: number;
  };

/** One parsed `tunnel.allow` entry. */
export interface AllowRule {
  readonly text: string;
  readonly host: HostPattern;
  /** A port, or `"*"` for any port. */
  readonly port: number | "*";
}

const HOST_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$/;

function parseHostPattern(text: string, entry: string): HostPattern {
  if (text === "*") return { kind: "any" };
  const slash = text.indexOf("/");
  if (slash >= 0) {
    const ip = parseIp(text.slice(0, slash));
    const bitsText = text.slice(slash + 1);
    if (!ip) {
      throw new RangeError(
        `Cannot parse allow entry "${entry}": "${
          text.slice(0, slash)
        }" is not an IP address (CIDR is address/bits)`,
      );
    }
    const max = ip.family === 4 ? 32 : 128;
    if (!/^[0-9]{1,3}$/.test(bitsText) || Number(bitsText) > max) {
      throw new RangeError(
        `Cannot parse allow entry "${entry}": prefix length "/${bitsText}" must be 0-${max}`,
      );
    }
    const bits = Number(bitsText);
    const hostBits = BigInt(max - bits);
    return {
      kind: "cidr",
      family: ip.family,
      network: (ip.value >> hostBits) << hostBits,
      bits,
    };
  }
  const ip = parseIp(text);
  if (ip) {
    return {
      kind: "cidr",
      family: ip.family,
      network: ip.value,
      bits: ip.family === 4 ? 32 : 128,
    };
  }
  if (!HOST_NAME.test(text)) {
    throw new RangeError(
      `Cannot parse allow entry "${entry}": "${text}" is not a host name, IP address, CIDR or *`,
    );
  }
  return { kind: "name", name: text.toLowerCase().replace(/\.$/, "") };
}

/**
 * Parses one `tunnel.allow` entry.
 * @throws {RangeError} saying what is wrong with the entry.
 */
export function parseAllowEntry(entry: string): AllowRule {
  const text = entry.trim();
  let hostText: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") {
      throw new RangeError(
        `Cannot parse allow entry "${entry}": expected [IPv6]:port or [IPv6/bits]:port`,
      );
    }
    hostText = text.slice(1, close);
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon < 0) {
      throw new RangeError(
        `Cannot parse allow entry "${entry}": expected host:port, host:*, CIDR:port or *:port`,
      );
    }
    hostText = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (hostText.includes(":")) {
      throw new RangeError(
        `Cannot parse allow entry "${entry}": write IPv6 addresses in brackets, e.g. [::1]:22`,
      );
    }
  }
  if (hostText === "") {
    throw new RangeError(`Cannot parse allow entry "${entry}": empty host`);
  }
  let port: number | "*";
  if (portText === "*") {
    port = "*";
  } else if (
    /^[0-9]{1,5}$/.test(portText) && Number(portText) >= 1 &&
    Number(portText) <= 65535
  ) {
    port = Number(portText);
  } else {
    throw new RangeError(
      `Cannot parse allow entry "${entry}": port "${portText}" must be 1-65535 or *`,
    );
  }
  return { text, host: parseHostPattern(hostText, entry), port };
}

function hostMatches(pattern: HostPattern, host: string): boolean {
  switch (pattern.kind) {
    case "any":
      return true;
    case "name":
      return pattern.name === host.toLowerCase().replace(/\.$/, "");
    case "cidr": {
      const ip = parseIp(host);
      if (!ip || ip.family !== pattern.family) return false;
      const hostBits = BigInt((ip.family === 4 ? 32 : 128) - pattern.bits);
      return (ip.value >> hostBits) << hostBits === pattern.network;
    }
  }
}

/** True when `rule` lets a session reach host:port. */
export function ruleAllows(
  rule: AllowRule,
  host: string,
  port: number,
): boolean {
  return (rule.port === "*" || rule.port === port) &&
    hostMatches(rule.host, host);
}

/**
 * The check of key `tunnel.allow`: an array of strings, each one a rule;
 * the value is the parsed rules, a failure lists every bad entry.
 */
export const allowList: Check<readonly AllowRule[]> = (raw) => {
  const strings = stringArray(raw);
  if (!strings.ok) return strings;
  const rules: AllowRule[] = [];
  const items: ItemIssue[] = [];
  strings.value.forEach((entry, index) => {
    try {
      rules.push(parseAllowEntry(entry));
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      items.push({ index, raw: entry, reason: error.message });
    }
  });
  return items.length === 0
    ? ok(rules)
    : { ok: false, expected: "valid allowlist rules", items };
};
