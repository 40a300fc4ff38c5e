/**
 * thin-edge plugin mode: the operation file (`init`, `init --daemon`,
 * `cleanup`) and `connect "530,…"` as tedge-mapper-c8y runs it: exit 0 once
 * both legs are up with the session going on after the command (and the
 * process that ran it) is gone, exit 1 with one reason line otherwise, and
 * the handoff to a running daemon.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parse as parseToml } from "smol-toml";
import { Agent } from "../lib/daemon/agent.ts";
import { runConnect } from "../lib/commands/connect.ts";
import { HandoffServer } from "../lib/handoff/server.ts";
import { topicsFor } from "../lib/mqtt/topics.ts";
import type { Config } from "../lib/config/config.ts";
import { logger } from "../lib/util/log.ts";
import {
  inspectOperationFile,
  isOurCommand,
  operationFilePath,
  pluginCommand,
  removeOperationFile,
  writeOperationFile,
} from "../lib/commands/operation_file.ts";
import {
  echo,
  pseudoRandomBytes,
  readBytes,
  type Rig,
  rigToml,
  sha256,
  startRig,
  tcpServer,
  testConfig,
} from "./harness.ts";
import { cliWords, MAIN, runCli } from "./system_helpers.ts";

/** A temp dir with an (empty) tedge.toml, removed at the end. */
async function tedgeDir(): Promise<
  { dir: string; tedgeToml: string } & AsyncDisposable
> {
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-plugin-" });
  const tedgeToml = join(dir, "tedge.toml");
  await Deno.writeTextFile(tedgeToml, "");
  return {
    dir,
    tedgeToml,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function configIn(tedgeToml: string, extra = ""): Config {
  return testConfig(`
[c8y]
url = "http://127.0.0.1:1"
device_id = "test-device"
auth = "none"
[tedge]
config_path = "${tedgeToml}"
${extra}
`);
}

// ---------------------------------------------------------------- operation file

Deno.test("writeOperationFile() writes plugin mode like thin-edge's plugin: [exec] on 530, mode 0644", async () => {
  await using tmp = await tedgeDir();
  const config = configIn(tmp.tedgeToml);
  const result = await writeOperationFile(config, {
    command: "/usr/bin/c8y-tunnel connect",
    owner: null,
  });
  const path = join(tmp.dir, "operations", "c8y", "c8y_RemoteAccessConnect");
  assert.equal(result.path, path);
  assert.equal(operationFilePath(config), path);
  const doc = parseToml(await Deno.readTextFile(path)) as {
    exec: Record<string, unknown>;
  };
  assert.deepEqual({ ...doc.exec }, {
    command: "/usr/bin/c8y-tunnel connect",
    topic: "c8y/s/ds",
    on_message: "530",
    // connect_timeout 10 s + jwt_timeout 5 s + 15 s
    timeout: 30,
  });
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o644);
  for (const dir of result.createdDirs) {
    assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o755);
  }
  assert.deepEqual(await inspectOperationFile(config), {
    kind: "plugin",
    path,
    command: "/usr/bin/c8y-tunnel connect",
  });
});

Deno.test("writeOperationFile() writes daemon mode without an [exec] table; plugin mode's topic is c8y/s/ds whatever the prefix (each mapper reads it as its own)", async () => {
  await using tmp = await tedgeDir();
  const config = configIn(tmp.tedgeToml, '[mqtt]\ntopic_prefix = "c8y2"');
  await writeOperationFile(config, { command: null, owner: null });
  const text = await Deno.readTextFile(operationFilePath(config));
  assert.deepEqual(Object.keys(parseToml(text)), []);
  assert.equal((await inspectOperationFile(config)).kind, "daemon");

  await writeOperationFile(config, {
    command: "/usr/bin/c8y-tunnel connect",
    owner: null,
  });
  const doc = parseToml(await Deno.readTextFile(operationFilePath(config))) as {
    exec: { topic: string };
  };
  assert.equal(doc.exec.topic, "c8y/s/ds");
});

