/**
 * The handoff between `c8y-tunnel connect` (plugin mode) and a running
 * `c8y-tunnel run` daemon, as it goes over the local broker: `connect`
 * publishes a {@linkcode HandoffRequest} (the 530 line and an expiry) on
 * `<service>/connect/request/<id>`, and the daemon answers on
 * `<service>/connect/result/<id>` with `accepted`, then `successful` or
 * `failed` ({@linkcode HandoffReply}). Topic names are in mqtt/topics.ts.
 *
 * The broker is local and already trusted to trigger sessions (anyone who
 * may publish to `c8y/s/ds` can), so the handoff topic adds no new power;
 * the daemon still applies `tunnel.allow` and `tunnel.max_sessions`.
 *
 * @module
 */
import { jsonTooDeep } from "../protocol/json_depth.ts";

/** How long `connect` waits for a running daemon to accept a handed-over request. */
export const HANDOFF_ACCEPT_MS = 2500;
/** A daemon ignores a handed-over request older than this (then `connect` serves it itself). */
export const HANDOFF_EXPIRES_MS = 1500;
/** How long `connect` waits for the daemon's retained health after subscribing. */
export const HEALTH_WAIT_MS = 500;

/** A handed-over request: the 530 line and when it stops being valid (unix ms). */
export interface HandoffRequest {
  readonly line: string;
  readonly expires: number;
  /** The cloud profile `connect` serves ("" = the default connection); a daemon of another one drops it. */
  readonly profile?: string;
}

/** The daemon's answers: accepted at once, then successful or failed. */
export type HandoffReply =
  | { readonly state: "accepted" }
  | { readonly state: "successful" }
  | { readonly state: "failed"; readonly reason: string };

const REQUEST_ID = /^[A-Za-z0-9-]{1,64}$/;

/** True for a request id that may be a topic level of the handoff (`connect` uses a UUID). */
export function isRequestId(id: string): boolean {
  return REQUEST_ID.test(id);
}

function parseJson(text: string): unknown {
  if (jsonTooDeep(text)) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A request message's body, or undefined when it is not one. */
export function parseRequest(text: string): HandoffRequest | undefined {
  const body = parseJson(text) as Partial<HandoffRequest> | undefined;
  if (
    typeof body !== "object" || body === null ||
    typeof body.line !== "string" || typeof body.expires !== "number"
  ) return undefined;
  return {
    line: body.line,
    expires: body.expires,
    ...(typeof body.profile === "string" ? { profile: body.profile } : {}),
  };
}

/** A reply message, or undefined when it is not one. */
export function parseReply(text: string): HandoffReply | undefined {
  const value = parseJson(text) as Record<string, unknown> | undefined;
  if (typeof value !== "object" || value === null) return undefined;
  if (value.state === "accepted" || value.state === "successful") {
    return { state: value.state };
  }
  if (value.state === "failed") {
    return {
      state: "failed",
      reason: typeof value.reason === "string"
        ? value.reason
        : "remote access failed",
    };
  }
  return undefined;
}
