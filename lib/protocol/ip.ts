/**
 * IP address literals, parsed strictly and once for the whole agent: the
 * allowlist (`tunnel.allow` CIDR rules and the targets they are matched
 * against) and the hosts of incoming requests use these same functions.
 * No short forms (`127.1`), no leading zeros (`010.0.0.1`), no zone ids.
 *
 * @module
 */

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

/**
 * The 16-bit groups of one side of `::`; an embedded IPv4 address is
 * allowed only as the last piece of the whole address.
 */
function groupsOf(half: string, ipv4Last: boolean): number[] | null {
  if (half === "") return [];
  const out: number[] = [];
  const pieces = half.split(":");
  for (const [i, piece] of pieces.entries()) {
    if (ipv4Last && i === pieces.length - 1 && piece.includes(".")) {
      const v4 = parseIPv4(piece);
      if (!v4) return null;
      out.push(Number(v4.value >> 16n), Number(v4.value & 0xffffn));
    } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) {
      out.push(parseInt(piece, 16));
    } else {
      return null;
    }
  }
  return out;
}

/** Parses an IPv6 literal (with `::`, optional embedded IPv4, no brackets, no zone id). */
export function parseIPv6(text: string): IpAddress | null {
  if (!/^[0-9a-fA-F:.]+$/.test(text) || text.length > 45) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const compressed = halves.length === 2;
  const head = groupsOf(halves[0] ?? "", !compressed);
  const tail = compressed ? groupsOf(halves[1] ?? "", true) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (compressed ? missing < 1 : missing !== 0) return null;
  let value = 0n;
  for (const g of [...head, ...new Array<number>(missing).fill(0), ...tail]) {
    value = (value << 16n) | BigInt(g);
  }
  return { family: 6, value };
}

/** Parses an IPv4 or IPv6 literal (IPv6 may be in brackets). */
export function parseIp(text: string): IpAddress | null {
  const bare = text.startsWith("[") && text.endsWith("]")
    ? text.slice(1, -1)
    : text;
  return parseIPv4(bare) ?? parseIPv6(bare);
}

/** RFC 5952 text of an IPv6 address: lowercase, no leading zeros, longest zero run as `::`. */
export function formatIPv6(value: bigint): string {
  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) {
    groups.push(Number((value >> shift) & 0xffffn));
  }
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < groups.length;) {
    let j = i;
    while (j < groups.length && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j > i ? j : i + 1;
  }
  const hex = groups.map((group) => group.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${
    hex.slice(best + bestLength).join(":")
  }`;
}

/** Formats host:port for messages, bracketing IPv6. */
export function formatTarget(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[")
    ? `[${host}]:${port}`
    : `${host}:${port}`;
}
