/**
 * The lifecycle of one remote-access session, with its timers.
 *
 * `requested -> connecting -> open -> closing -> closed`, or
 * `requested|connecting -> failed(reason)`. The tunnel owns every socket and
 * timer of its session: one `close()` frees all of it. The state lives in one
 * tagged union changed only by `#enter()`.
 *
 * @module
 */
import {
  CloudConnectError,
  type CloudLeg,
  CloudProtocolError,
  errorReason,
} from "../cloud/leg.ts";
import { type Dial, pump, type PumpEnd, type Traffic } from "./pump.ts";
import { formatTarget } from "./policy.ts";
import { type Logger, shortKey } from "../util/log.ts";

/** The session's state; `reason` says why it ended. */
export type TunnelState =
  | { readonly name: "requested" }
  | { readonly name: "connecting" }
  | { readonly name: "open"; readonly since: number }
  | { readonly name: "closing"; readonly reason: string }
  | { readonly name: "closed"; readonly reason: string }
  | { readonly name: "failed"; readonly reason: string };

/** A timer handle as the runtime returns it. */
export type TimerId = ReturnType<typeof setTimeout>;

/** Timer functions; tests pass a fake clock. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerId;
  clearTimeout(id: TimerId): void;
}

/** The runtime's clock. */
export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
};

/** Limits of one session, in milliseconds; 0 disables idle and max duration. */
export interface TunnelLimits {
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxDurationMs: number;
}

/** How a tunnel reaches its two legs. */
export interface TunnelDeps {
  readonly dial: Dial;
  /** Obtains credentials and opens the cloud leg for this session's key. */
  readonly openCloud: (signal: AbortSignal) => Promise<CloudLeg>;
  readonly log: Logger;
  readonly clock?: Clock;
}

/** What a tunnel is asked to connect. */
export interface TunnelTarget {
  readonly key: string;
  readonly host: string;
  readonly port: number;
}

/** Outcome of {@linkcode Tunnel.open}. */
export type OpenResult = { readonly ok: true } | {
  readonly ok: false;
  readonly reason: string;
};

/** One line's worth of facts about a finished session. */
export interface TunnelSummary {
  readonly key: string;
  readonly target: string;
  readonly state: "closed" | "failed";
  readonly reason: string;
  readonly durationMs: number;
  readonly fromTarget: number;
  readonly toTarget: number;
}

/** The connect timer fired; `pending` says which legs were still connecting. */
class ConnectTimeout extends Error {
  override name = "ConnectTimeout";
  readonly pending: { readonly target: boolean; readonly cloud: boolean };
  constructor(pending: { readonly target: boolean; readonly cloud: boolean }) {
    super("connect timeout");
    this.pending = pending;
  }
}

/** One remote-access session between a TCP target and the cloud. */
export class Tunnel implements AsyncDisposable {
  readonly target: TunnelTarget;
  readonly #deps: TunnelDeps;
  readonly #limits: TunnelLimits;
  readonly #clock: Clock;
  readonly #abort = new AbortController();
  readonly #traffic: Traffic = { fromTarget: 0, toTarget: 0 };
  readonly #timers = new Set<TimerId>();
  readonly #created: number;
  readonly #finished = Promise.withResolvers<TunnelSummary>();
  #state: TunnelState = { name: "requested" };

  constructor(target: TunnelTarget, deps: TunnelDeps, limits: TunnelLimits) {
    this.target = target;
    this.#deps = deps;
    this.#limits = limits;
    this.#clock = deps.clock ?? realClock;
    this.#created = this.#clock.now();
  }

  /** The current state. */
  get state(): TunnelState {
    return this.#state;
  }

  /** Bytes moved so far. */
  get traffic(): Readonly<Traffic> {
    return this.#traffic;
  }

  /** Settles once the session is closed or failed. */
  get finished(): Promise<TunnelSummary> {
    return this.#finished.promise;
  }

