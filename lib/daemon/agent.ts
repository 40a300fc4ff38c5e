/**
 * The daemon: MQTT message -> parsed request -> duplicate check -> policy ->
 * session, with every status flowing back through one `#report`. Requests
 * come from the cloud (SmartREST 530, JSON operations) or are handed over by
 * `connect` (lib/handoff/); sessions are built by lib/session/serve.ts. Holds
 * the set of live sessions; a finished session is forgotten at once and
 * announced with a {@linkcode SESSION_ENDED} event.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Config } from "../config/config.ts";
import type { OpenCloudLeg } from "../cloud/leg.ts";
import { HandoffServer } from "../handoff/server.ts";
import { MqttLink } from "../mqtt/link.ts";
import { topicsFor } from "../mqtt/topics.ts";
import {
  jsonOperationLines,
  type OperationRef,
  type OperationStatus,
  parseJsonOperation,
  type ParseOutcome,
  parseSmartRest,
  type RemoteAccessRequest,
  shorten,
  statusPayload,
  type StatusReport,
} from "../protocol/operations.ts";
import { formatTarget, Policy } from "../session/policy.ts";
import type { Dial } from "../session/pump.ts";
import { type SessionBuilder, sessionBuilder } from "../session/serve.ts";
import type { Clock, Tunnel, TunnelSummary } from "../session/tunnel.ts";
import { type Logger, logger, shortKey } from "../util/log.ts";
import { errorMessage } from "../util/errors.ts";
import { leftOut, LogBudget } from "../util/log_budget.ts";

/** How many recently seen connection keys are remembered to drop re-deliveries. */
const RECENT_KEYS = 1024;

/** Warning lines for ignored messages per 10 s; the rest are counted in the next line. */
export const IGNORED_LINES = 20;

/** Longest connection key remembered as is (a valid key is at most this long). */
const MAX_REMEMBERED_KEY_CHARS = 128;

/**
 * What the duplicate-key memory stores for `key`: the key when it can be
 * valid, else a fixed-size SHA-256 digest (an invalid 1 MiB key must not
 * stay in memory).
 */
export function rememberedKey(key: string): string {
  if (key.length <= MAX_REMEMBERED_KEY_CHARS) return key;
  return `sha256:${createHash("sha256").update(key).digest("base64")}`;
}

/** Name of the event an {@linkcode Agent} dispatches when a session has ended and been forgotten. */
export const SESSION_ENDED = "sessionended";

/** A session ended: its summary is the event's `detail`. */
export type SessionEndedEvent = CustomEvent<TunnelSummary>;

/** Injectable edges of the agent (tests add faults here). */
export interface AgentDeps {
  readonly dial?: Dial;
  readonly openCloudLeg?: OpenCloudLeg;
  readonly clock?: Clock;
  readonly log?: Logger;
  /**
   * Serve the main device's operations from the cloud (530 and JSON;
   * default true). False in thin-edge plugin mode, where the mapper runs
   * `connect` for them (which hands them over); child devices' requests are
   * served either way, as the mapper never runs a command for a child.
   */
  readonly operations?: boolean;
}

/**
 * Where one request's status goes: status lines to the cloud for `ref`, or
 * `answer` for a request that `connect` handed over.
 */
interface Origin {
  readonly ref: OperationRef;
  readonly answer?: StatusReport;
}

/** The running daemon: owns the broker link and every live session. */
export class Agent extends EventTarget implements AsyncDisposable {
  readonly #config: Config;
  readonly #log: Logger;
  readonly #policy: Policy;
  readonly #sessions = new Map<string, Tunnel>();
  readonly #recentKeys = new Set<string>();
  /** Ignored messages are logged at most IGNORED_LINES per 10 s (a flood is not a log flood). */
  readonly #ignoredLines = new LogBudget(IGNORED_LINES, 10_000);
  readonly #link: MqttLink;
  readonly #handoff: HandoffServer;
  readonly #build: SessionBuilder;
  /** False in plugin mode: the main device's requests come through `connect`. */
  readonly #mainOperations: boolean;
  #stopping = false;

