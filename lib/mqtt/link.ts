/**
 * The connection to the local MQTT broker (thin-edge's mosquitto): request
 * subscriptions, status publishing, health, and the JWT exchange. Reconnects
 * with capped backoff and subscribes again after every connect; sessions
 * never depend on it once they are open.
 *
 * @module
 */
import type mqtt from "mqtt";
import clientEntry from "mqtt/lib/client";
import type { Config } from "../config/config.ts";
import type { Logger } from "../util/log.ts";
import { deadline, settlesWithin } from "../util/deadline.ts";
import { brokerName, brokerOptions } from "./broker.ts";
import { jwtExpiry, parseJwtAnswer } from "./jwt.ts";
import { type Topics, topicsFor } from "./topics.ts";
import type { OversizedMessage } from "./size_guard.ts";
import { SHED_OVER_BYTES } from "./inbox.ts";
import { brokerStream, type BrokerStreamOptions } from "./socket.ts";
import { leftOut, LogBudget } from "../util/log_budget.ts";

/** A message from a subscribed topic. */
export type MessageHandler = (topic: string, payload: string) => void;

/**
 * Lost QoS 1 messages after which the link connects again: half of
 * mosquitto's default in-flight slots (`max_inflight_messages` 20).
 */
const LOST_IDS_RECONNECT = 10;

/** Backoff between reconnect attempts: doubles from 0.5 s, capped at 30 s, reset after a connect. */
export const RECONNECT_MIN_MS = 500;
export const RECONNECT_MAX_MS = 30_000;

/** Seconds of validity a cached JWT must have left to be reused. */
const JWT_MARGIN_S = 60;

/**
 * MQTT.js's client class, from the package's `mqtt/lib/client` entry: its
 * main entry also loads every transport (WebSocket, TLS, SOCKS, …) that a
 * client of the local broker never uses.
 */
const MqttClient: typeof mqtt.MqttClient = typeof clientEntry === "function"
  ? clientEntry
  : (clientEntry as unknown as { default: typeof mqtt.MqttClient }).default;

/** Options of {@linkcode connectMqtt}: MQTT.js's, with the broker's address. */
export type MqttConnectOptions = mqtt.IClientOptions & {
  readonly host: string;
  readonly port: number;
  /**
   * Keep PUBLISH packets whose payload is over `maxPayloadBytes` out of the
   * client: skipped on the socket as they arrive, before MQTT.js would
   * buffer them whole (size_guard.ts), and reported to `onOversized`; with
   * `onMessage`, take the others through the inbox instead of MQTT.js's
   * "message" event (socket.ts has what each option does).
   */
  readonly guard?: Omit<BrokerStreamOptions, "open">;
};

/**
 * An MQTT.js client of the broker at `host:port` over plain TCP (or TLS for
 * `protocol: "mqtts"`) on `Deno.connect` (socket.ts: a fixed read buffer,
 * oversized messages skipped before any copy), a new connection on each
 * reconnect as `mqtt.connect` makes one, with
 * `writeCache: false`: otherwise mqtt-packet builds a Buffer for each of
 * the 65536 packet ids on the first write, which cost the agent 10 MiB of
 * private memory (docs/bench.md).
 */
export function connectMqtt(options: MqttConnectOptions): mqtt.MqttClient {
  const { host, port, guard, ...rest } = options;
  // mqtts (mqtt/broker.ts): TLS with the broker's CA and the client certificate.
  const connect = options.protocol === "mqtts"
    ? () =>
      Deno.connectTls({
        hostname: host,
        port,
        ...(options.ca ? { caCerts: [options.ca].flat().map(String) } : {}),
        ...(options.cert && options.key
          ? { cert: String(options.cert), key: String(options.key) }
          : {}),
      })
    : () => Deno.connect({ hostname: host, port });
  const open = () =>
    brokerStream({
      open: connect,
      maxPayloadBytes: Infinity,
      onOversized: () => {},
      ...guard,
    });
  const client = new MqttClient(open as never, {
    ...rest,
    host,
    port,
    writeCache: false,
    // MQTT.js's own debug log (npm `debug`, off) still cost a call with
    // the packet for each message (about 3% of the agent's time under a flood).
    log: () => {},
  });
  // As mqtt.connect does: an "error" event without a listener would throw.
  client.on("error", () => {});
  return client;
}

/** Reconnect backoff of `client`: doubles from {@linkcode RECONNECT_MIN_MS} up to {@linkcode RECONNECT_MAX_MS}, reset on connect. */
function backOff(client: mqtt.MqttClient): number {
  const period = client.options.reconnectPeriod ?? RECONNECT_MIN_MS;
  client.options.reconnectPeriod = Math.min(period * 2, RECONNECT_MAX_MS);
  return period;
}

