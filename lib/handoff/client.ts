/**
 * `connect`'s side of the handoff (protocol.ts): when a daemon is up (its
 * retained health says so), the request goes to it, and `connect` waits for
 * the daemon to accept it and then for the result.
 *
 * @module
 */
import type { Config } from "../config/config.ts";
import type { Logger } from "../util/log.ts";
import { errorMessage } from "../util/errors.ts";
import { brokerName } from "../mqtt/broker.ts";
import { MqttOnce } from "../mqtt/once.ts";
import {
  HANDOFF_ACCEPT_MS,
  HANDOFF_EXPIRES_MS,
  type HandoffReply,
  type HandoffRequest,
  HEALTH_WAIT_MS,
  parseReply,
} from "./protocol.ts";

/** How long `connect` waits for the broker to accept its connection. */
const BROKER_WAIT_MS = 2000;

/** The handoff's outcome as `connect` sees it. */
export type HandoffOutcome =
  | { readonly kind: "successful" }
  | { readonly kind: "failed"; readonly reason: string }
  /** No daemon took the request: serve it here. */
  | { readonly kind: "unavailable"; readonly why: string };

/**
 * Hands `line` to a running daemon: connects to the broker (its own client
 * id), looks at the daemon's retained health, publishes the request, and
 * waits for the daemon to accept it and then for the result. Resolves
 * `unavailable` when there is no broker, no daemon up, or no acceptance in
 * time; never rejects.
 */
export async function handOff(
  config: Config,
  line: string,
  options: { readonly resultTimeoutMs: number; readonly log: Logger },
): Promise<HandoffOutcome> {
  const id = crypto.randomUUID();
  let broker: MqttOnce;
  try {
    broker = await MqttOnce.connect(config, {
      purpose: "connect",
      timeoutMs: BROKER_WAIT_MS,
    });
  } catch (error) {
    return {
      kind: "unavailable",
      why: `broker ${brokerName(config)}: ${errorMessage(error)}`,
    };
  }
  await using _ = broker;
  const { topics } = broker;
  const result = topics.handoffResult(id);
  /** The next reply within `ms`, skipping what is not one. */
  const reply = async (ms: number): Promise<HandoffReply | undefined> => {
    const end = Date.now() + ms;
    for (;;) {
      const left = end - Date.now();
      if (left <= 0) return undefined;
      const text = await broker.next(result, left);
      if (text === undefined) return undefined;
      const parsed = parseReply(text);
      if (parsed !== undefined) return parsed;
    }
  };
  try {
    await broker.subscribe([topics.health, result]);
    const health = await broker.health(HEALTH_WAIT_MS);
    if (health.status !== "up") {
      return {
        kind: "unavailable",
        why:
          `no c8y-tunnel daemon is up (health on ${topics.health}: ${health.status})`,
      };
    }
    const request: HandoffRequest = {
      line,
      expires: Date.now() + HANDOFF_EXPIRES_MS,
      profile: config.c8y.profile,
    };
    await broker.publish(topics.handoffRequest(id), JSON.stringify(request));
    const first = await reply(HANDOFF_ACCEPT_MS);
    if (first === undefined) {
      return {
        kind: "unavailable",
        why: `the daemon did not accept the request within ${
          HANDOFF_ACCEPT_MS / 1000
        } s`,
      };
    }
    options.log.debug("daemon accepted the request");
    const final = first.state === "accepted"
      ? await reply(options.resultTimeoutMs)
      : first;
    if (final === undefined) {
      return {
        kind: "failed",
        reason: `the c8y-tunnel daemon gave no result within ${
          options.resultTimeoutMs / 1000
        } s`,
      };
    }
    return final.state === "failed"
      ? { kind: "failed", reason: final.reason }
      : { kind: "successful" };
  } catch (error) {
    return {
      kind: "unavailable",
      why: `handoff failed: ${errorMessage(error)}`,
    };
  }
}
