/**
 * How to reach the local broker, as thin-edge's own clients do: host and
 * port, TLS when a CA file or directory is set (then `mqtt.port` is the
 * broker's TLS listener, 8883 by convention), a client certificate, and a
 * username with the password from its file. Shared by the daemon's link and
 * the one-shot client, so that both log in alike. The password goes only to
 * the broker: never into a log line or an error.
 *
 * @module
 */
import type { IClientOptions } from "mqtt";
import { readBrokerTls } from "../config/broker_tls.ts";
import type { Config } from "../config/config.ts";

/** The part of mqtt.js's options that says where the broker is and how to log in. */
export type BrokerOptions =
  & { readonly host: string; readonly port: number }
  & Pick<
    IClientOptions,
    | "protocol"
    | "ca"
    | "cert"
    | "key"
    | "rejectUnauthorized"
    | "username"
    | "password"
  >;

/**
 * mqtt.js options for `config.mqtt`: `mqtts` with the CA certificates (and
 * the client certificate) when TLS is configured, plain `mqtt` otherwise;
 * `username`/`password` when a username is set.
 * @throws {Error} naming the key and path of a TLS file that cannot be used.
 */
export function brokerOptions(config: Config): BrokerOptions {
  const { host, port, auth } = config.mqtt;
  const tls = readBrokerTls(config);
  return {
    host,
    port,
    protocol: tls === null ? "mqtt" : "mqtts",
    ...(tls === null ? {} : {
      ca: [...tls.ca],
      rejectUnauthorized: true,
      ...(tls.cert !== undefined && tls.key !== undefined
        ? { cert: tls.cert, key: tls.key }
        : {}),
    }),
    ...(auth === null ? {} : {
      username: auth.username,
      ...(auth.password === null ? {} : { password: auth.password }),
    }),
  };
}

/** "mqtts://host:port" or "host:port", for log lines (never carries the login). */
export function brokerName(config: Config): string {
  const address = `${config.mqtt.host}:${config.mqtt.port}`;
  return config.mqtt.tls === null ? address : `mqtts://${address}`;
}
