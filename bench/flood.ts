/**
 * Hostile-input flood (issue 11): an attacker on the local broker publishes
 * hostile payloads to the agent's topics as fast as mosquitto takes them,
 * while valid 530s are published behind them; the agent runs as its own
 * process and its memory and fds are read from /proc.
 *
 * Two phases, each against a freshly started agent:
 * - `keys`: 200 SmartREST 530s whose connection key is 1 MiB long (invalid),
 *   then idle: settled growth (target <= 4 MiB);
 * - `flood`: 20,000 hostile payloads (1 MiB payloads, payloads of
 *   1,000-4,000 SmartREST records, deeply nested JSON, small garbage) to
 *   `c8y/s/ds`, `c8y/devicecontrol/notifications` and the handoff topic
 *   `c8y-tunnel/connect/request/<id>`, with valid 530s (child devices
 *   `probe-N`, so their statuses can be told apart) published between them
 *   on the same connection, one every 500 payloads, and one more right
 *   behind the last payload; then idle: peak and settled growth of RSS and
 *   RssAnon, fds.
 *
 * Whether a valid request reaches the agent at all is up to mosquitto: it
 * drops messages for a subscriber with `max_queued_messages` (default 1000)
 * waiting. So the bench also runs a witness (a subscriber in its own
 * process that does nothing with what it gets), reads mosquitto's log for
 * the clients it dropped messages for, and samples mosquitto's memory;
 * `--broker-queue N` sets `max_queued_messages` (the remedy in
 * docs/hostile-mqtt.md).
 *
 * Usage: deno run -A bench/flood.ts [--quick] [--payloads N] [--keys N]
 *        [--idle SECONDS] [--broker-queue N] [--out FILE]
 * (also `deno task bench --flood [--quick]`). `--quick`: 2,000 payloads, 20
 * keys, 5 s idle. The exit code is 1 when a valid request that mosquitto
 * did not drop was not served.
 *
 * @module
 */
import mqtt from "mqtt";
import { parseArgs } from "node:util";
import { cpuSeconds, kBField, resetPeak } from "./proc.ts";
import {
  type OversizedMessage,
  pubAck,
  PublishSizeFilter,
  remainingLength,
} from "../lib/mqtt/size_guard.ts";
import { v8FlagsArg } from "../scripts/compile.ts";
import {
  type Cloud,
  lines as readLines,
  type RemoteTarget,
  ROOT,
  type Service,
  startCloud,
  startMosquitto,
  startTarget,
  stopProcess,
} from "./rig.ts";
import { fmt, mib, percentile, table } from "./stats.ts";
import { openClient } from "./wire.ts";

const MiB = 1024 * 1024;
const encoder = new TextEncoder();

// ------------------------------------------------------------------ /proc

/** Memory and descriptors of one process at one moment. */
export interface ProcSample {
  /** VmRSS, bytes. */
  readonly rss: number;
  /** RssAnon (private, anonymous memory), bytes. */
  readonly anon: number;
  /** VmHWM (peak RSS since start or the last reset), bytes. */
  readonly hwm: number;
  /** RssFile (file-backed pages: the deno executable), bytes. */
  readonly file: number;
  /** Open file descriptors. */
  readonly fds: number;
}

/** Reads {@linkcode ProcSample} of `pid` from /proc. */
export function procSample(pid: number): ProcSample {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) => kBField(status, name);
  let fds = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) fds++;
  return {
    rss: field("VmRSS"),
    anon: field("RssAnon"),
    hwm: field("VmHWM"),
    file: field("RssFile"),
    fds,
  };
}

/** Samples `pid` every `intervalMs`; keeps the peaks and every sample. */
export class Sampler {
  readonly samples: { at: number; sample: ProcSample }[] = [];
  peakRss = 0;
  peakAnon = 0;
  readonly #pid: number;
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(pid: number, intervalMs: number, keep = false) {
    this.#pid = pid;
    const take = () => {
      try {
        const sample = procSample(pid);
        this.peakRss = Math.max(this.peakRss, sample.rss, sample.hwm);
        this.peakAnon = Math.max(this.peakAnon, sample.anon);
        if (keep) this.samples.push({ at: performance.now(), sample });
      } catch {
        // the process is gone
      }
    };
    take();
    this.#timer = setInterval(take, intervalMs);
  }

