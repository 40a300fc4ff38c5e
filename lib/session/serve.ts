/**
 * One session from one request, the same way for the daemon and for
 * `connect`'s detached child: the auth the config asks for (a JWT per
 * session, Basic, or none), the device URL, the cloud leg opener, the
 * limits, and the summary line logged when the session ends.
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
import { cloudLegOpenerFor } from "../cloud/opener.ts";
import type { RemoteAccessRequest } from "../protocol/operations.ts";
import { type Logger, shortKey } from "../util/log.ts";
import { type Dial, dialTcp } from "./pump.ts";
import { type Clock, Tunnel, type TunnelSummary } from "./tunnel.ts";

/** What a session needs besides the config; tests add faults here. */
export interface SessionDeps {
  /** A JWT from the thin-edge bridge (used when `c8y.auth = "jwt"`). */
  readonly jwt: (signal: AbortSignal) => Promise<string>;
  readonly log: Logger;
  readonly dial?: Dial;
  readonly openCloudLeg?: OpenCloudLeg;
  readonly clock?: Clock;
}

/** Builds the (not yet opened) tunnel for one request. */
export type SessionBuilder = (request: RemoteAccessRequest) => Tunnel;

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
      return () =>
        credentials
          ? Promise.resolve({ kind: "basic", ...credentials })
          : Promise.reject(
            new Error(
              "Cannot use basic auth: no credentials loaded (c8y.credentials_path)",
            ),
          );
    }
    case "none":
      return () => Promise.resolve({ kind: "none" });
  }
}

/** Logs the one line that sums up a finished session. */
export function logSummary(log: Logger, summary: TunnelSummary): void {
  const fields = {
    key: shortKey(summary.key),
    target: summary.target,
    seconds: (summary.durationMs / 1000).toFixed(1),
    fromTarget: formatBytes(summary.fromTarget),
    toTarget: formatBytes(summary.toTarget),
    reason: summary.reason,
  };
  if (summary.state === "failed") {
    log.warn(
      "session {key} to {target} failed after {seconds} s: {reason}",
      fields,
    );
  } else {
    log.info(
      "session {key} to {target} ended after {seconds} s: {fromTarget} from target, {toTarget} to target ({reason})",
      fields,
    );
  }
}

/**
 * The session builder for `config`: each call makes a {@linkcode Tunnel}
 * for one request (the caller opens it and owns it) whose end is logged
 * with {@linkcode logSummary}.
 */
export function sessionBuilder(
  config: Config,
  deps: SessionDeps,
): SessionBuilder {
  const auth = cloudAuthFor(config, deps.jwt);
  const openCloudLeg = deps.openCloudLeg ?? cloudLegOpenerFor(config);
  const limits = {
    connectTimeoutMs: config.tunnel.connectTimeoutMs,
    idleTimeoutMs: config.tunnel.idleTimeoutMs,
    maxDurationMs: config.tunnel.maxDurationMs,
  };
  return (request) => {
    const url = deviceUrl(config.c8y.httpUrl, request.key);
    const tunnel = new Tunnel(request, {
      dial: deps.dial ?? dialTcp,
      openCloud: async (signal) =>
        await openCloudLeg(url, {
          headers: authHeaders(await auth(signal)),
          signal,
        }),
      log: deps.log,
      ...(deps.clock ? { clock: deps.clock } : {}),
    }, limits);
    tunnel.finished.then((summary) => logSummary(deps.log, summary));
    return tunnel;
  };
}
