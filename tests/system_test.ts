/**
 * System tests with real programs: mosquitto as the broker, OpenSSH's sshd
 * as the target and the ssh client on the user's side, the agent as its own
 * process started the way users start it. Skipped (with a SKIP line) where
 * the programs are not installed; CI installs them.
 */
import assert from "node:assert/strict";
import { RemoteAccessSim, smartRest530 } from "../lib/sim/cloud.ts";
import { Observer } from "./harness.ts";
import {
  freePort,
  installed,
  type Ran,
  runCommand,
  spawnDaemon,
  sshArgs,
  type Sshd,
  type Started,
  startMosquitto,
  startSshd,
} from "./system_helpers.ts";

const HAVE_MOSQUITTO = installed("/usr/sbin/mosquitto");
const HAVE_SSH = installed("/usr/sbin/sshd") && installed("/usr/bin/ssh");
const IS_ROOT = Deno.uid() === 0;
if (!HAVE_MOSQUITTO) {
  console.log("SKIP: system tests need mosquitto (apt-get install mosquitto)");
}
if (!HAVE_SSH) {
  console.log("SKIP: ssh tests need openssh-server and openssh-client");
}
if (HAVE_SSH && !IS_ROOT) console.log("SKIP: ssh tests run sshd and need root");

const HEALTH = "te/device/main/service/c8y-tunnel/status/health";

/** Everything a system test runs, stopped in reverse order. */
class SystemRig implements AsyncDisposable {
  readonly dir = Deno.makeTempDirSync({ prefix: "c8y-tunnel-system-" });
  readonly brokerPort = freePort();
  readonly #cleanups: (() => Promise<unknown> | void)[] = [];
  mosquitto!: Started;
  sim!: RemoteAccessSim;
  observer!: Observer;
  agent!: Started;

  async start(options: { allow: string[] }): Promise<this> {
    this.mosquitto = await startMosquitto(this.dir, this.brokerPort);
    this.#cleanups.push(() => this.mosquitto.stop());
    this.sim = await RemoteAccessSim.start();
    this.#cleanups.push(() => this.sim.close());
    this.observer = await Observer.connect(this.brokerPort, [
      "c8y/s/us",
      HEALTH,
    ]);
    this.#cleanups.push(() => this.observer.close());
    const config = `${this.dir}/config.toml`;
    await Deno.writeTextFile(
      config,
      `[mqtt]
port = ${this.brokerPort}
[c8y]
url = "${this.sim.url}"
device_id = "system-device"
auth = "none"
[tunnel]
allow = ${JSON.stringify(options.allow)}
[tedge]
config_path = "${this.dir}/no-tedge.toml"
[log]
level = "info"
`,
    );
    // tedge.config_path must exist when set explicitly; an empty tedge.toml is fine.
    await Deno.writeTextFile(`${this.dir}/no-tedge.toml`, "");
    this.agent = spawnDaemon(config);
    this.#cleanups.push(() => this.agent.stop("SIGKILL"));
    await this.waitForHealth("up");
    return this;
  }

  /** Waits for a health message with this status seen after the call. */
  async waitForHealth(
    status: "up" | "down",
    since = this.observer.seen.length,
  ): Promise<void> {
    await this.observer.waitFor((m) =>
      this.observer.seen.indexOf(m) >= since && m.topic === HEALTH &&
      (JSON.parse(m.payload) as { status: string }).status === status
    );
  }

  /** A local listener like Cumulocity's local proxy: each connection -> a 530 for host:port. */
  listenFor(host: string, port: number): Promise<number> {
    const listener = this.sim.listen({
      onRequest: (key) =>
        this.observer.publish(
          "c8y/s/ds",
          smartRest530("system-device", host, port, key),
        ),
    });
    this.#cleanups.push(() => listener.close());
    return Promise.resolve(listener.port);
  }

  defer(fn: () => Promise<unknown> | void): void {
    this.#cleanups.push(fn);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const fn of this.#cleanups.reverse()) await fn();
    await Deno.remove(this.dir, { recursive: true });
  }
}

function runSsh(sshd: Sshd, port: number, command: string): Promise<Ran> {
  return runCommand("ssh", sshArgs(sshd, port, command));
}

