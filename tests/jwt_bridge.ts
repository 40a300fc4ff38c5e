/**
 * A stand-in for thin-edge's Cumulocity bridge as the agent sees it for JWTs:
 * an MQTT client that answers `71,<token>` on `<prefix>/s/dat` to each
 * request on `<prefix>/s/uat` (at once, or after ignoring the first ones).
 *
 * @module
 */
import mqtt from "mqtt";

/** A token shaped like a JWT that expires in an hour. */
export function fakeJwt(): string {
  const b64 = (value: unknown) =>
    btoa(JSON.stringify(value)).replace(/=+$/, "").replace(/\+/g, "-")
      .replace(/\//g, "_");
  return `${b64({ alg: "none" })}.${
    b64({ exp: Math.floor(Date.now() / 1000) + 3600 })
  }.sig`;
}

/** The thin-edge bridge as the agent sees it: answers `71,<token>` on `<prefix>/s/dat` to each request on `<prefix>/s/uat`. */
export interface Bridge extends AsyncDisposable {
  readonly token: string;
  /** Requests seen so far. */
  requests(): number;
  /** Disconnects (what dispose does). */
  close(): Promise<void>;
}

/** Options of {@linkcode bridgeStandIn}. */
export interface BridgeOptions {
  /** The bridge's topic prefix (default `c8y`). */
  readonly prefix?: string;
  /** Leave this many first requests unanswered (default 0). */
  readonly ignoreFirst?: number;
  /** The token it hands out (default a JWT-shaped token valid for an hour). */
  readonly token?: string;
}

/** Connects a stand-in bridge to the broker on 127.0.0.1:port, subscribed before it resolves. */
export async function bridgeStandIn(
  port: number,
  options: BridgeOptions = {},
): Promise<Bridge> {
  const prefix = options.prefix ?? "c8y";
  const token = options.token ?? fakeJwt();
  let seen = 0;
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
    clientId: `bridge-${crypto.randomUUID().slice(0, 8)}`,
    reconnectPeriod: 0,
  });
  client.on("message", (topic) => {
    if (topic !== `${prefix}/s/uat`) return;
    seen++;
    if (seen <= (options.ignoreFirst ?? 0)) return;
    client.publish(`${prefix}/s/dat`, `71,${token}`, { qos: 0 });
  });
  await client.subscribeAsync(`${prefix}/s/uat`, { qos: 0 });
  const close = async () => {
    await client.endAsync(true);
  };
  return {
    token,
    requests: () => seen,
    close,
    [Symbol.asyncDispose]: close,
  };
}
