/**
 * Admission of a session: which targets it may reach (the parsed
 * `tunnel.allow` rules of the config) and how many sessions may run at once
 * (`tunnel.max_sessions`). Checked before any connection is tried.
 *
 * @module
 */
import { type AllowRule, ruleAllows } from "../config/allow.ts";
import { formatTarget } from "../protocol/ip.ts";

export { formatTarget };

/** The admission decision for one request: allowed, or refused with a reason for the user. */
export type Admission = { readonly ok: true } | {
  readonly ok: false;
  readonly reason: string;
};

/** Allowlist and session cap, built once from the validated config. */
export class Policy {
  readonly rules: readonly AllowRule[];
  readonly maxSessions: number;

  /** Takes the rules as the config parsed them (Config.tunnel.allow). */
  constructor(rules: readonly AllowRule[], maxSessions: number) {
    this.rules = rules;
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
