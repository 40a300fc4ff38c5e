/**
 * The fixed parts of the benchmark rig: the MQTT broker (mosquitto when
 * installed, else the embedded aedes broker), the cloud simulator in its own
 * process, and an MQTT client that publishes each 530 and watches statuses.
 *
 * @module
 */
import mqtt from "mqtt";
import { type EmbeddedBroker, startBroker } from "../lib/sim/broker.ts";
import type { Target, TargetReport } from "./wire.ts";

/** Where things are and how to stop them. */
export interface Service extends AsyncDisposable {
  readonly port: number;
  readonly pid: number | null;
  readonly description: string;
}

/** The project root (the folder above bench/). */
export const ROOT = new URL("..", import.meta.url).pathname;

/** Picks a free loopback port (listen on 0, close; the OS rarely reuses it at once). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** Polls `check` every 10 ms until true or `timeoutMs` passes (then throws `what`). */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!await check()) {
    if (performance.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function canConnect(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/** True when `name` is an executable on PATH. */
export function which(name: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      const path = `${dir}/${name}`;
      const info = Deno.statSync(path);
      if (info.isFile && (info.mode ?? 0) & 0o111) return path;
    } catch {
      // not here
    }
  }
  for (const dir of ["/usr/sbin", "/usr/local/sbin", "/sbin"]) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // not here
    }
  }
  return null;
}

/** Stops a child process: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopProcess(
  child: Deno.ChildProcess,
  graceMs = 3000,
): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    // already gone
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, graceMs);
  try {
    await child.status;
  } finally {
    clearTimeout(timer);
  }
}

/** Options of {@linkcode startMosquitto}. */
export interface MosquittoOptions {
  /** As mosquitto and thin-edge ship it (Nagle on), else with TCP_NODELAY. */
  readonly defaults?: boolean;
  /** More configuration lines, e.g. `max_queued_messages 0`. */
  readonly config?: readonly string[];
  /** Gets each line mosquitto logs (its default log types); none when unset. */
  readonly onLog?: (line: string) => void;
}

/**
 * Starts mosquitto on a free loopback port, with TCP_NODELAY (DESIGN.md §5)
 * unless `defaults`: then as mosquitto and thin-edge ship it (Nagle on).
 */
export async function startMosquitto(
  dir: string,
  { defaults = false, config: extra = [], onLog }: MosquittoOptions = {},
): Promise<Service> {
  const binary = which("mosquitto");
  if (binary === null) throw new Error("Cannot start mosquitto: not installed");
  const port = freePort();
  const config = `${dir}/mosquitto-${port}.conf`;
  await Deno.writeTextFile(
    config,
    [
      `listener ${port} 127.0.0.1`,
      "allow_anonymous true",
      ...(defaults ? [] : ["set_tcp_nodelay true"]),
      "persistence false",
      // stderr: unbuffered (stdout into a pipe would come in 4 KiB blocks)
      `log_dest ${onLog ? "stderr" : "none"}`,
      ...extra,
      "",
    ].join("\n"),
  );
  const child = new Deno.Command(binary, {
    args: ["-c", config],
    stdin: "null",
    stdout: "null",
    stderr: onLog ? "piped" : "null",
  }).spawn();
  if (onLog) {
    (async () => {
      for await (const line of lines(child.stderr)) onLog(line);
    })().catch(() => {});
  }
  await until(() => canConnect(port), `mosquitto on port ${port}`);
  return {
    port,
    pid: child.pid,
    description: `mosquitto (${binary}${
      defaults ? ", default configuration" : ", set_tcp_nodelay"
    }${extra.length > 0 ? `, ${extra.join(", ")}` : ""})`,
    [Symbol.asyncDispose]: () => stopProcess(child),
  };
}

/** Starts the embedded aedes broker in this process. */
export async function startEmbedded(): Promise<Service> {
  const broker: EmbeddedBroker = await startBroker();
  return {
    port: broker.port,
    pid: null,
    description: "embedded aedes broker (lib/sim/broker.ts, in the driver)",
    [Symbol.asyncDispose]: () => broker.close(),
  };
}

/** Reads lines from a child's stdout. */
export async function* lines(stream: ReadableStream<Uint8Array>) {
  let rest = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    rest += text;
    let newline = rest.indexOf("\n");
    while (newline >= 0) {
      yield rest.slice(0, newline);
      rest = rest.slice(newline + 1);
      newline = rest.indexOf("\n");
    }
  }
}

/** The target in its own process (bench/target_process.ts), seen from the driver. */
export interface RemoteTarget extends Target, Service {}

/** Starts bench/target_process.ts with a pattern of `patternBytes`. */
export async function startTarget(patternBytes: number): Promise<RemoteTarget> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}bench/target_process.ts`, String(patternBytes)],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = lines(child.stdout);
  const first = await reader.next();
  if (first.done || !first.value.startsWith("ready ")) {
    throw new Error("Cannot start the target process: it exited");
  }
  const port = Number(first.value.slice(6));
  const reports = new Map<number, PromiseWithResolvers<TargetReport>>();
  const entry = (id: number) => {
    let e = reports.get(id);
    if (e === undefined) {
      e = Promise.withResolvers<TargetReport>();
      e.promise.catch(() => {});
      reports.set(id, e);
    }
    return e;
  };
  let open = 0;
  const reading = (async () => {
    for await (const line of reader) {
      if (line.startsWith("open ")) open = Number(line.slice(5));
      else if (line.startsWith("report ")) {
        const r = JSON.parse(line.slice(7)) as TargetReport & { id: number };
        entry(r.id).resolve({
          bytes: r.bytes,
          sha256: r.sha256,
          lastByteAt: r.lastByteAt - performance.timeOrigin,
        });
        reports.delete(r.id);
      }
    }
  })().catch(() => {});
  return {
    port,
    pid: child.pid,
    description: "bench/target_process.ts",
    get open() {
      return open;
    },
    report: (id) => entry(id).promise,
    [Symbol.asyncDispose]: async () => {
      await stopProcess(child);
      await reading;
      for (const e of reports.values()) e.reject(new Error("target stopped"));
    },
  };
}

/** The cloud simulator process: its URL, its client listener, and the keys of new sessions. */
export interface Cloud extends Service {
  /** `http://127.0.0.1:<port>`: the agents' `c8y.url`. */
  readonly url: string;
  /** Called with the connection key of each accepted client connection. */
  onKey: (key: string) => void;
}