/**
 * Turns off Nagle's algorithm on the client's socket: status lines and
 * requests are small, and waiting for a delayed ACK adds ~40 ms to each.
 */
export function noDelay(client: mqtt.MqttClient): void {
  const stream = client.stream as
    | { setNoDelay?: (on: boolean) => void }
    | undefined;
  stream?.setNoDelay?.(true);
}

/**
 * A thin-edge health message (tedge_api health.rs): `up` with the pid and
 * the time (unix seconds), `down` (also the last will) with the pid.
 */
export function healthPayload(
  status: "up" | "down",
  timeS?: number,
): { status: "up" | "down"; pid: number; time?: number } {
  return status === "up"
    ? { status, pid: Deno.pid, time: timeS ?? Math.floor(Date.now() / 1000) }
    : { status, pid: Deno.pid };
}

/**
 * The service's registration as thin-edge's entity store expects it (what
 * its own services publish): `@parent` is the device topic id, `type` is
 * tedge.toml's `service.type`; keys in thin-edge's (sorted) order.
 */
export function serviceRegistration(config: Config): string {
  return JSON.stringify({
    "@parent": config.health.deviceTopicId,
    "@type": "service",
    name: config.health.serviceName,
    type: config.health.serviceType,
  });
}

/** Options of {@linkcode MqttLink.connect}. */
export interface MqttLinkOptions {
  readonly config: Config;
  readonly log: Logger;
  readonly onMessage: MessageHandler;
  /** Publish health and service registration (daemon mode). */
  readonly health: boolean;
  /** Subscribe to operation topics (daemon mode); `connect` only needs the JWT. */
  readonly operations: boolean;
  /** More topic filters to subscribe to (QoS 1) on every connect, e.g. the `connect` handoff. */
  readonly extraTopics?: readonly string[];
  /** Wall clock in unix seconds, for JWT expiry; tests may fake it. */
  readonly nowSeconds?: () => number;
  /** Client id instead of `mqtt.client_id`, so `connect`/`check` do not take over the daemon's session. */
  readonly clientId?: string;
}

/** The agent's broker connection. */
export class MqttLink implements AsyncDisposable {
  readonly topics: Topics;
  readonly #client: mqtt.MqttClient;
  /**
   * Where {@linkcode publish} sends (statuses, JWT requests, handoff
   * replies): in daemon mode a second connection. On a broker with Nagle on
   * (mosquitto's default, thin-edge's) the broker's PUBACK of a status would
   * otherwise stay unacknowledged while this host delays its ACK (~40 ms),
   * and the next request PUBLISH would wait behind it. On the request
   * connection the agent answers every PUBLISH with its PUBACK at once, so
   * nothing waits there. Statuses stay QoS 1.
   */
  readonly #publisher: mqtt.MqttClient;
  readonly #options: MqttLinkOptions;
  readonly #decoder = new TextDecoder();
  /** QoS 1 messages the broker dropped on this connection (lost_ids.ts). */
  #lostIds = 0;
  /** Messages shed under overload are logged at most 20 per 10 s. */
  readonly #shedLines = new LogBudget(20, 10_000);
  #jwtWaiters = new Set<(token: string) => void>();
  #jwt: { token: string; exp: number | null } | undefined;
  /** Wakes the JWT asking loop early (a token came, or nobody waits any more). */
  #jwtWake: () => void = () => {};
  #ready: Promise<void>;
  #markReady: () => void = () => {};
  /** Settles once the current connection's subscriptions are acknowledged; re-armed when it is lost. */
  #subscribed = Promise.withResolvers<void>();
  #closing = false;

