/**
 * The operation file beside thin-edge (issue 9 points 4, 11, 12, 13): child
 * devices declared under `operations/c8y/<external id>/` and served by the
 * daemon; thin-edge's own plugin file detected and replaced with a word on
 * what to do; one plugin-mode file for every cloud profile (topic
 * `c8y/s/ds`, a `timeout`, a quoted command).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parse as parseToml } from "smol-toml";
import { Agent } from "../lib/daemon/agent.ts";
import {
  childIdProblem,
  declaredChildren,
  inspectOperationFile,
  operationFilePath,
} from "../lib/commands/operation_file.ts";
import { splitWords } from "../lib/util/shell_words.ts";
import { loadConfig } from "../lib/config/config.ts";
import { HandoffServer } from "../lib/handoff/server.ts";
import { topicsFor } from "../lib/mqtt/topics.ts";
import { logger } from "../lib/util/log.ts";
import { echo, rigToml, startRig, tcpServer, testConfig } from "./harness.ts";
import { runCli } from "./system_helpers.ts";

/** A thin-edge config dir with tedge.toml and our config (in a directory whose name has a space). */
async function device(
  tedgeToml = "",
  ours = "",
): Promise<
  { dir: string; tedgeToml: string; configPath: string } & AsyncDisposable
> {
  const base = await Deno.makeTempDir({ prefix: "c8y-tunnel-plugin-" });
  const dir = join(base, "etc tedge");
  await Deno.mkdir(dir);
  const tedge = join(dir, "tedge.toml");
  await Deno.writeTextFile(tedge, tedgeToml);
  const configPath = join(dir, "c8y tunnel.toml");
  await Deno.writeTextFile(
    configPath,
    `[c8y]\nurl = "http://127.0.0.1:1"\ndevice_id = "main-device"\nauth = "none"\n` +
      `[tedge]\nconfig_path = "${tedge}"\n${ours}`,
  );
  return {
    dir,
    tedgeToml: tedge,
    configPath,
    async [Symbol.asyncDispose]() {
      await Deno.remove(base, { recursive: true });
    },
  };
}

function configOf(tedgeToml: string) {
  return testConfig(
    `[c8y]\nurl = "http://127.0.0.1:1"\ndevice_id = "main-device"\nauth = "none"\n[tedge]\nconfig_path = "${tedgeToml}"\n`,
  );
}

Deno.test("childIdProblem() refuses what cannot be a directory or an MQTT topic level", () => {
  assert.equal(childIdProblem("child-1"), undefined);
  assert.equal(childIdProblem("plc:17.a"), undefined);
  for (const bad of ["", " ", ".", "..", "a/b", "a+b", "a#", "a\u0000b"]) {
    assert.notEqual(childIdProblem(bad), undefined, JSON.stringify(bad));
  }
});

Deno.test("init --child writes the capability file under operations/c8y/<id>/ without [exec]; check lists the child; cleanup --child removes it", async () => {
  await using dev = await device();
  const config = configOf(dev.tedgeToml);
  const init = await runCli([
    "init",
    "--config",
    dev.configPath,
    "--child",
    "child-1",
  ]);
  assert.equal(init.code, 0, init.stderr);
  assert.match(init.stdout, /child child-1/);
  const path = operationFilePath(config, "child-1");
  assert.equal(
    path,
    join(dev.dir, "operations", "c8y", "child-1", "c8y_RemoteAccessConnect"),
  );
  assert.deepEqual(Object.keys(parseToml(await Deno.readTextFile(path))), []);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o644);
  assert.equal((await inspectOperationFile(config, "child-1")).kind, "daemon");
  // The main device's file is not touched.
  assert.equal((await inspectOperationFile(config)).kind, "none");
  assert.deepEqual(await declaredChildren(config), ["child-1"]);

  const check = await runCli(["check", "--config", dev.configPath]);
  assert.match(
    check.stdout,
    /child devices: remote access declared for child-1; the c8y-tunnel daemon serves them \(its state is unknown/,
  );

  const bad = await runCli([
    "init",
    "--config",
    dev.configPath,
    "--child",
    "a/b",
  ]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /child "a\/b".*contains "\/"/);
  const both = await runCli([
    "init",
    "--daemon",
    "--child",
    "x",
    "--config",
    dev.configPath,
  ]);
  assert.equal(both.code, 2);

  const cleanup = await runCli([
    "cleanup",
    "--config",
    dev.configPath,
    "--child",
    "child-1",
  ]);
  assert.equal(cleanup.code, 0, cleanup.stderr);
  assert.match(cleanup.stdout, /^removed /);
  // The directory goes too: an empty one would still declare the child.
  await assert.rejects(
    Deno.stat(join(dev.dir, "operations", "c8y", "child-1")),
  );
  assert.deepEqual(await declaredChildren(config), []);
});

