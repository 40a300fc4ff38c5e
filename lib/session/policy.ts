/**
 * Which targets a session may reach (`tunnel.allow`) and how many sessions may
 * run at once (`tunnel.max_sessions`). Checked before any connection is tried.
 *
 * Rules: `host:port`, `host:*`, `CIDR:port`, `*:port`, `*:*`; IPv6 in
 * brackets (`[::1]:22`, `[fd00::/8]:*`). A CIDR rule matches IP literals
 * only, and a host-name rule matches that name only: names are never
 * resolved here, so DNS cannot widen what the allowlist lets through.
 *
 * @module
 */

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

/** A parsed IP address as family + 32/128-bit integer. */
export interface IpAddress {
  readonly family: 4 | 6;
  readonly value: bigint;
}

/** Parses a dotted-quad IPv4 literal strictly (no leading zeros, no short forms). */
export function parseIPv4(text: string): IpAddress | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0n;
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    value = (value << 8n) | BigInt(n);
  }
  return { family: 4, value };
}

/** Parses an IPv6 literal (with `::`, optional embedded IPv4, no zone id). */
export function parseIPv6(text: string): IpAddress | null {
  if (!/^[0-9a-fA-F:.]+$/.test(text) || text.length > 45) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (half: string): number[] | null => {
    if (half === "") return [];
    const out: number[] = [];
    const pieces = half.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i] ?? "";
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIPv4(piece);
        if (!v4) return null;
        out.push(Number(v4.value >> 16n), Number(v4.value & 0xffffn));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(piece)) return null;
        out.push(parseInt(piece, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0] ?? "");
  const tail = halves.length === 2 ? groups(halves[1] ?? "") : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  let value = 0n;
  for (const g of all) value = (value << 16n) | BigInt(g);
  return { family: 6, value };
}

/** Parses an IPv4 or IPv6 literal (IPv6 may be in brackets). */
export function parseIp(text: string): IpAddress | null {
  const bare = text.startsWith("[") && text.endsWith("]")
    ? text.slice(1, -1)
    : text;
  return parseIPv4(bare) ?? parseIPv6(bare);
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

/** Formats host:port for messages, bracketing IPv6. */
export function formatTarget(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[")
    ? `[${host}]:${port}`
    : `${host}:${port}`;
}

/** The admission decision for one request: allowed, or refused with a reason for the user. */
export type Admission = { readonly ok: true } | {
  readonly ok: false;
  readonly reason: string;
};

/** Allowlist and session cap, built once from the validated config. */
export class Policy {
  readonly rules: readonly AllowRule[];
  readonly maxSessions: number;

  /** @throws {RangeError} for an entry that does not parse (config.ts validates first). */
  constructor(allow: readonly string[], maxSessions: number) {
    this.rules = allow.map(parseAllowEntry);
    this.maxSessions = maxSessions;
  }

  /** True when some rule allows host:port. */
  allows(host: string, port: number): boolean {
    return this.rules.some((rule) => ruleAllows(rule, host, port));
  }

  /** Decides whether a new session to host:port may start while `active` sessions run. */
  admit(host: string, port: number, active: number): Admission {
    if (!this.allows(host, port)) {
      return {
        ok: false,
        reason: `target ${formatTarget(host, port)} is not in tunnel.allow`,
      };
    }
    if (active >= this.maxSessions) {
      return {
        ok: false,
        reason:
          `session limit reached (tunnel.max_sessions = ${this.maxSessions})`,
      };
    }
    return { ok: true };
  }
}
