/**
 * A budget for log lines that an attacker can cause at will (a message on
 * the broker that the agent ignores): a flood of them must not become a
 * flood of log lines, which costs the agent its time (each line is a
 * blocking write to stderr or the journal) and the device its disk.
 *
 * @module
 */

/** What {@linkcode LogBudget.take} decided. */
export type BudgetDecision =
  /** Log this line; `suppressed` lines were dropped since the last one logged. */
  | { readonly log: true; readonly suppressed: number }
  | { readonly log: false };

/**
 * Allows `lines` log lines per `windowMs`, counts the rest, and hands the
 * count to the next line that may be logged.
 */
export class LogBudget {
  readonly #lines: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  #windowStart = -Infinity;
  #used = 0;
  #suppressed = 0;

  constructor(lines: number, windowMs: number, now: () => number = Date.now) {
    this.#lines = lines;
    this.#windowMs = windowMs;
    this.#now = now;
  }

  /** Whether one more line may be logged now. */
  take(): BudgetDecision {
    const now = this.#now();
    if (now - this.#windowStart >= this.#windowMs) {
      this.#windowStart = now;
      this.#used = 0;
    }
    if (this.#used >= this.#lines) {
      this.#suppressed++;
      return { log: false };
    }
    this.#used++;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    return { log: true, suppressed };
  }
}

/**
 * The note a logged line carries for the lines its budget left out before
 * it (`" (and 3 more ignored messages not logged)"`), or "" when none were.
 */
export function leftOut(decision: { suppressed: number }, what = ""): string {
  if (decision.suppressed === 0) return "";
  return ` (and ${decision.suppressed} more ${what}${
    what ? " " : ""
  }not logged)`;
}