  /** Stops sampling (after one last sample). */
  stop(): void {
    clearInterval(this.#timer);
    try {
      const sample = procSample(this.#pid);
      this.peakRss = Math.max(this.peakRss, sample.rss, sample.hwm);
      this.peakAnon = Math.max(this.peakAnon, sample.anon);
    } catch {
      // gone
    }
  }
}

// ------------------------------------------------------------------ agent

/** The agent under test, in its own process, its log in a file. */
export interface AgentProcess extends AsyncDisposable {
  readonly pid: number;
  readonly command: string;
  /** Lines the agent has logged so far. */
  logLines(): number;
  /** The log file. */
  readonly logFile: string;
}

/** The rig around the agent: broker, cloud simulator, target. */
export interface HostileRig extends AsyncDisposable {
  readonly dir: string;
  readonly broker: Service;
  readonly cloud: Cloud;
  readonly target: RemoteTarget;
  readonly targetPort: number;
  /** Size of the target's pattern (largest download). */
  readonly patternBytes: number;
  /**
   * Times mosquitto said it started dropping messages for a client (its
   * queue for the client was full), by client id.
   */
  readonly drops: ReadonlyMap<string, number>;
  /** Resolves with the connection key of each client connection, in order. */
  nextKey(): Promise<string>;
}

/** mosquitto's notice when a client's queue is full (db__message_insert). */
const DROPPING = /Outgoing messages are being dropped for client (\S+)\./;

/** Options of {@linkcode startRig}. */
export interface RigOptions {
  /** More mosquitto configuration lines, e.g. `max_queued_messages 0`. */
  readonly brokerConfig?: readonly string[];
}

/**
 * Starts mosquitto (its log watched for the clients it drops messages
 * for), the lib/sim cloud and the bench target.
 */
export async function startRig(
  { brokerConfig = [] }: RigOptions = {},
): Promise<HostileRig> {
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-hostile-" });
  const stack = new AsyncDisposableStack();
  if (Deno.env.get("HOSTILE_KEEP") === undefined) {
    stack.defer(() => Deno.remove(dir, { recursive: true }).catch(() => {}));
  } else console.error(`hostile: keeping ${dir}`);
  try {
    const patternBytes = 16 * MiB;
    const target = stack.use(await startTarget(patternBytes));
    const drops = new Map<string, number>();
    const broker = stack.use(
      await startMosquitto(dir, {
        config: brokerConfig,
        onLog: (line) => {
          const client = DROPPING.exec(line)?.[1];
          if (client) drops.set(client, (drops.get(client) ?? 0) + 1);
        },
      }),
    );
    const cloud = stack.use(await startCloud("sim"));
    const keys: string[] = [];
    const waiting: ((key: string) => void)[] = [];
    cloud.onKey = (key) => {
      const waiter = waiting.shift();
      if (waiter) waiter(key);
      else keys.push(key);
    };
    const moved = stack.move();
    return {
      dir,
      broker,
      cloud,
      target,
      targetPort: target.port,
      patternBytes,
      drops,
      nextKey: () => {
        const key = keys.shift();
        return key !== undefined
          ? Promise.resolve(key)
          : new Promise((resolve) => waiting.push(resolve));
      },
      [Symbol.asyncDispose]: () => moved.disposeAsync(),
    };
  } catch (error) {
    await stack.disposeAsync();
    throw error;
  }
}

/** Device id the agent is configured with (main device). */
export const DEVICE_ID = "hostile-device";
/** The agent's `health.service_name` (default) and so the handoff root. */
const SERVICE = "c8y-tunnel";

/**
 * Starts `deno run -A main.ts run` with a config for `rig` and waits for its
 * health `up`. `name` names the config and log files.
 */
export async function startAgent(
  rig: HostileRig,
  name: string,
  maxSessions = 64,
): Promise<AgentProcess> {
  const config = `${rig.dir}/${name}.toml`;
  const logFile = `${rig.dir}/${name}.log`;
  await Deno.writeTextFile(
    config,
    `[mqtt]
host = "127.0.0.1"
port = ${rig.broker.port}
client_id = "c8y-tunnel-${name}"

[c8y]
url = "${rig.cloud.url}"
device_id = "${DEVICE_ID}"
auth = "none"

[tunnel]
allow = ["127.0.0.1:${rig.targetPort}"]
max_sessions = ${maxSessions}
connect_timeout = 10
idle_timeout = 0

[log]
level = "${Deno.env.get("HOSTILE_LOG_LEVEL") ?? "warn"}"
`,
  );
  const watcher = await StatusWatch.connect(rig.broker.port);
  try {
    const up = watcher.next(
      `te/device/main/service/${SERVICE}/status/health`,
      (payload) => payload.includes('"up"'),
      20_000,
    );
    // The V8 flags the binaries carry (BENCH_AGENT_FLAGS overrides, as in contenders.ts).
    const flags = (Deno.env.get("BENCH_AGENT_FLAGS") ?? v8FlagsArg()).split(" ")
      .filter(Boolean);
    const args = [
      "run",
      "-A",
      ...flags,
      `${ROOT}main.ts`,
      "run",
      "--config",
      config,
    ];
    const child = new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const file = await Deno.open(logFile, { write: true, create: true });
    let lines = 0;
    const copy = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) {
        for (const byte of chunk) if (byte === 0x0a) lines++;
        file.writeSync(chunk);
      }
    };
    const copying = Promise.all([copy(child.stdout), copy(child.stderr)])
      .catch(() => {});
    await up;
    return {
      pid: child.pid,
      command: `deno run -A ${
        flags.join(" ")
      } main.ts run --config ${name}.toml`,
      logFile,
      logLines: () => lines,
      [Symbol.asyncDispose]: async () => {
        await stopProcess(child, 6000);
        await copying;
        file.close();
      },
    };
  } finally {
    await watcher[Symbol.asyncDispose]();
  }
}