Deno.test({
  name:
    "writeOperationFile() gives what it creates to the owner and never re-owns an existing directory",
  ignore: Deno.uid() !== 0,
  async fn() {
    await using tmp = await tedgeDir();
    const config = configIn(tmp.tedgeToml);
    const nobody = { uid: 65534, gid: 65534 };
    // Fresh: both directories and the file are created for the owner.
    const first = await writeOperationFile(config, {
      command: null,
      owner: nobody,
    });
    assert.equal(first.createdDirs.length, 2);
    for (const path of [...first.createdDirs, first.path]) {
      const info = await Deno.stat(path);
      assert.equal(info.uid, 65534, path);
      assert.equal(info.gid, 65534, path);
    }
    // Existing directories (owned by root here) keep their owner.
    await Deno.remove(join(tmp.dir, "operations"), { recursive: true });
    await Deno.mkdir(join(tmp.dir, "operations", "c8y"), { recursive: true });
    const second = await writeOperationFile(config, {
      command: null,
      owner: nobody,
    });
    assert.deepEqual(second.createdDirs, []);
    assert.equal((await Deno.stat(join(tmp.dir, "operations"))).uid, 0);
    assert.equal((await Deno.stat(join(tmp.dir, "operations", "c8y"))).uid, 0);
    assert.equal((await Deno.stat(second.path)).uid, 65534);
  },
});

Deno.test("writeOperationFile() fails naming the directory when thin-edge's config dir is missing", async () => {
  await using tmp = await tedgeDir();
  const config = configIn(join(tmp.dir, "absent", "tedge.toml"));
  await assert.rejects(
    writeOperationFile(config, { command: null, owner: null }),
    /absent does not exist: install thin-edge, or set tedge.config_path/,
  );
});

Deno.test("removeOperationFile() removes the file, and a missing file is fine", async () => {
  await using tmp = await tedgeDir();
  const config = configIn(tmp.tedgeToml);
  assert.equal(await removeOperationFile(config), false);
  await writeOperationFile(config, { command: null, owner: null });
  assert.equal(await removeOperationFile(config), true);
  assert.equal((await inspectOperationFile(config)).kind, "none");
  assert.equal(await removeOperationFile(config), false);
});

Deno.test("inspectOperationFile() tells thin-edge's own plugin file and a broken file apart", async () => {
  await using tmp = await tedgeDir();
  const config = configIn(tmp.tedgeToml);
  const path = operationFilePath(config);
  await Deno.mkdir(join(tmp.dir, "operations", "c8y"), { recursive: true });
  await Deno.writeTextFile(
    path,
    '[exec]\ncommand = "/usr/bin/c8y-remote-access-plugin"\ntopic = "c8y/s/ds"\non_message = "530"\n',
  );
  assert.deepEqual(await inspectOperationFile(config), {
    kind: "foreign",
    path,
    command: "/usr/bin/c8y-remote-access-plugin",
    thinEdgePlugin: true,
  });
  await Deno.writeTextFile(path, "[exec\n");
  assert.equal((await inspectOperationFile(config)).kind, "invalid");
  await Deno.writeTextFile(path, "[exec]\ntopic = 'c8y/s/ds'\n");
  assert.equal((await inspectOperationFile(config)).kind, "invalid");
});

Deno.test("isOurCommand() recognises the binary and the from-source command lines", () => {
  assert.ok(isOurCommand("/usr/bin/c8y-tunnel connect"));
  assert.ok(isOurCommand("/usr/bin/c8y-tunnel connect --config /etc/x.toml"));
  assert.ok(
    isOurCommand(
      "/usr/bin/deno run --allow-all /opt/c8y-tunnel/main.ts connect",
    ),
  );
  assert.ok(!isOurCommand("/usr/bin/c8y-remote-access-plugin"));
  assert.ok(!isOurCommand("/usr/bin/c8y-tunnel"));
});

