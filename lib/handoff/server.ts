/**
 * The daemon's side of the handoff (protocol.ts): takes the requests that
 * `connect` hands over, serves them like a 530 through the daemon, and
 * answers on the result topic instead of publishing status lines.
 *
 * @module
 */
import type { Logger } from "../util/log.ts";
import { errorMessage } from "../util/errors.ts";
import { leftOut, LogBudget } from "../util/log_budget.ts";
import type { Topics } from "../mqtt/topics.ts";
import {
  parseConnectLine,
  type RemoteAccessRequest,
  shorten,
  type StatusReport,
} from "../protocol/operations.ts";
import { type HandoffReply, isRequestId, parseRequest } from "./protocol.ts";

/** What {@linkcode HandoffServer} needs from the daemon. */
export interface HandoffServerDeps {
  readonly topics: Topics;
  readonly publish: (topic: string, payload: string) => Promise<void>;
  /** Serves a request like one from the cloud, its status going to `report`. */
  readonly serve: (request: RemoteAccessRequest, report: StatusReport) => void;
  readonly log: Logger;
  /** Unix ms; tests may fake it. */
  readonly now?: () => number;
  /** The cloud profile this daemon serves ("" = the default connection). */
  readonly profile?: string;
}

/** How many request ids the server remembers to drop MQTT re-deliveries. */
const RECENT_IDS = 256;

/** The daemon's side of the handoff. */
export class HandoffServer {
  readonly #deps: HandoffServerDeps;
  readonly #recent = new Set<string>();
  /** Malformed handoffs are logged at most 20 per 10 s (a flood is not a log flood). */
  readonly #malformedLines = new LogBudget(20, 10_000);
  readonly #prefix: string;

  constructor(deps: HandoffServerDeps) {
    this.#deps = deps;
    this.#prefix = deps.topics.handoffRequest("");
  }

  /** True for a topic of a handed-over request. */
  handles(topic: string): boolean {
    return topic.startsWith(this.#prefix);
  }

  /** Handles one request message; malformed, expired or repeated ones are dropped. */
  onMessage(topic: string, payload: string): void {
    const id = topic.slice(this.#prefix.length);
    if (!isRequestId(id) || this.#recent.has(id)) return;
    this.#remember(id);
    const body = parseRequest(payload);
    if (body === undefined) {
      const budget = this.#malformedLines.take();
      if (!budget.log) return;
      this.#deps.log.warn(
        "dropped a malformed connect handoff: {payload}{more}",
        {
          payload: shorten(payload, 120),
          more: leftOut(budget),
        },
      );
      return;
    }
    const profile = this.#deps.profile ?? "";
    if ((body.profile ?? "") !== profile) {
      // Another connection's request (a shared service name): not ours to
      // serve; unanswered, `connect` serves it itself.
      this.#deps.log.warn(
        "dropped a connect handoff for cloud profile {asked}: this daemon serves {profile}",
        {
          asked: body.profile || "(default)",
          profile: profile || "(default)",
        },
      );
      return;
    }
    const now = (this.#deps.now ?? Date.now)();
    if (now > body.expires) {
      this.#deps.log.info(
        "dropped a connect handoff that arrived {ms} ms late (connect serves it itself)",
        { ms: now - body.expires },
      );
      return;
    }
    const reply = (answer: HandoffReply) => {
      this.#deps.publish(
        this.#deps.topics.handoffResult(id),
        JSON.stringify(answer),
      ).catch((error) =>
        this.#deps.log.warn("could not answer a connect handoff: {error}", {
          error: errorMessage(error),
        })
      );
    };
    const report: StatusReport = (status, reason) => {
      if (status === "executing") reply({ state: "accepted" });
      else if (status === "successful") reply({ state: "successful" });
      else {
        reply({ state: "failed", reason: reason ?? "remote access failed" });
      }
    };
    const parsed = parseConnectLine(body.line);
    if (!parsed.ok) {
      report("executing");
      report("failed", parsed.reason);
      return;
    }
    this.#deps.serve(parsed.request, report);
  }

  #remember(id: string): void {
    this.#recent.add(id);
    if (this.#recent.size > RECENT_IDS) {
      const oldest = this.#recent.values().next().value;
      if (oldest !== undefined) this.#recent.delete(oldest);
    }
  }
}