// ------------------------------------------------------------------ MQTT

/** Watches status lines and health; waits for the next message on a topic. */
export class StatusWatch implements AsyncDisposable {
  readonly #client: mqtt.MqttClient;
  readonly #waiters = new Set<{
    topic: string;
    match: (payload: string) => boolean;
    resolve: (at: number) => void;
  }>();
  /** Status lines seen, by topic. */
  readonly seen = new Map<string, string[]>();

  private constructor(client: mqtt.MqttClient) {
    this.#client = client;
    const decoder = new TextDecoder();
    client.on("message", (topic, payload) => {
      const at = performance.now();
      const text = decoder.decode(payload);
      const list = this.seen.get(topic) ?? [];
      if (list.length < 1000) list.push(text);
      this.seen.set(topic, list);
      for (const waiter of this.#waiters) {
        if (waiter.topic === topic && waiter.match(text)) {
          this.#waiters.delete(waiter);
          waiter.resolve(at);
        }
      }
    });
  }

  /** Connects and subscribes to every status topic and the health topics. */
  static async connect(port: number): Promise<StatusWatch> {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      clientId: `hostile-watch-${crypto.randomUUID().slice(0, 8)}`,
    });
    await client.subscribeAsync([
      "c8y/s/us",
      "c8y/s/us/#",
      "te/device/main/service/+/status/health",
    ], { qos: 1 });
    return new StatusWatch(client);
  }

  /** Resolves with the arrival time of the next message on `topic` that matches. */
  next(
    topic: string,
    match: (payload: string) => boolean,
    timeoutMs: number,
  ): Promise<number> {
    return new Promise((resolve, reject) => {
      const waiter = {
        topic,
        match,
        resolve: (at: number) => {
          clearTimeout(timer);
          resolve(at);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`no message on ${topic} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  /** Number of status lines on the main device's topic. */
  get mainStatuses(): number {
    return this.seen.get("c8y/s/us")?.length ?? 0;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#client.endAsync(true);
  }
}

/**
 * A raw MQTT 3.1.1 client on its own TCP connection. The attacker writes
 * PUBLISH packets back to back, each write awaited, without waiting for
 * PUBACKs (read and dropped in the background): as fast as the broker
 * reads them. Hostile payloads go as QoS 0, valid requests as QoS 1 (as
 * the cloud bridge sends them). Messages are written in the order given.
 * The witness ({@linkcode witnessMain}) subscribes and only counts what
 * the broker delivers (`onPublish`, a QoS 1 message acknowledged at once).
 */
export class RawPublisher implements AsyncDisposable {
  readonly #conn: Deno.TcpConn;
  readonly #draining: Promise<void>;
  #packetId = 0;
  /** Payload bytes written so far. */
  bytes = 0;
  /** Messages written so far. */
  count = 0;

  private constructor(
    conn: Deno.TcpConn,
    onPublish?: (message: OversizedMessage) => void,
  ) {
    this.#conn = conn;
    // Every PUBLISH with a payload is "over" a limit of 0: topic, QoS and
    // packet id come out, the payload is skipped uncopied.
    const filter = onPublish
      ? new PublishSizeFilter(0, {
        onOversized: (message) => {
          if (message.qos === 1) {
            writeAll(conn, pubAck(message.packetId)).catch(() => {});
          }
          onPublish(message);
        },
      })
      : undefined;
    this.#draining = (async () => {
      const buffer = new Uint8Array(65536);
      try {
        for (let n; (n = await conn.read(buffer)) !== null;) {
          filter?.push(buffer.subarray(0, n)); // else: PUBACKs, dropped
        }
      } catch {
        // closed
      }
    })();
  }

  /**
   * Connects (clean session, no keepalive) and waits for CONNACK;
   * `onPublish` gets each PUBLISH the broker delivers after a
   * {@linkcode subscribe}.
   */
  static async connect(
    port: number,
    onPublish?: (message: OversizedMessage) => void,
  ): Promise<RawPublisher> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    const id = encoder.encode(`hostile-${crypto.randomUUID().slice(0, 8)}`);
    const body = [
      0,
      4,
      ...encoder.encode("MQTT"),
      4, // protocol level 3.1.1
      0x02, // clean session
      0,
      0, // keepalive: none
      id.length >> 8,
      id.length & 0xff,
      ...id,
    ];
    await writeAll(
      conn,
      new Uint8Array([0x10, ...remainingLength(body.length), ...body]),
    );
    const connack = new Uint8Array(4);
    let read = 0;
    while (read < 4) {
      const n = await conn.read(connack.subarray(read));
      if (n === null) throw new Error("Cannot flood: the broker closed");
      read += n;
    }
    if (connack[0] !== 0x20 || connack[3] !== 0) {
      throw new Error(`Cannot flood: CONNACK ${connack.join(",")}`);
    }
    return new RawPublisher(conn, onPublish);
  }

  /** Subscribes to `filters` at QoS 1 (the SUBACK is not awaited). */
  async subscribe(filters: readonly string[]): Promise<void> {
    const body = [0, 1];
    for (const filter of filters) {
      const name = encoder.encode(filter);
      body.push(name.length >> 8, name.length & 0xff, ...name, 1);
    }
    await writeAll(
      this.#conn,
      new Uint8Array([0x82, ...remainingLength(body.length), ...body]),
    );
  }

  /** Writes one PUBLISH (QoS 0 or 1). */
  async publish(
    topic: string,
    payload: Uint8Array,
    qos: 0 | 1 = 0,
  ): Promise<void> {
    const name = encoder.encode(topic);
    const length = 2 + name.length + 2 * qos + payload.length;
    this.#packetId = this.#packetId % 65535 + 1;
    const id = qos === 1 ? [this.#packetId >> 8, this.#packetId & 0xff] : [];
    const header = new Uint8Array([
      qos === 1 ? 0x32 : 0x30,
      ...remainingLength(length),
      name.length >> 8,
      name.length & 0xff,
      ...name,
      ...id,
    ]);
    if (payload.length < 65536) {
      const packet = new Uint8Array(header.length + payload.length);
      packet.set(header);
      packet.set(payload, header.length);
      await writeAll(this.#conn, packet);
    } else {
      await writeAll(this.#conn, header);
      await writeAll(this.#conn, payload);
    }
    this.bytes += payload.length;
    this.count++;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // closed
    }
    await this.#draining;
  }
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    offset += await conn.write(data.subarray(offset));
  }
}

// ------------------------------------------------------------------ payloads

/** The agent's topics an attacker can publish to. */
export const TOPICS = {
  smartRest: "c8y/s/ds",
  operations: "c8y/devicecontrol/notifications",
  handoff: (id: string) => `${SERVICE}/connect/request/${id}`,
} as const;

/** A small deterministic PRNG (xorshift32), so runs are comparable. */
export class Random {
  #x: number;
  constructor(seed = 0x2545f491) {
    this.#x = seed >>> 0 || 1;
  }
  /** A float in [0, 1). */
  next(): number {
    let x = this.#x;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#x = x >>> 0;
    return this.#x / 2 ** 32;
  }
  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  /** One element of `list`. */
  pick<T>(list: readonly T[]): T {
    return list[Math.floor(this.next() * list.length)]!;
  }
}

/** One hostile message. */
export interface HostileMessage {
  readonly kind: "big" | "records" | "deep" | "small";
  readonly topic: string;
  readonly payload: Uint8Array;
}

function bigPayloads(): HostileMessage[] {
  const filler = 'A,"b",c'.repeat(Math.ceil(MiB / 7)).slice(0, MiB - 40);
  return [
    {
      kind: "big",
      topic: TOPICS.smartRest,
      payload: encoder.encode(`530,${filler}`.padEnd(MiB, "x")),
    },
    {
      kind: "big",
      topic: TOPICS.operations,
      payload: encoder.encode(`{"id":"1","x":"${filler.replaceAll('"', "")}"}`),
    },
    {
      kind: "big",
      topic: TOPICS.handoff("big-1"),
      payload: encoder.encode(
        `{"line":"530,${filler.replaceAll('"', "")}","expires":1}`,
      ),
    },
  ];
}

const RECORD_TEMPLATES = [
  "511,hostile-device,echo hello",
  "510,hostile-device",
  "522,hostile-device,software,1.0",
  '533,hostile-device,"a","b"',
  "garbage line ~~~",
  "530,hostile-device",
  '"unterminated,530',
];

/** A payload of `count` SmartREST records, mostly other templates, some garbage. */
export function recordsPayload(random: Random, count: number): Uint8Array {
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    lines.push(
      random.next() < 0.9
        ? RECORD_TEMPLATES[i % 4]!
        : random.pick(RECORD_TEMPLATES.slice(4)),
    );
  }
  return encoder.encode(lines.join("\n"));
}

/** Deeply nested JSON: arrays, objects, or nested in a field the parser reads. */
export function deepPayload(depth: number, shape: number): Uint8Array {
  switch (shape % 3) {
    case 0:
      return encoder.encode("[".repeat(depth) + "]".repeat(depth));
    case 1:
      return encoder.encode(
        '{"id":' + "[".repeat(depth) + "]".repeat(depth) +
          ',"externalSource":{"externalId":"x"},"c8y_RemoteAccessConnect":{}}',
      );
    default:
      return encoder.encode('{"a":'.repeat(depth) + "1" + "}".repeat(depth));
  }
}

const SMALL: readonly ((random: Random) => HostileMessage)[] = [
  (r) => ({
    kind: "small",
    topic: r.pick([TOPICS.smartRest, TOPICS.operations]),
    payload: crypto.getRandomValues(new Uint8Array(r.int(1, 512))),
  }),
  () => ({
    kind: "small",
    topic: TOPICS.smartRest,
    payload: encoder.encode("530,a/b+#,127.0.0.1,22,key"),
  }),
  () => ({
    kind: "small",
    topic: TOPICS.operations,
    payload: encoder.encode('{"id":"x","c8y_RemoteAccessConnect":1}'),
  }),
  () => ({
    kind: "small",
    topic: TOPICS.operations,
    payload: encoder.encode("[]"),
  }),
  (r) => ({
    kind: "small",
    topic: TOPICS.handoff(`h-${r.int(0, 1e9)}`),
    payload: encoder.encode('{"line":5}'),
  }),
  (r) => ({
    kind: "small",
    topic: TOPICS.handoff("x".repeat(r.int(65, 300))),
    payload: encoder.encode("{}"),
  }),
];

/**
 * The flood's messages, generated as needed: of every 200, one 1 MiB
 * payload, 10 of 1,000-4,000 SmartREST records, 10 deeply nested JSON
 * (depth 5,000, every fourth 50,000), the rest small garbage.
 */
export function* hostileMessages(
  count: number,
  seed = 1,
): Generator<HostileMessage> {
  const random = new Random(seed);
  const big = bigPayloads();
  const records = Array.from(
    { length: 8 },
    () => recordsPayload(random, random.int(1000, 4000)),
  );
  const deep = Array.from(
    { length: 12 },
    (_, i) => deepPayload(i % 4 === 3 ? 50_000 : 5_000, i),
  );
  for (let i = 0; i < count; i++) {
    const slot = i % 200;
    if (slot === 0) {
      yield big[(i / 200) % big.length]!;
    } else if (slot <= 10) {
      yield {
        kind: "records",
        topic: TOPICS.smartRest,
        payload: random.pick(records),
      };
    } else if (slot <= 20) {
      const index = random.int(0, deep.length - 1);
      yield {
        kind: "deep",
        topic: index % 3 === 2 && random.next() < 0.5
          ? TOPICS.handoff(`deep-${i}`)
          : TOPICS.operations,
        payload: deep[index]!,
      };
    } else {
      yield random.pick(SMALL)(random);
    }
  }
}

/** A 530 whose connection key is `keyBytes` long (and so invalid). */
export function hugeKey530(
  index: number,
  keyBytes: number,
  port: number,
): Uint8Array {
  const head = `530,${DEVICE_ID},127.0.0.1,${port},k${index}-`;
  return encoder.encode(head.padEnd(head.length + keyBytes, "k"));
}

// ------------------------------------------------------------------ probes

/** One valid request: published behind hostile payloads, answered or not. */
export interface ProbeResult {
  /** 530 published -> 501 seen, ms (NaN: none). */
  readonly executingMs: number;
  /** 530 published -> 503 seen, ms (NaN: none). */
  readonly successfulMs: number;
  /** The target's greeting came through the tunnel. */
  readonly greeted: boolean;
  readonly error?: string;
}

/**
 * Runs one valid request for child device `probe-<n>`: opens a client
 * connection at the cloud's listener, publishes the 530 for its key through
 * `send` (which may queue it behind hostile payloads), waits for 501 and
 * 503 and for the target's greeting, then closes the client.
 */
export async function probe(
  rig: HostileRig,
  watch: StatusWatch,
  n: number,
  send: (topic: string, payload: Uint8Array, qos: 1) => Promise<void>,
  timeoutMs = 30_000,
): Promise<ProbeResult> {
  const device = `probe-${n}`;
  const topic = `c8y/s/us/${device}`;
  const signal = AbortSignal.timeout(timeoutMs);
  const client = openClient(rig.cloud.port, { signal });
  client.catch(() => {});
  let published = NaN;
  try {
    const key = await rig.nextKey();
    const executing = watch.next(topic, (p) => p.startsWith("501,"), timeoutMs);
    const done = watch.next(
      topic,
      (p) => p.startsWith("503,") || p.startsWith("502,"),
      timeoutMs,
    );
    executing.catch(() => {});
    done.catch(() => {});
    await send(
      TOPICS.smartRest,
      encoder.encode(`530,${device},127.0.0.1,${rig.targetPort},${key}`),
      1,
    );
    published = performance.now();
    const executedAt = await executing;
    const doneAt = await done;
    const last = watch.seen.get(topic)?.at(-1) ?? "";
    const conn = await client;
    conn.conn.close();
    return {
      executingMs: executedAt - published,
      successfulMs: last.startsWith("503,") ? doneAt - published : NaN,
      greeted: true,
      ...(last.startsWith("502,") ? { error: last } : {}),
    };
  } catch (error) {
    client.then((c) => c.conn.close()).catch(() => {});
    return {
      executingMs: NaN,
      successfulMs: NaN,
      greeted: false,
      error: String(error),
    };
  }
}

// ------------------------------------------------------------------ witness

/** What the witness got from the broker. */
export interface WitnessCount {
  /** Messages delivered. */
  readonly messages: number;
  /** QoS 1 messages delivered (the valid requests: hostile ones are QoS 0). */
  readonly valid: number;
}

/**
 * The witness, in its own process: a subscriber to the agent's request
 * topics that does nothing with what it gets. What mosquitto drops for it
 * under the flood, it drops for any consumer, however fast.
 */
export class Witness implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #lines: AsyncIterator<string>;

  private constructor(child: Deno.ChildProcess, lines: AsyncIterator<string>) {
    this.#child = child;
    this.#lines = lines;
  }

  /** Starts the witness on the broker at `port`; resolves once its subscription works. */
  static async start(port: number): Promise<Witness> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", import.meta.filename!, "--witness", String(port)],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines = readLines(child.stdout);
    const witness = new Witness(child, lines);
    const first = await lines.next();
    if (first.value !== "subscribed") {
      await witness[Symbol.asyncDispose]();
      throw new Error(`the witness did not start: ${first.value}`);
    }
    return witness;
  }

  /** Stops the witness and returns its counts. */
  async count(): Promise<WitnessCount> {
    await this.#child.stdin.close();
    const last = await this.#lines.next();
    await this.#child.status;
    return JSON.parse(String(last.value)) as WitnessCount;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill();
    } catch {
      // ended
    }
    await this.#child.status;
  }
}