Deno.test("Agent in plugin mode serves a child's 530 itself and leaves the main device's to the mapper", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const agent = new Agent(
    testConfig(rigToml(rig.broker.port, rig.sim.url)),
    { operations: false },
  );
  rig.defer(() => agent.close());
  await agent.ready;
  const main = rig.sim.openSession();
  await rig.request530(main.key, "127.0.0.1", target.port);
  const child = rig.sim.openSession();
  await rig.request530(child.key, "127.0.0.1", target.port, "child-1");
  await rig.status("503,c8y_RemoteAccessConnect", "child-1");
  await child.connected;
  assert.deepEqual(rig.observer.on("c8y/s/us"), []);
  assert.ok(!rig.sim.handshakes.some((h) => h.key === main.key));
  child.close();
  await child.closed;
  await main[Symbol.asyncDispose]();
});

/** thin-edge's file, as its plugin's --init (and its package) writes it. */
const THIN_EDGE_FILE =
  '[exec]\ncommand = "c8y-remote-access-plugin"\ntopic = "c8y/s/ds"\non_message = "530"\n';

Deno.test("init over thin-edge's plugin file says what it replaces and in which order to proceed", async () => {
  await using dev = await device();
  const config = configOf(dev.tedgeToml);
  await Deno.mkdir(join(dev.dir, "operations", "c8y"), { recursive: true });
  await Deno.writeTextFile(operationFilePath(config), THIN_EDGE_FILE);
  const state = await inspectOperationFile(config);
  assert.ok(state.kind === "foreign" && state.thinEdgePlugin);

  const init = await runCli(["init", "--config", dev.configPath]);
  assert.equal(init.code, 0, init.stderr);
  assert.match(
    init.stderr,
    /replaced thin-edge's c8y-remote-access-plugin \(the file ran "c8y-remote-access-plugin"\): remove or disable that plugin .*before running init/,
  );
  assert.equal((await inspectOperationFile(config)).kind, "plugin");

  // Another program's file is named as such, not as thin-edge's.
  await Deno.writeTextFile(
    operationFilePath(config),
    '[exec]\ncommand = "/opt/other/ra-agent"\ntopic = "c8y/s/ds"\non_message = "530"\n',
  );
  const other = await inspectOperationFile(config);
  assert.ok(other.kind === "foreign" && !other.thinEdgePlugin);
  const check = await runCli(["check", "--config", dev.configPath]);
  assert.match(
    check.stdout,
    /FAIL operation file: .* runs "\/opt\/other\/ra-agent", not c8y-tunnel/,
  );
});

Deno.test("init with a cloud profile writes plugin mode for every connection: topic c8y/s/ds, a timeout, the quoted command", async () => {
  await using dev = await device(
    '[c8y.profiles.second]\nurl = "127.0.0.1:1"\nbridge.topic_prefix = "c8y-second"\n',
    "[tunnel]\nconnect_timeout = 8\n",
  );
  const init = await runCli(["init", "--config", dev.configPath], {
    TEDGE_CLOUD_PROFILE: "second",
  });
  assert.equal(init.code, 0, init.stderr);
  const doc = parseToml(
    await Deno.readTextFile(operationFilePath(configOf(dev.tedgeToml))),
  ) as { exec: Record<string, unknown> };
  assert.equal(doc.exec.topic, "c8y/s/ds");
  assert.equal(doc.exec.on_message, "530");
  // connect_timeout 8 s + jwt_timeout 5 s + 15 s
  assert.equal(doc.exec.timeout, 28);
  const words = splitWords(String(doc.exec.command));
  assert.deepEqual(words.slice(-3), ["connect", "--config", dev.configPath]);
  assert.match(String(doc.exec.command), /'[^']*c8y tunnel\.toml'/);
});