  private constructor(options: MqttLinkOptions) {
    this.#options = options;
    this.topics = topicsFor(options.config);
    this.#ready = new Promise((resolve) => this.#markReady = resolve);
    const { mqtt: settings } = options.config;
    this.#client = connectMqtt({
      ...brokerOptions(options.config),
      clientId: options.clientId ?? settings.clientId,
      clean: true,
      keepalive: 60,
      resubscribe: false,
      reconnectPeriod: RECONNECT_MIN_MS,
      connectTimeout: 10_000,
      guard: {
        maxPayloadBytes: settings.maxPayloadBytes,
        onOversized: (message) => this.#onOversized(message),
        onMessage: (message) => this.#onMessage(message.topic, message.payload),
        onShed: (message) => this.#onShed(message),
        onLostIds: (count) => this.#onLostIds(count),
      },
      ...(options.health
        ? {
          will: {
            topic: this.topics.health,
            payload: new TextEncoder().encode(
              JSON.stringify(healthPayload("down")),
            ) as never,
            qos: 1 as const,
            retain: true,
          },
        }
        : {}),
    });
    this.#publisher = options.operations
      ? connectMqtt({
        ...brokerOptions(options.config),
        clientId: `${options.clientId ?? settings.clientId}-out`,
        clean: true,
        keepalive: 60,
        reconnectPeriod: RECONNECT_MIN_MS,
        connectTimeout: 10_000,
      })
      : this.#client;
    if (this.#publisher !== this.#client) {
      const publisher = this.#publisher;
      publisher.on("connect", () => {
        noDelay(publisher);
        publisher.options.reconnectPeriod = RECONNECT_MIN_MS;
      });
      publisher.on("close", () => backOff(publisher));
    }
    this.#client.on("connect", () => this.#onConnect());
    this.#client.on("close", () => this.#onClose());
    this.#client.on("error", (error) => {
      options.log.warn("MQTT broker {broker}: {error}", {
        broker: brokerName(options.config),
        error: error.message,
      });
    });
  }

  /** Starts connecting (in the background; it retries until closed). */
  static connect(options: MqttLinkOptions): MqttLink {
    return new MqttLink(options);
  }

  /** Settles after the first connect whose subscriptions were acknowledged. */
  get ready(): Promise<void> {
    return this.#ready;
  }

  /** True while connected to the broker. */
  get connected(): boolean {
    return this.#client.connected;
  }

  async #onConnect(): Promise<void> {
    const { log, config } = this.#options;
    this.#lostIds = 0;
    noDelay(this.#client);
    this.#client.options.reconnectPeriod = RECONNECT_MIN_MS;
    const topics: string[] = [];
    if (this.#options.operations) {
      topics.push(this.topics.smartRestIn, this.topics.operationsIn);
    }
    if (config.c8y.auth === "jwt") topics.push(this.topics.jwtResponse);
    if (this.#options.health) topics.push(...this.topics.healthChecks);
    topics.push(...(this.#options.extraTopics ?? []));
    try {
      if (topics.length > 0) {
        await this.#client.subscribeAsync(topics, { qos: 1 });
      }
      this.#subscribed.resolve();
      if (this.#options.health) {
        await this.#client.publishAsync(
          this.topics.service,
          serviceRegistration(config),
          { qos: 1, retain: true },
        );
        await this.#publishHealth("up");
      }
    } catch (error) {
      if (!this.#closing) {
        log.warn("MQTT subscribe after connect failed: {error}", {
          error: String(error),
        });
      }
      return;
    }
    log.info("MQTT connected to {broker}, listening on {topics}", {
      broker: brokerName(config),
      topics: topics.join(", "),
    });
    this.#markReady();
  }

  #onClose(): void {
    if (this.#closing) return;
    this.#subscribed = Promise.withResolvers<void>();
    const period = backOff(this.#client);
    this.#options.log.info(
      "MQTT connection to {broker} lost; retrying in {seconds} s",
      {
        broker: brokerName(this.#options.config),
        seconds: period / 1000,
      },
    );
  }

  /** One warning line per message over `mqtt.max_payload`, and nothing else. */
  #onOversized(message: OversizedMessage): void {
    this.#options.log.warn(
      "dropped a {bytes}-byte message on {topic}: larger than mqtt.max_payload ({limit} bytes)",
      {
        bytes: message.bytes,
        topic: message.topic,
        limit: this.#options.config.mqtt.maxPayloadBytes,
      },
    );
  }

  /**
   * The broker dropped QoS 1 messages for this connection after numbering
   * them (its queue for the client was full): said in the log, and past
   * half of mosquitto's in-flight slots, which such messages keep taken, the
   * connection is made again, since with none left no request would come.
   */
  #onLostIds(count: number): void {
    this.#lostIds += count;
    const reconnect = this.#lostIds >= LOST_IDS_RECONNECT;
    this.#options.log.warn(
      "the broker dropped {count} QoS 1 message(s) for this client ({total} on this connection): its queue for the client was full (mosquitto's max_queued_messages; see Hostile input in the README){action}",
      {
        count,
        total: this.#lostIds,
        action: reconnect
          ? "; reconnecting, as the broker holds an in-flight slot for each of them"
          : "",
      },
    );
    if (reconnect) {
      this.#lostIds = 0;
      this.#client.stream?.destroy();
    }
  }

  #onShed(message: OversizedMessage): void {
    const budget = this.#shedLines.take();
    if (!budget.log) return;
    this.#options.log.warn(
      "dropped a {bytes}-byte message on {topic}: too many messages wait to be handled (a flood?), and meanwhile none over {limit} bytes (more than Cumulocity sends) is taken{more}",
      {
        bytes: message.bytes,
        topic: message.topic,
        limit: SHED_OVER_BYTES,
        more: leftOut(budget, "shed messages"),
      },
    );
  }

  #onMessage(topic: string, payload: Uint8Array): void {
    // Nothing over mqtt.max_payload gets here: the guard skipped it on the socket.
    if (this.#closing) return;
    const text = this.#decoder.decode(payload);
    if (topic === this.topics.jwtResponse) {
      this.#onJwtMessage(text);
      return;
    }
    if (this.#options.health && this.topics.healthChecks.includes(topic)) {
      // thin-edge's health check: any message asks the service to publish
      // its health again.
      this.#publishHealth("up").catch(() => {});
      return;
    }
    try {
      this.#options.onMessage(topic, text);
    } catch (error) {
      this.#options.log.error("handling a message on {topic} failed: {error}", {
        topic,
        error: String(error),
      });
    }
  }

  #onJwtMessage(text: string): void {
    const token = parseJwtAnswer(text);
    if (token === undefined) return;
    this.#jwt = { token, exp: jwtExpiry(token) };
    const waiters = this.#jwtWaiters;
    this.#jwtWaiters = new Set();
    for (const resolve of waiters) resolve(token);
    this.#jwtWake();
  }

  async #publishHealth(status: "up" | "down"): Promise<void> {
    const nowS = (this.#options.nowSeconds ?? (() => Date.now() / 1000))();
    const body = healthPayload(status, Math.floor(nowS));
    await this.#client.publishAsync(this.topics.health, JSON.stringify(body), {
      qos: 1,
      retain: true,
    });
  }

  /** Publishes one message (QoS 1; queued while the broker is away). */
  async publish(topic: string, payload: string): Promise<void> {
    await this.#publisher.publishAsync(topic, payload, { qos: 1 });
  }

  /**
   * A JWT for the cloud leg, from the thin-edge bridge (`<prefix>/s/uat` ->
   * `71,<token>`). A cached token is reused while it has more than a minute
   * left; concurrent callers share one request. The request is published
   * only once the subscription to `<prefix>/s/dat` is acknowledged (a fast
   * bridge would otherwise answer into the void), and asked again every
   * third of `c8y.jwt_timeout` while no answer came (thin-edge's plugin
   * retries too). Rejects with a message naming `c8y.jwt_timeout` when none
   * arrives in time.
   */
  async requestJwt(signal: AbortSignal): Promise<string> {
    const nowS = (this.#options.nowSeconds ?? (() => Date.now() / 1000))();
    const cached = this.#jwt;
    if (cached && cached.exp !== null && cached.exp - JWT_MARGIN_S > nowS) {
      return cached.token;
    }
    signal.throwIfAborted();
    const timeoutMs = this.#options.config.c8y.jwtTimeoutMs;
    const first = this.#jwtWaiters.size === 0;
    let resolveToken: (token: string) => void = () => {};
    const token = new Promise<string>((resolve) => resolveToken = resolve);
    this.#jwtWaiters.add(resolveToken);
    if (first) this.#askForJwt(timeoutMs);
    try {
      return await deadline(
        token,
        timeoutMs,
        `no JWT from the thin-edge bridge within ${
          timeoutMs / 1000
        } s (c8y.jwt_timeout): is tedge-mapper-c8y running and connected?`,
        { signal },
      );
    } finally {
      this.#jwtWaiters.delete(resolveToken);
      if (this.#jwtWaiters.size === 0) this.#jwtWake();
    }
  }

  /** Publishes the JWT request once subscribed, and again every `timeoutMs / 3` while someone waits. */
  #askForJwt(timeoutMs: number): void {
    const intervalMs = Math.max(timeoutMs / 3, 100);
    const waiting = () => this.#jwtWaiters.size > 0 && !this.#closing;
    /** Resolves after `ms`, or at once when something wakes the loop; never leaves a timer behind. */
    const pause = (ms: number, until?: Promise<unknown>) =>
      new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(done, ms);
        this.#jwtWake = done;
        until?.then(done, done);
      });
    (async () => {
      while (waiting()) {
        let subscribed = false;
        const acknowledged = this.#subscribed.promise.then(() => {
          subscribed = true;
        });
        await pause(intervalMs, acknowledged);
        if (!waiting()) return;
        if (!subscribed) continue;
        this.publish(this.topics.jwtRequest, "").catch(() => {});
        await pause(intervalMs);
      }
    })().finally(() => this.#jwtWake = () => {});
  }

  /** Publishes health `down` (daemon mode) and disconnects; idempotent. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#options.health && this.#client.connected) {
      await settlesWithin(this.#publishHealth("down"), 1000);
    }
    const end = (client: mqtt.MqttClient) => client.endAsync(!client.connected);
    await Promise.all([
      end(this.#client),
      this.#publisher !== this.#client ? end(this.#publisher) : undefined,
    ]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