/** A topic only the witness uses: its own message there says its subscriptions work. */
const WITNESS_READY = "c8y-tunnel-bench/witness";

/** The witness process: subscribes, counts, prints the counts when stdin ends. */
async function witnessMain(port: number): Promise<void> {
  let messages = 0;
  let valid = 0;
  const ready = Promise.withResolvers<void>();
  await using client = await RawPublisher.connect(port, (message) => {
    if (message.topic === WITNESS_READY) return ready.resolve();
    messages++;
    if (message.qos === 1) valid++;
  });
  await client.subscribe([
    TOPICS.smartRest,
    TOPICS.operations,
    TOPICS.handoff("+"),
    WITNESS_READY,
  ]);
  // mosquitto handles a client's packets in order: once this comes back,
  // the subscriptions before it are in place.
  await client.publish(WITNESS_READY, encoder.encode("ready"));
  await ready.promise;
  console.log("subscribed");
  for await (const _ of Deno.stdin.readable) { /* until the bench ends it */ }
  console.log(JSON.stringify({ messages, valid } satisfies WitnessCount));
}

// ------------------------------------------------------------------ the run

/** Sizes of one flood run. */
export interface FloodPlan {
  readonly payloads: number;
  readonly keys: number;
  readonly keyBytes: number;
  readonly idleSeconds: number;
  /** A probe (a valid request) is published every this many payloads. */
  readonly probeEvery: number;
  /** mosquitto's `max_queued_messages` (undefined: its default, 1000). */
  readonly brokerQueue?: number;
}