Deno.test("loadConfig() takes the cloud profile from TEDGE_CLOUD_PROFILE; a profile gets its own service name and client id", async () => {
  await using dev = await device(
    '[c8y.profiles.second]\nurl = "127.0.0.1:1"\nbridge.topic_prefix = "c8y-second"\ndevice.id = "second-device"\n',
    "",
  );
  // Our file must not pin the connection for the profile to apply.
  await Deno.writeTextFile(
    dev.configPath,
    `[c8y]\nauth = "none"\n[tedge]\nconfig_path = "${dev.tedgeToml}"\n`,
  );
  await Deno.writeTextFile(
    dev.tedgeToml,
    '[c8y]\nurl = "127.0.0.1:2"\n[device]\nid = "main-device"\n' +
      '[c8y.profiles.second]\nurl = "127.0.0.1:1"\nbridge.topic_prefix = "c8y-second"\ndevice.id = "second-device"\n',
  );
  const env = (profile?: string) => (name: string) =>
    name === "TEDGE_CLOUD_PROFILE" ? profile : undefined;
  const second = await loadConfig({
    path: dev.configPath,
    env: env("second"),
    profileFromEnv: true,
  });
  assert.equal(second.c8y.profile, "second");
  assert.equal(second.mqtt.topicPrefix, "c8y-second");
  assert.equal(second.c8y.deviceId, "second-device");
  assert.equal(second.health.serviceName, "c8y-tunnel@second");
  assert.equal(second.mqtt.clientId, "c8y-tunnel@second");
  const topics = topicsFor(second);
  assert.equal(topics.jwtRequest, "c8y-second/s/uat");
  assert.equal(
    topics.health,
    "te/device/main/service/c8y-tunnel@second/status/health",
  );
  assert.equal(
    topics.handoffRequest("x"),
    "c8y-tunnel@second/connect/request/x",
  );

  // For connect, no variable means the default connection, even when our
  // file names a profile; for the others the file's profile stands.
  await Deno.writeTextFile(
    dev.configPath,
    `[c8y]\nauth = "none"\nprofile = "second"\n[tedge]\nconfig_path = "${dev.tedgeToml}"\n`,
  );
  const mapperDefault = await loadConfig({
    path: dev.configPath,
    env: env(undefined),
    profileFromEnv: true,
  });
  assert.equal(mapperDefault.c8y.profile, "");
  assert.equal(mapperDefault.mqtt.topicPrefix, "c8y");
  assert.equal(mapperDefault.health.serviceName, "c8y-tunnel");
  const daemon = await loadConfig({
    path: dev.configPath,
    env: env(undefined),
  });
  assert.equal(daemon.c8y.profile, "second");
});

Deno.test("HandoffServer drops a request for another cloud profile (connect then serves it itself)", () => {
  const config = configOf("/nonexistent/tedge.toml");
  const served: string[] = [];
  const published: string[] = [];
  const server = new HandoffServer({
    topics: topicsFor(config),
    publish: (topic) => {
      published.push(topic);
      return Promise.resolve();
    },
    serve: (request) => served.push(request.key),
    log: logger("test"),
    profile: "second",
  });
  const request = (id: string, profile: string) =>
    server.onMessage(
      topicsFor(config).handoffRequest(id),
      JSON.stringify({
        line: `530,main-device,127.0.0.1,22,key-${id}`,
        expires: Date.now() + 60_000,
        profile,
      }),
    );
  request("a1", "");
  request("a2", "third");
  assert.deepEqual(served, []);
  assert.deepEqual(published, []);
  request("a3", "second");
  assert.deepEqual(served, ["key-a3"]);
});
