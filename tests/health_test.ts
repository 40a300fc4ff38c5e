/**
 * thin-edge health of the daemon on a real mosquitto (retained messages and
 * last will are the broker's job): retained `up` with pid and time, service
 * registration, `down` on SIGTERM, the last will `down` on SIGKILL, and a
 * configurable topic root and service name.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Observer } from "./harness.ts";
import {
  freePort,
  installed,
  spawnDaemon,
  type Started,
  startMosquitto,
} from "./system_helpers.ts";

const HAVE_MOSQUITTO = installed("/usr/sbin/mosquitto");
if (!HAVE_MOSQUITTO) console.log("SKIP: mosquitto not installed");

/** mosquitto + the agent as its own process, torn down together. */
class HealthRig implements AsyncDisposable {
  dir = "";
  port = 0;
  mosquitto!: Started;
  readonly #cleanups: (() => Promise<unknown> | unknown)[] = [];

  async start(): Promise<void> {
    this.dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-health-" });
    this.#cleanups.push(() => Deno.remove(this.dir, { recursive: true }));
    this.port = freePort();
    this.mosquitto = await startMosquitto(this.dir, this.port);
    this.#cleanups.push(() => this.mosquitto.stop());
  }

  async observer(topics: string[]): Promise<Observer> {
    const observer = await Observer.connect(this.port, topics);
    this.#cleanups.push(() => observer.close());
    return observer;
  }

  /** Starts `c8y-tunnel run` with `health` settings (TOML lines of [health]). */
  async agent(health = ""): Promise<Started> {
    const config = join(this.dir, "config.toml");
    const tedge = join(this.dir, "tedge.toml");
    await Deno.writeTextFile(tedge, "");
    await Deno.writeTextFile(
      config,
      `[mqtt]\nhost = "127.0.0.1"\nport = ${this.port}\n` +
        `[c8y]\nurl = "http://127.0.0.1:1"\ndevice_id = "health-device"\nauth = "none"\n` +
        `[tedge]\nconfig_path = "${tedge}"\n[health]\n${health}\n`,
    );
    const agent = spawnDaemon(config);
    this.#cleanups.push(() => agent.stop("SIGKILL"));
    return agent;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const fn of this.#cleanups.reverse()) await fn();
  }
}

const HEALTH = "te/device/main/service/c8y-tunnel/status/health";
const SERVICE = "te/device/main/service/c8y-tunnel";

function parse(payload: string): Record<string, unknown> {
  return JSON.parse(payload) as Record<string, unknown>;
}

Deno.test({
  name:
    "health: retained up with pid and time and a retained service registration, seen by a late subscriber",
  ignore: !HAVE_MOSQUITTO,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = new HealthRig();
    await rig.start();
    const live = await rig.observer([HEALTH]);
    const before = Math.floor(Date.now() / 1000);
    const agent = await rig.agent();
    const up = await live.waitFor((m) => m.topic === HEALTH);
    const body = parse(up.payload);
    assert.equal(body.status, "up");
    assert.equal(body.pid, agent.process.pid);
    assert.ok(
      typeof body.time === "number" && body.time >= before &&
        body.time <= Math.ceil(Date.now() / 1000),
      up.payload,
    );

    // Retained: a client that subscribes afterwards gets both at once.
    const late = await rig.observer([HEALTH, SERVICE]);
    const health = await late.waitFor((m) => m.topic === HEALTH);
    assert.equal(parse(health.payload).status, "up");
    const service = await late.waitFor((m) => m.topic === SERVICE);
    assert.deepEqual(parse(service.payload), {
      "@parent": "device/main//",
      "@type": "service",
      name: "c8y-tunnel",
      type: "service",
    });
  },
});

Deno.test({
  name:
    "health: SIGTERM publishes down, retained, and the agent exits 0 within 5 s",
  ignore: !HAVE_MOSQUITTO,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = new HealthRig();
    await rig.start();
    const live = await rig.observer([HEALTH]);
    const agent = await rig.agent();
    await live.waitFor((m) =>
      m.topic === HEALTH && parse(m.payload).status === "up"
    );
    const started = performance.now();
    const status = await agent.stop("SIGTERM");
    assert.equal(status.code, 0, agent.output());
    assert.ok(performance.now() - started < 5000);
    await live.waitFor((m) =>
      m.topic === HEALTH && parse(m.payload).status === "down"
    );
    const late = await rig.observer([HEALTH]);
    const retained = await late.waitFor((m) => m.topic === HEALTH);
    assert.deepEqual(parse(retained.payload), {
      status: "down",
      pid: agent.process.pid,
    });
  },
});

Deno.test({
  name:
    'health: SIGKILL leaves the last will {"status":"down","pid":…}, retained',
  ignore: !HAVE_MOSQUITTO,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = new HealthRig();
    await rig.start();
    const live = await rig.observer([HEALTH]);
    const agent = await rig.agent();
    await live.waitFor((m) =>
      m.topic === HEALTH && parse(m.payload).status === "up"
    );
    await agent.stop("SIGKILL");
    const down = await live.waitFor((m) =>
      m.topic === HEALTH && parse(m.payload).status === "down"
    );
    const expected = { status: "down", pid: agent.process.pid };
    assert.deepEqual(parse(down.payload), expected);
    const late = await rig.observer([HEALTH]);
    const retained = await late.waitFor((m) => m.topic === HEALTH);
    assert.deepEqual(parse(retained.payload), expected);
  },
});

Deno.test({
  name: "health: topic root and service name come from [health]",
  ignore: !HAVE_MOSQUITTO,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = new HealthRig();
    await rig.start();
    const service = "acme/device/main/service/tunnel-b";
    const live = await rig.observer([`${service}/status/health`, service]);
    await rig.agent('topic_root = "acme"\nservice_name = "tunnel-b"');
    const up = await live.waitFor((m) =>
      m.topic === `${service}/status/health`
    );
    assert.equal(parse(up.payload).status, "up");
    const registration = await live.waitFor((m) => m.topic === service);
    assert.equal(parse(registration.payload).name, "tunnel-b");
  },
});