/** The full plan (issue 11's flood). */
export const FULL_FLOOD: FloodPlan = {
  payloads: 20_000,
  keys: 200,
  keyBytes: MiB,
  idleSeconds: 60,
  probeEvery: 500,
};

/** The quick plan (a smoke run, about half a minute). */
export const QUICK_FLOOD: FloodPlan = {
  payloads: 2_000,
  keys: 20,
  keyBytes: MiB,
  idleSeconds: 5,
  probeEvery: 100,
};

/** What one phase measured. */
export interface PhaseResult {
  readonly name: string;
  readonly messages: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly base: ProcSample;
  readonly peakRss: number;
  readonly peakAnon: number;
  readonly settled: ProcSample;
  readonly logLines: number;
  readonly mainStatuses: number;
  readonly probes: ProbeResult[];
  /** The probe published right behind the last hostile payload. */
  readonly last: ProbeResult;
  /** CPU time the agent used while the attacker sent, s. */
  readonly cpu: number;
  /** What a subscriber that does nothing got meanwhile. */
  readonly witness: WitnessCount;
  /** mosquitto said it dropped messages for the agent (its queue was full). */
  readonly brokerDropped: boolean;
  /** mosquitto's peak RSS during the phase, bytes. */
  readonly brokerPeakRss: number;
}