Deno.test("pluginCommand() adds --config only for a non-default file and quotes words with spaces", () => {
  const self = (args: readonly string[]) => ({
    command: "/usr/bin/c8y-tunnel",
    args,
  });
  assert.equal(pluginCommand(null, self), "/usr/bin/c8y-tunnel connect");
  assert.equal(
    pluginCommand("/etc/c8y-tunnel/config.toml", self),
    "/usr/bin/c8y-tunnel connect",
  );
  assert.equal(
    pluginCommand("/srv/tunnel.toml", self),
    "/usr/bin/c8y-tunnel connect --config /srv/tunnel.toml",
  );
  assert.equal(
    pluginCommand("/srv/my tunnel.toml", self),
    "/usr/bin/c8y-tunnel connect --config '/srv/my tunnel.toml'",
  );
});

Deno.test("c8y-tunnel init / init --daemon / cleanup write and remove the file from the command line", async () => {
  await using tmp = await tedgeDir();
  const configPath = join(tmp.dir, "config.toml");
  await Deno.writeTextFile(
    configPath,
    `[c8y]\nurl = "http://127.0.0.1:1"\ndevice_id = "d"\nauth = "none"\n[tedge]\nconfig_path = "${tmp.tedgeToml}"\n`,
  );
  const config = configIn(tmp.tedgeToml);

  const init = await runCli(["init", "--config", configPath]);
  assert.equal(init.code, 0, init.stderr);
  assert.match(init.stdout, /plugin mode/);
  const state = await inspectOperationFile(config);
  assert.equal(state.kind, "plugin");
  assert.ok(state.kind === "plugin");
  // From source, the mapper would run deno with this checkout's main.ts.
  assert.ok(
    state.command.includes(`${MAIN} connect --config ${configPath}`),
    state.command,
  );

  const daemon = await runCli(["init", "--daemon", "--config", configPath]);
  assert.equal(daemon.code, 0, daemon.stderr);
  assert.equal((await inspectOperationFile(config)).kind, "daemon");

  const cleanup = await runCli(["cleanup", "--config", configPath]);
  assert.equal(cleanup.code, 0, cleanup.stderr);
  assert.match(cleanup.stdout, /^removed /);
  const again = await runCli(["cleanup", "--config", configPath]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /does not exist; nothing to remove/);
});

// ---------------------------------------------------------------- connect

/** Writes a config file for `connect` against the rig and returns its path. */
async function connectConfig(
  rig: Rig,
  dir: string,
  options: { allow?: string[]; tunnel?: string } = {},
): Promise<string> {
  const path = join(dir, "config.toml");
  const tedgeToml = join(dir, "tedge.toml");
  await Deno.writeTextFile(tedgeToml, "");
  await Deno.writeTextFile(
    path,
    rigToml(rig.broker.port, rig.sim.url, options) +
      `[tedge]\nconfig_path = "${tedgeToml}"\n`,
  );
  return path;
}

/** Kills the detached session process named in connect's stdout, if still alive. */
function killSession(stdout: string): void {
  const pid = /in process (\d+)/.exec(stdout)?.[1];
  if (pid === undefined) return;
  try {
    Deno.kill(Number(pid), "SIGKILL");
  } catch {
    // Already ended with its session.
  }
}

Deno.test({
  name:
    "c8y-tunnel connect exits 0 once both legs are up, and the session outlives it and its parent's process group",
  // The detached session is another process; its end is awaited through the simulator.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = await startRig();
    await using tmp = await tedgeDir();
    const target = tcpServer(echo);
    rig.defer(() => target.close());
    const configPath = await connectConfig(rig, tmp.dir);
    const session = rig.sim.openSession();
    let cloudUp = false;
    session.connected.then(() => cloudUp = true, () => {});
    const line = `530,test-device,127.0.0.1,${target.port},${session.key}`;

    // Like tedge-mapper-c8y: a parent process whose whole group is killed
    // afterwards (as a service restart would do).
    const quoted = cliWords("connect", "--config", configPath, line)
      .map((word) => `'${word}'`).join(" ");
    const mapper = new Deno.Command("sh", {
      args: ["-c", `${quoted}; echo "exit=$?"; exec sleep 60`],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      detached: true,
    }).spawn();
    let stdout = "";
    rig.defer(() => killSession(stdout));
    const reader = mapper.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    while (!/exit=\d+/.test(stdout)) {
      const { value, done } = await reader.read();
      if (done) break;
      stdout += value;
    }
    assert.match(stdout, /exit=0/, stdout);
    assert.ok(cloudUp, "connect exited 0 before the cloud leg was up");
    assert.match(
      stdout,
      /connected to 127\.0\.0\.1:\d+ \(session .* in process \d+\)/,
    );
    assert.equal(target.accepted(), 1);

    Deno.kill(-mapper.pid, "SIGKILL");
    await mapper.status;
    await reader.cancel();
    await mapper.stderr.cancel();

    // The session still carries bytes both ways.
    const data = pseudoRandomBytes(1024 * 1024, 3);
    const received = session.received.getReader();
    const back = readBytes(received, data.length);
    session.send(data);
    assert.equal(await sha256(await back), await sha256(data));
    received.releaseLock();
    // No status of its own: the mapper reports.
    assert.deepEqual(rig.observer.on("c8y/s/us"), []);
    session.close();
    await session.closed;
  },
});

