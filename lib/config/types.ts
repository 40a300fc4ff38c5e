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
  };
  readonly c8y: {
    /** Scheme + host[:port], no trailing slash, e.g. "https://t1.cumulocity.com". */
    readonly url: string;
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
  readonly log: { readonly level: LogLevel; readonly format: LogFormat };
  /** HTTP CONNECT proxy for the cloud leg; address "" = none, else "http(s)://host[:port]". */
  readonly proxy: {
    readonly address: string;
    readonly username: string;
    readonly password: string;
  };
  readonly health: { readonly topicRoot: string; readonly serviceName: string };
  /** tedge.toml location; configDir is its directory (holds operations/c8y/...). */
  readonly tedge: { readonly configPath: string; readonly configDir: string };
}