async function settleBaseline(pid: number): Promise<ProcSample> {
  // A started agent at rest: one second after its first request.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  return procSample(pid);
}

async function idle(seconds: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
}

/** Runs one phase against a fresh agent: `messages` from the attacker, probes between. */
async function phase(
  rig: HostileRig,
  name: string,
  messages: Iterable<HostileMessage>,
  plan: FloodPlan,
): Promise<PhaseResult> {
  await using agent = await startAgent(rig, name);
  const agentClient = `c8y-tunnel-${name}`;
  await using watch = await StatusWatch.connect(rig.broker.port);
  await using attacker = await RawPublisher.connect(rig.broker.port);
  let probes = 0;
  // Warm the session path once, then take the baseline.
  const warm = await probe(
    rig,
    watch,
    probes++,
    (t, p, q) => attacker.publish(t, p, q),
  );
  if (!Number.isFinite(warm.successfulMs)) {
    throw new Error(`${name}: the warm-up request failed: ${warm.error}`);
  }
  await using witness = await Witness.start(rig.broker.port);
  const base = await settleBaseline(agent.pid);
  const logBase = agent.logLines();
  const statusBase = watch.mainStatuses;
  const dropsBase = rig.drops.get(agentClient) ?? 0;
  resetPeak(agent.pid);
  const sampler = new Sampler(agent.pid, 20);
  resetPeak(rig.broker.pid!);
  const brokerSampler = new Sampler(rig.broker.pid!, 20);
  // Valid requests queue here and go out between hostile payloads.
  const pending: { topic: string; payload: Uint8Array; sent: () => void }[] =
    [];
  const send = (topic: string, payload: Uint8Array) =>
    new Promise<void>((sent) => pending.push({ topic, payload, sent }));
  const flush = async () => {
    for (const p of pending.splice(0)) {
      await attacker.publish(p.topic, p.payload, 1);
      p.sent();
    }
  };
  // Each probe on its own: a lost one does not hold back the next.
  const probing: Promise<ProbeResult>[] = [];
  const started = performance.now();
  const cpuBase = cpuSeconds(agent.pid);
  let index = 0;
  for (const message of messages) {
    if (index++ % plan.probeEvery === plan.probeEvery - 1) {
      probing.push(probe(rig, watch, probes++, send));
    }
    await flush();
    await attacker.publish(message.topic, message.payload);
  }
  await flush();
  // The last valid request right behind the last hostile payload (probes
  // still getting their connection key go out behind it).
  const lastProbe = probe(
    rig,
    watch,
    probes++,
    (t, p, q) => attacker.publish(t, p, q),
  );
  const seconds = (performance.now() - started) / 1000;
  const cpu = cpuSeconds(agent.pid) - cpuBase;
  const pendingOut = (async () => {
    // Probes whose 530 was not yet queued when the flood ended.
    while (probing.length > 0 || pending.length > 0) {
      await flush();
      if (
        (await Promise.race([Promise.all(probing), idle(0.05)])) !== undefined
      ) break;
    }
  })();
  const last = await lastProbe;
  const results = await Promise.all(probing);
  await pendingOut;
  brokerSampler.stop();
  const seen = await witness.count();
  await idle(plan.idleSeconds);
  sampler.stop();
  const settled = procSample(agent.pid);
  return {
    name,
    messages: attacker.count,
    bytes: attacker.bytes,
    seconds,
    base,
    peakRss: sampler.peakRss,
    peakAnon: sampler.peakAnon,
    settled,
    logLines: agent.logLines() - logBase,
    mainStatuses: watch.mainStatuses - statusBase,
    probes: results,
    last,
    witness: seen,
    cpu,
    brokerDropped: (rig.drops.get(agentClient) ?? 0) > dropsBase,
    brokerPeakRss: brokerSampler.peakRss,
  };
}

