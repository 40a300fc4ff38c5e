/**
 * The validated configuration, {@link Config}, and the types of its
 * fields. Built by load.ts; read-only and frozen once built.
 *
 * @module
 */
import type { LogFormat, LogLevel } from "../util/log.ts";
import type { AllowRule } from "./allow.ts";

export type { AllowRule, LogFormat, LogLevel };

/** How the cloud leg authenticates: a JWT fetched over MQTT, HTTP Basic, or nothing (local tests). */
export type AuthMethod = "jwt" | "basic" | "none";

/** Basic-auth credentials; `username` is "<tenant>/<user>" as given in the file. */
export interface Credentials {
  readonly username: string;
  readonly password: string;
}

/** The validated, read-only settings of the agent. Durations are in ms. */
export interface Config {
  /** Path of our config file that was read; null when the default one did not exist. */
  readonly configFile: string | null;
  /** Path of the tedge.toml that was read, or null. */
  readonly tedgeConfigFile: string | null;
  readonly mqtt: {
    readonly host: string;
    readonly port: number;
    readonly topicPrefix: string;
    readonly clientId: string;
    /**
     * Largest MQTT packet payload accepted from the broker, in bytes (key
     * mqtt.max_payload). Cumulocity never sends one above 16 KiB.
     */
    readonly maxPayloadBytes: number;
    /** TLS to the broker; null = plain MQTT (no CA file or directory set). */
    readonly tls: MqttTls | null;
    /** Username/password login to the broker; null = none. */
    readonly auth: MqttLogin | null;
  };
  readonly c8y: {
    /** Scheme + host[:port], no trailing slash, e.g. "https://t1.cumulocity.com". */
    readonly url: string;
    /**
     * Where the WebSocket goes, same form as `url`: key c8y.http (thin-edge's
     * HTTP endpoint, set apart from the MQTT host by custom-domain tenants),
     * else `url`.
     */
    readonly httpUrl: string;
    readonly deviceId: string;
    readonly auth: AuthMethod;
    readonly credentialsPath: string;
    /** Read from credentialsPath when auth = "basic", else null. */
    readonly credentials: Credentials | null;
    /** Extra CA certificates (PEM file or directory); "" = none. */
    readonly rootCertPath: string;
    /** How long to wait for `71,<jwt>` (key c8y.jwt_timeout, seconds). */
    readonly jwtTimeoutMs: number;
    /**
     * thin-edge cloud profile whose `[c8y.profiles.<name>]` table of
     * tedge.toml supplied the fallbacks, spelt as tedge.toml spells it;
     * "" = the default `[c8y]` table.
     */
    readonly profile: string;
  };
  readonly tunnel: {
    /** The parsed rules; each keeps its text (`rule.text`) for messages. */
    readonly allow: readonly AllowRule[];
    readonly maxSessions: number;
    readonly connectTimeoutMs: number;
    /** 0 = never. */
    readonly idleTimeoutMs: number;
    /** 0 = unlimited. */
    readonly maxDurationMs: number;
  };
  /**
   * Log level and format; `file` is where `connect` writes its log ("" =
   * nowhere): its stderr carries only the one line of a failure's reason,
   * which tedge-mapper-c8y shows in Cumulocity.
   */
  readonly log: {
    readonly level: LogLevel;
    readonly format: LogFormat;
    readonly file: string;
  };
  /** HTTP CONNECT proxy for the cloud leg; address "" = none, else "http(s)://host[:port]". */
  readonly proxy: {
    readonly address: string;
    readonly username: string;
    readonly password: string;
  };
  /**
   * thin-edge service health: topic root and device topic id (tedge.toml
   * `mqtt.topic_root`, `mqtt.device_topic_id`), our service's name, and the
   * `type` of its registration (tedge.toml `service.type`).
   */
  readonly health: {
    readonly topicRoot: string;
    readonly serviceName: string;
    readonly deviceTopicId: string;
    readonly serviceType: string;
  };
  /** tedge.toml location; configDir is its directory (holds operations/c8y/...). */
  readonly tedge: {
    readonly configPath: string;
    readonly configDir: string;
    /**
     * Where thin-edge keeps the Cumulocity connection: "mappers" (2.x,
     * `mappers/c8y[.<profile>]/mapper.toml`) or "tedge.toml" (1.x `[c8y]`).
     */
    readonly layout: "mappers" | "tedge.toml";
    /** The mapper.toml in use (2.x layout; it may not exist: defaults), else null. */
    readonly mapperFile: string | null;
    /** 2.x layout while tedge.toml still holds a `[c8y]` table (ignored, as thin-edge does). */
    readonly tedgeC8yIgnored: boolean;
  };
  /**
   * Where each value came from, by key of our file (and `c8y.auth`):
   * "<file> key <key>", "default", or a short note such as "c8y.url".
   * For `check`; never holds a value.
   */
  readonly origins: { readonly [key: string]: string };
}

/**
 * TLS to the local broker (tedge.toml `mqtt.client.auth.*`, or our [mqtt]
 * keys): used when a CA file or directory is set, as thin-edge does.
 */
export interface MqttTls {
  readonly caFile: string | null;
  readonly caDir: string | null;
  /** Client certificate and its key: both set, or both null. */
  readonly certFile: string | null;
  readonly keyFile: string | null;
}

/** Login to the local broker; the password is the first line of the password file (a secret). */
export interface MqttLogin {
  readonly username: string;
  readonly password: string | null;
}