Deno.test("c8y-tunnel connect exits 1 with one reason line for a target outside tunnel.allow, without connecting", async () => {
  await using rig = await startRig();
  await using tmp = await tedgeDir();
  const configPath = await connectConfig(rig, tmp.dir, {
    allow: ["127.0.0.1:22"],
  });
  const result = await runCli([
    "connect",
    "--config",
    configPath,
    "530,test-device,127.0.0.2,2222,key-not-allowed",
  ]);
  assert.equal(result.code, 1);
  const lines = result.stderr.trim().split("\n");
  assert.equal(
    lines.at(-1),
    "target 127.0.0.2:2222 is not in tunnel.allow",
  );
  assert.equal(rig.sim.handshakes.length, 0);
  assert.deepEqual(rig.observer.on("c8y/s/us"), []);
});

Deno.test({
  name:
    "c8y-tunnel connect exits 1 with the reason when the target refuses, and leaves no session process",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = await startRig();
    await using tmp = await tedgeDir();
    const configPath = await connectConfig(rig, tmp.dir);
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (closed.addr as Deno.NetAddr).port;
    closed.close();
    const session = rig.sim.openSession();
    const result = await runCli([
      "connect",
      "--config",
      configPath,
      `530,test-device,127.0.0.1,${port},${session.key}`,
    ]);
    killSession(result.stdout);
    assert.equal(result.code, 1, result.stdout);
    assert.equal(
      result.stderr.trim().split("\n").at(-1),
      `cannot connect to target 127.0.0.1:${port}: connection refused`,
    );
    assert.doesNotMatch(result.stdout, /in process/);
    await session[Symbol.asyncDispose]();
  },
});

Deno.test("c8y-tunnel connect exits 1 for a line that is not a 530", async () => {
  const result = await runCli([
    "connect",
    "--config",
    "/nonexistent.toml",
    "x",
  ]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /config file does not exist/);
  await using rig = await startRig();
  await using tmp = await tedgeDir();
  const configPath = await connectConfig(rig, tmp.dir);
  const garbage = await runCli(["connect", "--config", configPath, "71,abc"]);
  assert.equal(garbage.code, 1);
  assert.match(
    garbage.stderr.trim().split("\n").at(-1) ?? "",
    /^not a remote access request/,
  );
});

// ---------------------------------------------------------------- handoff

/** A daemon in plugin mode (no operations of its own) on the rig. */
async function pluginDaemon(rig: Rig, tunnel = ""): Promise<Agent> {
  const agent = new Agent(
    testConfig(rigToml(rig.broker.port, rig.sim.url, { tunnel })),
    { operations: false },
  );
  rig.defer(() => agent.close());
  await agent.ready;
  return agent;
}