/** Runs both phases of `plan`. */
export async function runFlood(plan: FloodPlan): Promise<PhaseResult[]> {
  await using rig = await startRig({
    brokerConfig: plan.brokerQueue === undefined
      ? []
      : [`max_queued_messages ${plan.brokerQueue}`],
  });
  const keys = (function* () {
    for (let i = 0; i < plan.keys; i++) {
      yield {
        kind: "big" as const,
        topic: TOPICS.smartRest,
        payload: hugeKey530(i, plan.keyBytes, rig.targetPort),
      };
    }
  })();
  const results: PhaseResult[] = [];
  if (plan.keys > 0) {
    console.error(
      `flood: phase keys (${plan.keys} x ${mib(plan.keyBytes)} MiB keys)`,
    );
    results.push(
      await phase(rig, "keys", keys, { ...plan, probeEvery: Infinity }),
    );
  }
  console.error(`flood: phase flood (${plan.payloads} payloads)`);
  results.push(await phase(rig, "flood", hostileMessages(plan.payloads), plan));
  return results;
}

/** Valid requests of phase `r` that got their 503. */
function servedCount(r: PhaseResult): number {
  return [...r.probes, r.last].filter((p) => Number.isFinite(p.successfulMs))
    .length;
}

/**
 * "met" when every valid request was served; when not, whether mosquitto
 * dropped messages for the agent (its queue limit: the request never
 * reached the agent) or the agent missed a request it got.
 */
function servedVerdict(r: PhaseResult): string {
  if (servedCount(r) === r.probes.length + 1) return "met";
  return r.brokerDropped ? "lost at the broker" : "MISSED";
}

function brokerQueueText(plan: FloodPlan): string {
  return plan.brokerQueue === undefined
    ? "mosquitto's default max_queued_messages 1000"
    : `max_queued_messages ${plan.brokerQueue}`;
}

function ms(values: number[]): string {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return "—";
  return `${fmt(percentile(finite, 0.5), 0)} / ${fmt(Math.max(...finite), 0)}`;
}

