/**
 * A short-lived broker client for the commands that only ask something and
 * leave: `connect` (is a daemon up? hand it the request) and `check` (is the
 * broker there, does the bridge give a JWT, is a daemon up). Connects once
 * with a deadline and its own client id, never reconnects, and queues the
 * messages of its subscriptions per topic so that callers take them in order.
 * The daemon's long-lived connection is {@linkcode MqttLink} in link.ts.
 *
 * @module
 */
import type mqtt from "mqtt";
import type { Config } from "../config/config.ts";
import { deadline } from "../util/deadline.ts";
import { brokerOptions } from "./broker.ts";
import { parseJwtAnswer } from "./jwt.ts";
import { connectMqtt, noDelay } from "./link.ts";
import { type Topics, topicsFor } from "./topics.ts";

/** Options of {@linkcode MqttOnce.connect}. */
export interface MqttOnceOptions {
  /** Added to `mqtt.client_id` with a random suffix, so the daemon's session is not taken over. */
  readonly purpose: string;
  /** How long connecting may take, in ms. */
  readonly timeoutMs: number;
}

/** A service's retained health as found on the broker. */
export type ServiceHealth =
  | { readonly status: "up"; readonly pid?: number }
  | { readonly status: "down" }
  /** Nothing retained (the service never ran here). */
  | { readonly status: "none" };

/** Reads a thin-edge health message (`{"status":"up","pid":…}`). */
export function parseHealth(text: string | undefined): ServiceHealth {
  if (text === undefined) return { status: "none" };
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { status: "down" };
  }
  if (typeof body !== "object" || body === null) return { status: "down" };
  const { status, pid } = body as { status?: unknown; pid?: unknown };
  if (status !== "up") return { status: "down" };
  return typeof pid === "number" ? { status: "up", pid } : { status: "up" };
}

/** Messages kept per topic until read (the oldest go first). */
const MAX_QUEUED = 64;

/** One connection to the broker for a few questions; dispose of it when done. */
export class MqttOnce implements AsyncDisposable {
  readonly topics: Topics;
  readonly #client: mqtt.MqttClient;
  readonly #queues = new Map<string, string[]>();
  readonly #waiters = new Map<string, () => void>();
  /** How long the broker may take to acknowledge (the connect timeout). */
  readonly #ackMs: number;

  private constructor(
    client: mqtt.MqttClient,
    topics: Topics,
    ackMs: number,
  ) {
    this.#client = client;
    this.topics = topics;
    this.#ackMs = ackMs;
    const decoder = new TextDecoder();
    client.on("message", (topic, payload) => {
      const queue = this.#queues.get(topic) ?? [];
      // Bounded: a flood on a topic keeps only its latest messages.
      if (queue.length >= MAX_QUEUED) queue.shift();
      queue.push(decoder.decode(payload));
      this.#queues.set(topic, queue);
      this.#waiters.get(topic)?.();
    });
  }

  /**
   * Connects to the configured broker.
   * @throws {Error} naming what failed ("no answer within 2 s", the socket error).
   */
  static async connect(
    config: Config,
    options: MqttOnceOptions,
  ): Promise<MqttOnce> {
    const client = connectMqtt({
      ...brokerOptions(config),
      clientId: `${config.mqtt.clientId}-${options.purpose}-${
        crypto.randomUUID().slice(0, 8)
      }`,
      clean: true,
      connectTimeout: options.timeoutMs,
      reconnectPeriod: 0,
      // Messages over mqtt.max_payload are skipped on the socket, before
      // MQTT.js buffers them (size_guard.ts); a one-shot exchange needs none.
      guard: {
        maxPayloadBytes: config.mqtt.maxPayloadBytes,
        onOversized: () => {},
      },
    });
    const connected = new Promise<void>((resolve, reject) => {
      client.once("connect", () => resolve());
      client.once("error", reject);
      client.once("close", () => reject(new Error("connection closed")));
    });
    connected.catch(() => {});
    try {
      await deadline(
        connected,
        options.timeoutMs + 500,
        `no answer within ${options.timeoutMs / 1000} s`,
      );
    } catch (error) {
      await client.endAsync(true).catch(() => {});
      throw error;
    }
    client.on("error", () => {});
    noDelay(client);
    return new MqttOnce(client, topicsFor(config), options.timeoutMs);
  }

  /**
   * Subscribes to `filters` (QoS 1); retained messages then arrive at once.
   * Bounded like connecting: a SUBACK that never comes would otherwise hold
   * the caller until MQTT.js's keepalive gives up (minutes, past the
   * mapper's timeout for `connect`).
   * @throws {Error} naming the filters when no SUBACK comes in time.
   */
  async subscribe(filters: readonly string[]): Promise<void> {
    await deadline(
      this.#client.subscribeAsync([...filters], { qos: 1 }),
      this.#ackMs,
      `the broker did not acknowledge the subscription to ${
        filters.join(", ")
      } within ${this.#ackMs / 1000} s`,
    );
  }

  /**
   * The next message on `topic` (one of the subscriptions), in order of
   * arrival; undefined when none comes within `ms`.
   */
  async next(topic: string, ms: number): Promise<string | undefined> {
    const take = () => this.#queues.get(topic)?.shift();
    const queued = take();
    if (queued !== undefined) return queued;
    const arrived = Promise.withResolvers<void>();
    this.#waiters.set(topic, () => arrived.resolve());
    try {
      await deadline(arrived.promise, ms, "");
      return take();
    } catch {
      return undefined;
    } finally {
      this.#waiters.delete(topic);
    }
  }

  /** The daemon's retained health (subscribe to `topics.health` first); `none` when nothing arrives within `ms`. */
  async health(ms: number): Promise<ServiceHealth> {
    return parseHealth(await this.next(this.topics.health, ms));
  }

  /**
   * Asks the thin-edge bridge for a JWT (subscribe to `topics.jwtResponse`
   * first, so that a fast answer is not lost) and returns the token; asks
   * again every third of `ms` while no answer came.
   * @throws {Error} naming the topic when no `71,` answer comes within `ms`.
   */
  async jwt(ms: number): Promise<string> {
    const end = Date.now() + ms;
    const intervalMs = Math.max(ms / 3, 100);
    for (;;) {
      await this.publish(this.topics.jwtRequest, "");
      const askAgain = Math.min(end, Date.now() + intervalMs);
      for (;;) {
        const left = askAgain - Date.now();
        const text = left > 0
          ? await this.next(this.topics.jwtResponse, left)
          : undefined;
        if (text === undefined) break;
        const token = parseJwtAnswer(text);
        if (token !== undefined) return token;
      }
      if (Date.now() >= end) {
        throw new Error(
          `no answer on ${this.topics.jwtResponse} within ${ms / 1000} s`,
        );
      }
    }
  }

  /**
   * Publishes one message (QoS 1) and waits for the broker's acknowledgement,
   * as long as connecting may take.
   * @throws {Error} naming the topic when no PUBACK comes in time.
   */
  async publish(topic: string, payload: string): Promise<void> {
    await deadline(
      this.#client.publishAsync(topic, payload, { qos: 1 }),
      this.#ackMs,
      `the broker did not acknowledge a message on ${topic} within ${
        this.#ackMs / 1000
      } s`,
    );
  }

  /** Disconnects at once; idempotent, never rejects. */
  async close(): Promise<void> {
    for (const wake of this.#waiters.values()) wake();
    // Forced: the socket is closed at once, nothing waits on the broker
    // (tests/mqtt_socket_test.ts), so this needs no time bound of its own.
    await this.#client.endAsync(true).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