Deno.test("runConnect() hands the request to a running daemon, which serves it without status lines and ignores 530s of its own", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const agent = await pluginDaemon(rig);
  const config = testConfig(rigToml(rig.broker.port, rig.sim.url));
  // In plugin mode the mapper runs connect for this; the daemon must not serve it too.
  const ignored = rig.sim.openSession();
  rig.defer(async () => await ignored[Symbol.asyncDispose]());
  await rig.request530(ignored.key, "127.0.0.1", target.port);
  const session = rig.sim.openSession();
  const out: string[] = [];
  const err: string[] = [];
  const code = await runConnect(
    config,
    `530,test-device,127.0.0.1,${target.port},${session.key}`,
    {
      childArgs: [],
      stdout: (text) => out.push(text),
      stderr: (text) => err.push(text),
      selfCommand: () => {
        throw new Error("must not start a child while a daemon is up");
      },
    },
  );
  assert.equal(code, 0, err.join(""));
  assert.match(out.join(""), /handed to the c8y-tunnel daemon/);
  await session.connected;
  assert.equal(agent.sessionCount, 1);

  const reader = session.received.getReader();
  const back = readBytes(reader, 5);
  session.send(new TextEncoder().encode("hello"));
  assert.equal(new TextDecoder().decode(await back), "hello");
  reader.releaseLock();
  // The 530 reached the daemon before the handoff did (same broker, in order).
  assert.deepEqual(rig.sim.handshakes.map((h) => h.key), [session.key]);
  assert.deepEqual(rig.observer.on("c8y/s/us"), []);
  session.close();
  await session.closed;
});

Deno.test("runConnect() passes the daemon's refusal on as the reason (session cap)", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  await pluginDaemon(rig, "max_sessions = 1");
  const config = testConfig(rigToml(rig.broker.port, rig.sim.url));
  const run = (key: string, err: string[]) =>
    runConnect(config, `530,test-device,127.0.0.1,${target.port},${key}`, {
      childArgs: [],
      stdout: () => {},
      stderr: (text) => err.push(text),
      selfCommand: () => {
        throw new Error("must not start a child while a daemon is up");
      },
    });
  const first = rig.sim.openSession();
  assert.equal(await run(first.key, []), 0);
  const err: string[] = [];
  const second = rig.sim.openSession();
  assert.equal(await run(second.key, err), 1);
  assert.equal(
    err.join("").trim(),
    "session limit reached (tunnel.max_sessions = 1)",
  );
  await second[Symbol.asyncDispose]();
  first.close();
  await first.closed;
});

Deno.test("HandoffServer drops expired, repeated and malformed requests", () => {
  const config = testConfig(rigToml(1883, "http://127.0.0.1:1"));
  const topics = topicsFor(config);
  const published: string[] = [];
  const served: string[] = [];
  let now = 1_000;
  const server = new HandoffServer({
    topics,
    publish: (topic, payload) => {
      published.push(`${topic} ${payload}`);
      return Promise.resolve();
    },
    serve: (request, report) => {
      served.push(request.key);
      report("executing");
    },
    log: logger("test"),
    now: () => now,
  });
  assert.ok(server.handles(topics.handoffRequest("a")));
  assert.ok(!server.handles("c8y/s/ds"));
  const line = "530,test-device,127.0.0.1,22,k1";
  server.onMessage(
    topics.handoffRequest("late"),
    JSON.stringify({ line, expires: now - 1 }),
  );
  server.onMessage(topics.handoffRequest("bad"), "{");
  server.onMessage(
    topics.handoffRequest("id1"),
    JSON.stringify({ line, expires: now + 1000 }),
  );
  server.onMessage(
    topics.handoffRequest("id1"),
    JSON.stringify({ line, expires: now + 1000 }),
  );
  now += 5000;
  assert.deepEqual(served, ["k1"]);
  assert.deepEqual(published, [
    `${topics.handoffResult("id1")} {"state":"accepted"}`,
  ]);
  server.onMessage(
    topics.handoffRequest("id2"),
    JSON.stringify({ line: "530,d,127.0.0.1,0,k2", expires: now + 1 }),
  );
  assert.deepEqual(published.slice(1), [
    `${topics.handoffResult("id2")} {"state":"accepted"}`,
    `${
      topics.handoffResult("id2")
    } {"state":"failed","reason":"invalid port \\"0\\" for host 127.0.0.1: expected 1-65535"}`,
  ]);
});