/** The report of a flood run (Markdown), with the targets of issue 11. */
export function floodReport(results: PhaseResult[], plan: FloodPlan): string {
  const rows = results.map((r) => {
    const served = servedCount(r);
    return [
      r.name,
      `${r.messages} / ${fmt(mib(r.bytes), 0)} MiB in ${fmt(r.seconds, 1)} s`,
      fmt(r.cpu, 2),
      fmt(mib(r.base.rss), 1),
      fmt(mib(r.peakRss - r.base.rss), 1),
      fmt(mib(r.peakAnon - r.base.anon), 1),
      fmt(mib(r.settled.rss - r.base.rss), 1),
      fmt(mib(r.settled.anon - r.base.anon), 1),
      `${r.settled.fds} (${r.base.fds})`,
      `${served} / ${r.witness.valid} / ${r.probes.length + 1}`,
      r.brokerDropped ? "yes" : "no",
      fmt(mib(r.brokerPeakRss), 1),
      ms(r.probes.map((p) => p.executingMs)),
      ms(r.probes.map((p) => p.successfulMs)),
      `${fmt(r.last.executingMs, 0)} / ${fmt(r.last.successfulMs, 0)}`,
      String(r.logLines),
      String(r.mainStatuses),
    ];
  });
  const flood = results.find((r) => r.name === "flood");
  const keys = results.find((r) => r.name === "keys");
  const check = (what: string, value: number, limit: number, unit: string) => [
    what,
    `${fmt(value, 1)} ${unit}`,
    `<= ${limit} ${unit}`,
    value <= limit ? "met" : "MISSED",
  ];
  const targets: string[][] = [];
  if (flood) {
    targets.push(
      check(
        "flood: peak RSS growth",
        mib(flood.peakRss - flood.base.rss),
        64,
        "MiB",
      ),
      check(
        `flood: settled RSS growth after ${plan.idleSeconds} s idle`,
        mib(flood.settled.rss - flood.base.rss),
        16,
        "MiB",
      ),
      check(
        "flood: fds over baseline",
        flood.settled.fds - flood.base.fds,
        0,
        "fds",
      ),
      check(
        "flood: last valid 530 -> 503",
        flood.last.successfulMs / 1000,
        5,
        "s",
      ),
      [
        `flood: valid requests served throughout (${brokerQueueText(plan)})`,
        `${servedCount(flood)}/${flood.probes.length + 1}`,
        "all",
        servedVerdict(flood),
      ],
    );
  }
  if (keys) {
    targets.push(
      check(
        `keys: settled RSS growth after ${plan.idleSeconds} s idle`,
        mib(keys.settled.rss - keys.base.rss),
        4,
        "MiB",
      ),
    );
  }
  return [
    table([
      "phase",
      "sent",
      "agent CPU meanwhile, s",
      "RSS base, MiB",
      "peak RSS growth, MiB",
      "peak RssAnon growth, MiB",
      `settled RSS growth (${plan.idleSeconds} s idle), MiB`,
      "settled RssAnon growth, MiB",
      "fds (base)",
      "valid 530s: agent served / witness got / sent",
      "broker dropped for the agent",
      "broker peak RSS, MiB",
      "501 ms p50 / max",
      "503 ms p50 / max",
      "last 530 behind the flood: 501 / 503 ms",
      "agent log lines",
      "main-device status lines",
    ], rows),
    "",
    table(["target", "measured", "limit", "result"], targets),
    "",
    ...results.flatMap((r) => {
      const failed = r.probes.flatMap((p, i) => p.error ? [i + 1] : []);
      return [
        ...(failed.length > 0
          ? [`- ${r.name}: requests not served: probe-${failed.join(", ")}`]
          : []),
        ...[...r.probes, r.last].filter((p) => p.error).slice(0, 3).map((p) =>
          `- ${r.name}: ${p.error}`
        ),
      ];
    }),
  ].join("\n");
}

/** `deno run -A bench/flood.ts` / `deno task bench --flood`; returns the exit code. */
export async function floodMain(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      flood: { type: "boolean", default: false },
      payloads: { type: "string" },
      keys: { type: "string" },
      idle: { type: "string" },
      out: { type: "string" },
      "no-priority": { type: "boolean", default: false },
      "broker-queue": { type: "string" },
      witness: { type: "string" },
    },
  });
  if (values.witness !== undefined) {
    await witnessMain(Number(values.witness));
    return 0;
  }
  const base = values.quick ? QUICK_FLOOD : FULL_FLOOD;
  const number = (text: string | undefined, fallback: number, what: string) => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0) {
      throw new Error(`--${what} ${text} is invalid: expected a whole number`);
    }
    return n;
  };
  const plan: FloodPlan = {
    ...base,
    payloads: number(values.payloads, base.payloads, "payloads"),
    keys: number(values.keys, base.keys, "keys"),
    idleSeconds: number(values.idle, base.idleSeconds, "idle"),
    ...(values["broker-queue"] === undefined ? {} : {
      brokerQueue: number(values["broker-queue"], 0, "broker-queue"),
    }),
  };
  const results = await runFlood(plan);
  const body = [
    `Flood: ${plan.payloads} hostile payloads; ${plan.keys} x ${
      mib(plan.keyBytes)
    } MiB keys; ${plan.idleSeconds} s idle; mosquitto (bench/rig.ts, ${
      brokerQueueText(plan)
    }); a valid request every ${plan.probeEvery} payloads; agent \`deno run -A ${v8FlagsArg()} main.ts run\` at log level warn.`,
    "",
    floodReport(results, plan),
  ].join("\n");
  console.log(body);
  if (values.out) await Deno.writeTextFile(values.out, body + "\n");
  const flood = results.find((r) => r.name === "flood");
  return flood && servedVerdict(flood) !== "MISSED" ? 0 : 1;
}

if (import.meta.main) Deno.exit(await floodMain(Deno.args));