Deno.test({
  name:
    "system: a real ssh client runs a command on a real sshd through the agent and mosquitto",
  ignore: !HAVE_MOSQUITTO || !HAVE_SSH || !IS_ROOT,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = new SystemRig();
    const sshd = await startSshd(rig.dir);
    rig.defer(() => sshd.stop());
    await rig.start({ allow: [`127.0.0.1:${sshd.port}`] });
    const port = await rig.listenFor("127.0.0.1", sshd.port);
    const result = await runSsh(
      sshd,
      port,
      "echo hello-through-the-tunnel; head -c 1000000 /dev/zero | sha256sum",
    );
    assert.equal(
      result.code,
      0,
      `ssh failed: ${result.stderr}\nagent: ${rig.agent.output()}`,
    );
    assert.match(result.stdout, /hello-through-the-tunnel/);
    assert.match(
      result.stdout,
      /d29751f2649b32ff572b5e0a9f541ea660a50f94ff0beedfb0b692b924cc8025/,
    );
    const statuses = rig.observer.on("c8y/s/us");
    assert.deepEqual(statuses.slice(0, 2), [
      "501,c8y_RemoteAccessConnect",
      "503,c8y_RemoteAccessConnect",
    ]);
  },
});

Deno.test({
  name:
    "system: an open ssh session survives a mosquitto restart, and a new request works after it",
  ignore: !HAVE_MOSQUITTO || !HAVE_SSH || !IS_ROOT,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = new SystemRig();
    const sshd = await startSshd(rig.dir);
    rig.defer(() => sshd.stop());
    await rig.start({ allow: [`127.0.0.1:${sshd.port}`] });
    const port = await rig.listenFor("127.0.0.1", sshd.port);

    const ssh = new Deno.Command("ssh", {
      args: sshArgs(sshd, port, 'while read line; do echo "got:$line"; done'),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = ssh.stdin.getWriter();
    const lines = ssh.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    const nextLine = async (): Promise<string> => {
      while (!buffered.includes("\n")) {
        const { value, done } = await lines.read();
        if (done) {
          throw new Error(`ssh ended early; agent: ${rig.agent.output()}`);
        }
        buffered += value;
      }
      const at = buffered.indexOf("\n");
      const line = buffered.slice(0, at);
      buffered = buffered.slice(at + 1);
      return line;
    };
    await writer.write(new TextEncoder().encode("one\n"));
    assert.equal(await nextLine(), "got:one");

    // Restart the broker under the open session.
    const before = rig.observer.seen.length;
    await rig.mosquitto.stop();
    rig.mosquitto = await startMosquitto(rig.dir, rig.brokerPort);
    await writer.write(new TextEncoder().encode("two\n"));
    assert.equal(
      await nextLine(),
      "got:two",
      "the open session kept working across the restart",
    );
    await rig.waitForHealth("up", before);

    const result = await runSsh(sshd, port, "echo after-restart");
    assert.equal(
      result.code,
      0,
      `ssh failed: ${result.stderr}\nagent: ${rig.agent.output()}`,
    );
    assert.match(result.stdout, /after-restart/);

    await writer.close();
    await lines.cancel();
    await ssh.stderr.cancel();
    const status = await ssh.status;
    assert.equal(status.code, 0);
  },
});

Deno.test({
  name:
    "system: SIGTERM closes sessions, publishes health down and exits 0 within 5 s",
  ignore: !HAVE_MOSQUITTO,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = new SystemRig();
    const echoServer = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    rig.defer(() => echoServer.close());
    const echoPort = (echoServer.addr as Deno.NetAddr).port;
    const targetEnded = (async () => {
      const conn = await echoServer.accept();
      const buffer = new Uint8Array(1024);
      while (
        (await conn.read(buffer)) !== null
      ) { /* read until the agent closes */ }
      conn.close();
    })();
    await rig.start({ allow: [`127.0.0.1:${echoPort}`] });
    const session = rig.sim.openSession();
    await rig.observer.publish(
      "c8y/s/ds",
      smartRest530("system-device", "127.0.0.1", echoPort, session.key),
    );
    await session.connected;
    await rig.observer.waitFor((m) =>
      m.payload === "503,c8y_RemoteAccessConnect"
    );

    const before = rig.observer.seen.length;
    const started = performance.now();
    const status = await rig.agent.stop("SIGTERM");
    const elapsed = performance.now() - started;
    assert.equal(status.code, 0, rig.agent.output());
    assert.ok(elapsed < 5000, `exit took ${elapsed} ms`);
    const closed = await session.closed;
    assert.deepEqual(closed, {
      code: 1000,
      reason: "session closed by the device",
    });
    await targetEnded;
    await rig.waitForHealth("down", before);
  },
});