  constructor(config: Config, deps: AgentDeps = {}) {
    super();
    this.#config = config;
    this.#log = deps.log ?? logger("agent");
    this.#policy = new Policy(config.tunnel.allow, config.tunnel.maxSessions);
    this.#mainOperations = deps.operations ?? true;
    this.#link = MqttLink.connect({
      config,
      log: logger("mqtt"),
      onMessage: (topic, payload) => this.#onMessage(topic, payload),
      health: true,
      operations: true,
      extraTopics: [topicsFor(config).handoffRequests],
    });
    this.#handoff = new HandoffServer({
      topics: this.#link.topics,
      publish: (topic, payload) => this.#link.publish(topic, payload),
      serve: (request, answer) => this.#serveHandedOver(request, answer),
      profile: config.c8y.profile,
      log: this.#log,
    });
    this.#build = sessionBuilder(config, {
      jwt: (signal) => this.#link.requestJwt(signal),
      log: this.#log,
      ...(deps.dial ? { dial: deps.dial } : {}),
      ...(deps.openCloudLeg ? { openCloudLeg: deps.openCloudLeg } : {}),
      ...(deps.clock ? { clock: deps.clock } : {}),
    });
  }

  /** Settles once subscribed and health `up` is published. */
  get ready(): Promise<void> {
    return this.#link.ready;
  }

  /** Number of live sessions. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Resolves once no session is live (at once when none is). */
  idle(): Promise<void> {
    if (this.#sessions.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.#sessions.size > 0) return;
        this.removeEventListener(SESSION_ENDED, check);
        resolve();
      };
      this.addEventListener(SESSION_ENDED, check);
    });
  }

  #onMessage(topic: string, payload: string): void {
    if (this.#stopping) return;
    const topics = this.#link.topics;
    if (topic === topics.smartRestIn) {
      for (const outcome of parseSmartRest(payload)) {
        this.#handle(outcome, payload);
      }
    } else if (topic === topics.operationsIn) {
      // One message may carry several operations, one per line: each is
      // handled on its own, so one bad line does not drop the others.
      for (const line of jsonOperationLines(payload)) {
        this.#handle(parseJsonOperation(line), line);
      }
    } else if (this.#handoff.handles(topic)) {
      this.#handoff.onMessage(topic, payload);
    }
  }

  #handle(outcome: ParseOutcome, payload: string): void {
    if (
      !this.#mainOperations && outcome.kind !== "ignored" &&
      (outcome.kind === "request" ? outcome.request : outcome.ref)
          .deviceId === this.#config.c8y.deviceId
    ) {
      this.#log.debug(
        "left a request for the main device to tedge-mapper-c8y (plugin mode)",
      );
      return;
    }
    switch (outcome.kind) {
      case "ignored":
        if (outcome.quiet) {
          this.#log.debug("ignored message: {reason}", {
            reason: outcome.reason,
          });
        } else {
          const budget = this.#ignoredLines.take();
          if (!budget.log) return;
          this.#log.warn("ignored message: {reason}: {payload}{more}", {
            reason: outcome.reason,
            payload: shorten(payload, 120),
            more: leftOut(budget, "ignored messages"),
          });
        }
        return;
      case "rejected": {
        if (this.#isDuplicate(outcome.ref)) return;
        const origin = { ref: outcome.ref };
        this.#report(origin, "executing");
        this.#log.warn("request {key} refused: {reason}", {
          key: shortKey(shorten(outcome.ref.key, 40)),
          reason: outcome.reason,
        });
        this.#report(origin, "failed", outcome.reason);
        return;
      }
      case "request":
        if (this.#isDuplicate(outcome.request)) return;
        this.#launch(outcome.request, { ref: outcome.request });
        return;
    }
  }

  /** A request from `connect` (plugin mode): served like a 530, status answered to `connect`. */
  #serveHandedOver(request: RemoteAccessRequest, answer: StatusReport): void {
    const origin = { ref: request, answer };
    if (this.#isDuplicate(request)) {
      this.#report(origin, "executing");
      this.#report(
        origin,
        "failed",
        `connection key ${shortKey(request.key)} is already being served`,
      );
      return;
    }
    this.#launch(request, origin);
  }

  /**
   * True for a key already seen (a re-delivery, or the same request as 530
   * and JSON). A key longer than a valid one is remembered by its digest,
   * so the memory holds at most RECENT_KEYS x 128 characters.
   */
  #isDuplicate(ref: OperationRef): boolean {
    if (ref.key === "") return false;
    const remembered = rememberedKey(ref.key);
    if (this.#recentKeys.has(remembered)) {
      this.#log.debug("dropped duplicate delivery of {key}", {
        key: shortKey(shorten(ref.key, 40)),
      });
      return true;
    }
    this.#recentKeys.add(remembered);
    if (this.#recentKeys.size > RECENT_KEYS) {
      const oldest = this.#recentKeys.values().next().value;
      if (oldest !== undefined) this.#recentKeys.delete(oldest);
    }
    return false;
  }

  /** The one way status leaves the agent: a status line to the cloud, or the handoff's answer. */
  #report(origin: Origin, status: OperationStatus, reason?: string): void {
    if (origin.answer) {
      origin.answer(status, reason);
      return;
    }
    const topic = this.#link.topics.statusOut(origin.ref.deviceId);
    const payload = statusPayload(origin.ref, status, reason);
    this.#link.publish(topic, payload).catch((error) => {
      this.#log.warn("could not publish status {payload} to {topic}: {error}", {
        payload,
        topic,
        error: errorMessage(error),
      });
    });
  }

  /** Starts a session in the background; an unexpected error is logged, never thrown. */
  #launch(request: RemoteAccessRequest, origin: Origin): void {
    this.#start(request, origin).catch((error: unknown) => {
      this.#log.error("session {key} to {target}: unexpected error: {error}", {
        key: shortKey(request.key),
        target: formatTarget(request.host, request.port),
        error: error instanceof Error
          ? error.stack ?? error.message
          : String(error),
      });
    });
  }

  async #start(request: RemoteAccessRequest, origin: Origin): Promise<void> {
    this.#report(origin, "executing");
    const target = formatTarget(request.host, request.port);
    if (this.#stopping) {
      this.#report(origin, "failed", "agent is shutting down");
      return;
    }
    const admission = this.#policy.admit(
      request.host,
      request.port,
      this.#sessions.size,
    );
    if (!admission.ok) {
      this.#log.warn("request {key} for {target} refused: {reason}", {
        key: shortKey(request.key),
        target,
        reason: admission.reason,
      });
      this.#report(origin, "failed", admission.reason);
      return;
    }
    const tunnel = this.#build(request);
    this.#sessions.set(request.key, tunnel);
    tunnel.finished.then((summary) => {
      this.#sessions.delete(request.key);
      this.dispatchEvent(
        new CustomEvent(SESSION_ENDED, { detail: summary }),
      );
    });
    this.#log.info("session {key} to {target} requested for {device}", {
      key: shortKey(request.key),
      target,
      device: request.deviceId,
    });
    const result = await tunnel.open();
    if (result.ok) this.#report(origin, "successful");
    else this.#report(origin, "failed", result.reason);
  }

  /** Stops taking requests, closes every session, publishes health `down`, disconnects. */
  async close(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    await Promise.allSettled(
      [...this.#sessions.values()].map((tunnel) =>
        tunnel.close("agent shutting down")
      ),
    );
    await this.#link.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