/** Which cloud: lib/sim (the default) or the bench-only relay with backpressure. */
export type CloudKind = "sim" | "relay";

const CLOUDS: Record<CloudKind, { script: string; description: string }> = {
  sim: {
    script: "bench/cloud_process.ts",
    description: "lib/sim RemoteAccessSim + listen() (bench/cloud_process.ts)",
  },
  relay: {
    script: "bench/relay_cloud.ts",
    description: "bench/relay_cloud.ts (backpressure towards the device)",
  },
};

/** Starts the cloud process of `kind` and waits until it listens. */
export async function startCloud(kind: CloudKind = "sim"): Promise<Cloud> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}${CLOUDS[kind].script}`],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = lines(child.stdout);
  const first = await reader.next();
  if (first.done) {
    throw new Error("Cannot start the cloud simulator: it exited");
  }
  const ready = JSON.parse(first.value) as { url: string; port: number };
  const cloud: Cloud = {
    port: ready.port,
    pid: child.pid,
    url: ready.url,
    description: CLOUDS[kind].description,
    onKey: () => {},
    [Symbol.asyncDispose]: async () => {
      await stopProcess(child);
      await keys;
    },
  };
  const keys = (async () => {
    for await (const line of reader) {
      if (line.startsWith("key ")) cloud.onKey(line.slice(4));
    }
  })().catch(() => {});
  return cloud;
}

/** One MQTT message the operator saw, with when it arrived. */
export interface Seen {
  readonly topic: string;
  readonly payload: string;
  readonly at: number;
}

/** One status line seen on `<prefix>/s/us`, with when it arrived. */
export interface StatusSeen {
  readonly prefix: string;
  readonly payload: string;
  readonly at: number;
}

/**
 * The driver's MQTT client: publishes a 530 for each new client connection
 * of the cloud (to the prefix of the contender being measured) and records
 * statuses and health messages.
 */
export class Operator implements AsyncDisposable {
  readonly #client: mqtt.MqttClient;
  readonly #waiters = new Set<
    {
      match: (topic: string, payload: string) => boolean;
      resolve: (seen: Seen) => void;
    }
  >();
  readonly statuses: StatusSeen[] = [];
  /** Time each 530 was published, by connection key. */
  readonly published = new Map<string, number>();
  /** Prefix and target port the next 530s go to. */
  route: { prefix: string; targetPort: number } | null = null;
  /** When set, the next 530 lines go here instead of the broker (plugin mode: `connect "530,…"`). */
  divert: ((line: string) => void) | null = null;
  #lastPublished: { key: string; at: number } | null = null;

  private constructor(client: mqtt.MqttClient) {
    this.#client = client;
    const decoder = new TextDecoder();
    client.on("message", (topic, payload) => {
      const at = performance.now();
      const text = decoder.decode(payload);
      if (topic.endsWith("/s/us")) {
        this.statuses.push({
          prefix: topic.slice(0, -"/s/us".length),
          payload: text,
          at,
        });
      }
      for (const waiter of this.#waiters) {
        if (waiter.match(topic, text)) {
          this.#waiters.delete(waiter);
          waiter.resolve({ topic, payload: text, at });
        }
      }
    });
  }

  static async connect(port: number): Promise<Operator> {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      clientId: `bench-driver-${crypto.randomUUID().slice(0, 8)}`,
    });
    // Nagle would hold a 530 behind our last PUBACK for a delayed ACK (~40 ms).
    (client.stream as unknown as { setNoDelay?: (on: boolean) => void })
      .setNoDelay?.(true);
    await client.subscribeAsync([
      "+/s/us",
      "te/device/main/service/+/status/health",
    ], {
      qos: 1,
    });
    return new Operator(client);
  }

  /** The key and time of the latest 530. */
  get lastPublished(): { key: string; at: number } | null {
    return this.#lastPublished;
  }

  /** Publishes the 530 for `key` to the current route. */
  request(key: string): void {
    const route = this.route;
    if (route === null) return;
    const at = performance.now();
    this.published.set(key, at);
    this.#lastPublished = { key, at };
    const line = `530,bench-device,127.0.0.1,${route.targetPort},${key}`;
    if (this.divert !== null) this.divert(line);
    else this.#client.publish(`${route.prefix}/s/ds`, line, { qos: 1 });
  }

  /**
   * Resolves with the first message matching `match` that arrives after this
   * call (and when it arrived), or rejects after `timeoutMs`.
   */
  waitFor(
    match: (topic: string, payload: string) => boolean,
    what: string,
    timeoutMs = 15_000,
  ): Promise<Seen> {
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (seen: Seen) => {
          clearTimeout(timer);
          resolve(seen);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(
          new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`),
        );
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#client.endAsync(true);
  }
}
