/**
 * The daemon: MQTT message -> parsed request -> policy -> tunnel, with status
 * flowing back through one `report` function. Holds the set of live
 * sessions; a finished session is forgotten at once.
 *
 * @module
 */
import type { Config } from "../config/config.ts";
import {
  authHeaders,
  type CloudAuth,
  deviceUrl,
  type OpenCloudLeg,
} from "../cloud/leg.ts";
import {
  HandoffServer,
  handoffTopics,
  type StatusReport,
} from "../commands/connect.ts";
import { cloudLegOpenerFor } from "../cloud/opener.ts";
import { type Logger, logger, shortKey } from "../util/log.ts";
import { MqttLink } from "../mqtt/link.ts";
import {
  type OperationRef,
  type OperationStatus,
  parseJsonOperation,
  type ParseOutcome,
  parseSmartRest,
  type RemoteAccessRequest,
  shorten,
  statusMessage,
} from "../protocol/operations.ts";
import { formatTarget, Policy } from "../session/policy.ts";
import { type Dial, dialTcp } from "../session/pump.ts";
import { type Clock, Tunnel, type TunnelSummary } from "../session/tunnel.ts";

/** How many recently seen connection keys are remembered to drop re-deliveries. */
const RECENT_KEYS = 1024;

/** Injectable edges of the agent (tests add faults here). */
export interface AgentDeps {
  readonly dial?: Dial;
  readonly openCloudLeg?: OpenCloudLeg;
  readonly clock?: Clock;
  readonly log?: Logger;
  /**
   * Listen for operations from the cloud (530 and JSON; default true).
   * False in thin-edge plugin mode, where the mapper runs `connect` and the
   * daemon serves only what `connect` hands over.
   */
  readonly operations?: boolean;
}

/** Formats bytes for the session summary line. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** Credentials for the cloud leg as the config asks: a JWT per session, Basic, or none. */
export function cloudAuthFor(
  config: Config,
  jwt: (signal: AbortSignal) => Promise<string>,
): (signal: AbortSignal) => Promise<CloudAuth> {
  switch (config.c8y.auth) {
    case "jwt":
      return async (signal) => ({ kind: "jwt", token: await jwt(signal) });
    case "basic": {
      const credentials = config.c8y.credentials;
      if (!credentials) {
        throw new Error("Cannot use basic auth: no credentials loaded");
      }
      return () => Promise.resolve({ kind: "basic", ...credentials });
    }
    case "none":
      return () => Promise.resolve({ kind: "none" });
  }
}

/** The running daemon: owns the broker link and every live session. */
export class Agent implements AsyncDisposable {
  readonly #config: Config;
  readonly #log: Logger;
  readonly #policy: Policy;
  readonly #deps: AgentDeps;
  readonly #sessions = new Map<string, Tunnel>();
  readonly #recentKeys = new Set<string>();
  readonly #link: MqttLink;
  readonly #auth: (signal: AbortSignal) => Promise<CloudAuth>;
  readonly #handoff: HandoffServer;
  readonly #openCloudLeg: OpenCloudLeg;
  #stopping = false;