  get #label(): string {
    return formatTarget(this.target.host, this.target.port);
  }

  #enter(next: TunnelState): void {
    const from = this.#state.name;
    this.#state = next;
    this.#deps.log.debug("session {key}: {from} -> {to}", {
      key: shortKey(this.target.key),
      from,
      to: next.name,
    });
    if (next.name === "closed" || next.name === "failed") {
      for (const id of this.#timers) this.#clock.clearTimeout(id);
      this.#timers.clear();
      this.#finished.resolve(this.#summary(next.name, next.reason));
    }
  }

  #summary(state: "closed" | "failed", reason: string): TunnelSummary {
    return {
      key: this.target.key,
      target: this.#label,
      state,
      reason,
      durationMs: this.#clock.now() - this.#created,
      fromTarget: this.#traffic.fromTarget,
      toTarget: this.#traffic.toTarget,
    };
  }

  #timer(ms: number, fn: () => void): TimerId {
    const id = this.#clock.setTimeout(() => {
      this.#timers.delete(id);
      fn();
    }, ms);
    this.#timers.add(id);
    return id;
  }

  /**
   * Connects both legs in parallel within `connectTimeoutMs`, then starts the
   * byte pump. Resolves `{ ok: true }` once both are up (report successful),
   * or `{ ok: false, reason }` when either failed (report failed); never
   * rejects. Both legs are closed on failure.
   */
  async open(): Promise<OpenResult> {
    if (this.#state.name !== "requested") {
      return {
        ok: false,
        reason: `Cannot open session: it is ${this.#state.name}`,
      };
    }
    this.#enter({ name: "connecting" });
    const connect = new AbortController();
    const onSessionAbort = () => connect.abort(this.#abort.signal.reason);
    this.#abort.signal.addEventListener("abort", onSessionAbort, {
      once: true,
    });
    const pending = { target: true, cloud: true };
    const timer = this.#timer(
      this.#limits.connectTimeoutMs,
      () => connect.abort(new ConnectTimeout({ ...pending })),
    );
    const tcpAttempt = this.#deps.dial(
      this.target.host,
      this.target.port,
      connect.signal,
    )
      .finally(() => pending.target = false);
    const cloudAttempt = this.#deps.openCloud(connect.signal)
      .finally(() => pending.cloud = false);
    // The first failure ends the other attempt at once.
    tcpAttempt.catch(() => connect.abort());
    cloudAttempt.catch(() => connect.abort());
    const [tcp, cloud] = await Promise.allSettled([tcpAttempt, cloudAttempt]);
    this.#clock.clearTimeout(timer);
    this.#timers.delete(timer);
    this.#abort.signal.removeEventListener("abort", onSessionAbort);

    if (
      tcp.status === "fulfilled" && cloud.status === "fulfilled" &&
      !this.#abort.signal.aborted
    ) {
      this.#enter({ name: "open", since: this.#clock.now() });
      this.#run(tcp.value, cloud.value);
      return { ok: true };
    }
    if (tcp.status === "fulfilled") tcp.value.close();
    if (cloud.status === "fulfilled") {
      cloud.value.close("target unreachable");
    }
    const reason = this.#connectFailure(tcp, cloud);
    this.#enter({ name: "failed", reason });
    return { ok: false, reason };
  }

  #connectFailure(
    tcp: PromiseSettledResult<unknown>,
    cloud: PromiseSettledResult<unknown>,
  ): string {
    if (this.#abort.signal.aborted) {
      return `session closed before it was up: ${
        errorReason(this.#abort.signal.reason)
      }`;
    }
    const timeout = [tcp, cloud].map((r) =>
      r.status === "rejected" ? r.reason : undefined
    )
      .find((reason) => reason instanceof ConnectTimeout);
    if (timeout) {
      const seconds = this.#limits.connectTimeoutMs / 1000;
      const legs = [
        timeout.pending.target ? `target ${this.#label}` : "",
        timeout.pending.cloud ? "cloud" : "",
      ].filter(Boolean).join(" and ");
      return `connect timeout: ${
        legs || "a leg"
      } did not connect within ${seconds} s (tunnel.connect_timeout)`;
    }
    // Prefer the error that caused the abort over the abort it caused.
    if (tcp.status === "rejected" && !(connectAbort(tcp.reason))) {
      return `cannot connect to target ${this.#label}: ${
        errorReason(tcp.reason)
      }`;
    }
    if (cloud.status === "rejected") {
      const text = cloud.reason instanceof CloudConnectError
        ? cloud.reason.message
        : `cannot open cloud connection: ${errorReason(cloud.reason)}`;
      return text;
    }
    return tcp.status === "rejected"
      ? `cannot connect to target ${this.#label}: ${errorReason(tcp.reason)}`
      : "cannot connect";
  }

  #run(tcp: Deno.Conn, cloud: CloudLeg): void {
    if (this.#limits.maxDurationMs > 0) {
      this.#timer(this.#limits.maxDurationMs, () => {
        const seconds = this.#limits.maxDurationMs / 1000;
        this.#abort.abort(
          `max duration of ${seconds} s reached (tunnel.max_duration)`,
        );
      });
    }
    if (this.#limits.idleTimeoutMs > 0) this.#watchIdle();
    let textFrames = 0;
    pump(tcp, cloud, {
      signal: this.#abort.signal,
      traffic: this.#traffic,
      onTextFrame: () => {
        if (textFrames++ === 0) {
          this.#deps.log.warn(
            "session {key}: dropped a text frame from the cloud (only binary expected)",
            {
              key: shortKey(this.target.key),
            },
          );
        }
      },
    }).then((end) => this.#ended(end));
  }

  /**
   * One timer, re-armed a few times per idle period, compares byte counts:
   * no per-chunk timer work. A quiet session closes between 1 and 1.25
   * idle periods after its last byte.
   */
  #watchIdle(): void {
    const idle = this.#limits.idleTimeoutMs;
    const step = Math.max(1, Math.floor(idle / 4));
    let lastBytes = 0;
    let lastChange = this.#clock.now();
    const check = () => {
      const bytes = this.#traffic.fromTarget + this.#traffic.toTarget;
      const now = this.#clock.now();
      if (bytes !== lastBytes) {
        lastBytes = bytes;
        lastChange = now;
      }
      if (now - lastChange >= idle) {
        this.#abort.abort(`idle for ${idle / 1000} s (tunnel.idle_timeout)`);
        return;
      }
      this.#timer(Math.min(step, idle - (now - lastChange)), check);
    };
    this.#timer(Math.min(step, idle), check);
  }

  #ended(end: PumpEnd): void {
    let reason: string;
    if (end.by === "session") {
      reason = errorReason(this.#abort.signal.reason);
    } else if (end.by === "target") {
      reason = end.error === undefined
        ? "target closed"
        : `target error: ${errorReason(end.error)}`;
    } else {
      reason = end.error === undefined
        ? `cloud closed${end.code !== undefined ? ` (${end.code})` : ""}`
        : end.error instanceof CloudProtocolError
        ? end.error.message
        : `cloud error: ${errorReason(end.error)}`;
    }
    if (this.#state.name === "open") this.#enter({ name: "closing", reason });
    const summary = this.#state;
    this.#enter({
      name: "closed",
      reason: summary.name === "closing" ? summary.reason : reason,
    });
  }

  /**
   * Ends the session: aborts a pending connect, or closes both legs of an
   * open one. Resolves with the summary once everything is released.
   */
  close(reason = "closed by agent"): Promise<TunnelSummary> {
    const name = this.#state.name;
    if (name === "requested") {
      this.#enter({ name: "failed", reason });
    } else if (name === "connecting" || name === "open") {
      if (name === "open") this.#enter({ name: "closing", reason });
      this.#abort.abort(reason);
    }
    return this.finished;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function connectAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === "AbortError";
}