  constructor(config: Config, deps: AgentDeps = {}) {
    this.#config = config;
    this.#deps = deps;
    this.#log = deps.log ?? logger("agent");
    this.#policy = new Policy(config.tunnel.allow, config.tunnel.maxSessions);
    this.#openCloudLeg = deps.openCloudLeg ?? cloudLegOpenerFor(config);
    this.#handoff = new HandoffServer({
      topics: handoffTopics(config),
      publish: (topic, payload) => this.#link.publish(topic, payload),
      serve: (request, report) => this.#serveHandedOver(request, report),
      log: this.#log,
    });
    this.#link = MqttLink.connect({
      config,
      log: logger("mqtt"),
      onMessage: (topic, payload) => this.#onMessage(topic, payload),
      health: true,
      operations: deps.operations ?? true,
      extraTopics: [this.#handoff.topics.requestFilter],
    });
    this.#auth = cloudAuthFor(
      config,
      (signal) => this.#link.requestJwt(signal),
    );
  }

  /** Settles once subscribed and health `up` is published. */
  get ready(): Promise<void> {
    return this.#link.ready;
  }

  /** Number of live sessions. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  #onMessage(topic: string, payload: string): void {
    if (this.#stopping) return;
    if (topic === this.#link.topics.smartRestIn) {
      for (const outcome of parseSmartRest(payload)) {
        this.#handle(outcome, payload);
      }
    } else if (topic === this.#link.topics.operationsIn) {
      this.#handle(parseJsonOperation(payload), payload);
    } else if (this.#handoff.handles(topic)) {
      this.#handoff.onMessage(topic, payload);
    }
  }

  #handle(outcome: ParseOutcome, payload: string): void {
    switch (outcome.kind) {
      case "ignored":
        if (outcome.quiet) {
          this.#log.debug("ignored message: {reason}", {
            reason: outcome.reason,
          });
        } else {
          this.#log.warn("ignored message: {reason}: {payload}", {
            reason: outcome.reason,
            payload: shorten(payload, 120),
          });
        }
        return;
      case "rejected":
        if (this.#isDuplicate(outcome.ref)) return;
        this.#report(outcome.ref, "executing");
        this.#log.warn("request {key} refused: {reason}", {
          key: shortKey(shorten(outcome.ref.key, 40)),
          reason: outcome.reason,
        });
        this.#report(outcome.ref, "failed", outcome.reason);
        return;
      case "request":
        if (this.#isDuplicate(outcome.request)) return;
        this.#launch(outcome.request);
        return;
    }
  }

  /** True for a key already seen (a re-delivery, or the same request as 530 and JSON). */
  #isDuplicate(ref: OperationRef): boolean {
    if (ref.key === "") return false;
    if (this.#recentKeys.has(ref.key)) {
      this.#log.debug("dropped duplicate delivery of {key}", {
        key: shortKey(ref.key),
      });
      return true;
    }
    this.#recentKeys.add(ref.key);
    if (this.#recentKeys.size > RECENT_KEYS) {
      const oldest = this.#recentKeys.values().next().value;
      if (oldest !== undefined) this.#recentKeys.delete(oldest);
    }
    return false;
  }

  #report(ref: OperationRef, status: OperationStatus, reason?: string): void {
    const message = statusMessage(ref, status, {
      topicPrefix: this.#config.mqtt.topicPrefix,
      mainDeviceId: this.#config.c8y.deviceId,
    }, reason);
    this.#link.publish(message.topic, message.payload).catch((error) => {
      this.#log.warn("could not publish status {payload} to {topic}: {error}", {
        payload: message.payload,
        topic: message.topic,
        error: String(error),
      });
    });
  }

  /** A request from `connect` (plugin mode): served like a 530, status answered to `connect`. */
  #serveHandedOver(request: RemoteAccessRequest, report: StatusReport): void {
    if (this.#isDuplicate(request)) {
      report("executing");
      report(
        "failed",
        `connection key ${shortKey(request.key)} is already being served`,
      );
      return;
    }
    this.#launch(request, report);
  }

  /** Starts a session in the background; an unexpected error is logged, never thrown. */
  #launch(request: RemoteAccessRequest, report?: StatusReport): void {
    this.#start(request, report).catch((error: unknown) => {
      this.#log.error("session {key} to {target}: unexpected error: {error}", {
        key: shortKey(request.key),
        target: formatTarget(request.host, request.port),
        error: error instanceof Error
          ? error.stack ?? error.message
          : String(error),
      });
    });
  }

  async #start(
    request: RemoteAccessRequest,
    report: StatusReport = (status, reason) =>
      this.#report(request, status, reason),
  ): Promise<void> {
    report("executing");
    const target = formatTarget(request.host, request.port);
    if (this.#stopping) {
      report("failed", "agent is shutting down");
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
      report("failed", admission.reason);
      return;
    }
    const tunnel = this.#createTunnel(request);
    this.#sessions.set(request.key, tunnel);
    tunnel.finished.then((summary) => {
      this.#sessions.delete(request.key);
      this.#logSummary(summary);
    });
    this.#log.info("session {key} to {target} requested for {device}", {
      key: shortKey(request.key),
      target,
      device: request.deviceId,
    });
    const result = await tunnel.open();
    if (result.ok) {
      report("successful");
    } else {
      report("failed", result.reason);
    }
  }

  #createTunnel(request: RemoteAccessRequest): Tunnel {
    const openCloudLeg = this.#openCloudLeg;
    const url = deviceUrl(this.#config.c8y.url, request.key);
    const log = this.#log;
    return new Tunnel(request, {
      dial: this.#deps.dial ?? dialTcp,
      openCloud: async (signal) => {
        const auth = await this.#auth(signal);
        return openCloudLeg(url, { headers: authHeaders(auth), signal });
      },
      log,
      ...(this.#deps.clock ? { clock: this.#deps.clock } : {}),
    }, {
      connectTimeoutMs: this.#config.tunnel.connectTimeoutMs,
      idleTimeoutMs: this.#config.tunnel.idleTimeoutMs,
      maxDurationMs: this.#config.tunnel.maxDurationMs,
    });
  }

  #logSummary(summary: TunnelSummary): void {
    const fields = {
      key: shortKey(summary.key),
      target: summary.target,
      seconds: (summary.durationMs / 1000).toFixed(1),
      fromTarget: formatBytes(summary.fromTarget),
      toTarget: formatBytes(summary.toTarget),
      reason: summary.reason,
    };
    if (summary.state === "failed") {
      this.#log.warn(
        "session {key} to {target} failed after {seconds} s: {reason}",
        fields,
      );
    } else {
      this.#log.info(
        "session {key} to {target} ended after {seconds} s: {fromTarget} from target, {toTarget} to target ({reason})",
        fields,
      );
    }
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
