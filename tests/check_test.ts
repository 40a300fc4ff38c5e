/**
 * `c8y-tunnel check`: one OK/FAIL line per item, exit 0 only when all are OK,
 * no secret in the output.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Agent } from "../lib/daemon/agent.ts";
import {
  type CheckReport,
  formatCheckLine,
  runCheck,
} from "../lib/commands/check.ts";
import {
  operationFilePath,
  writeOperationFile,
} from "../lib/commands/operation_file.ts";
import {
  muteBroker,
  type Rig,
  rigToml,
  startRig,
  testConfig,
} from "./harness.ts";
import { HAVE_TLS_TOOLS } from "./mosquitto_tls.ts";
import { MAIN, runCli } from "./system_helpers.ts";
import { makeTestPki } from "./test_pki.ts";

/** A temp dir holding config.toml and tedge.toml; removed at the end. */
interface Setup extends AsyncDisposable {
  readonly dir: string;
  readonly configPath: string;
}

async function setup(toml: string): Promise<Setup> {
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-check-" });
  const tedgeToml = join(dir, "tedge.toml");
  await Deno.writeTextFile(tedgeToml, "");
  const configPath = join(dir, "config.toml");
  await Deno.writeTextFile(
    configPath,
    `${toml}\n[tedge]\nconfig_path = "${tedgeToml}"\n`,
  );
  return {
    dir,
    configPath,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function jwtToml(rig: Rig, extra: { c8y?: string } = {}): string {
  return rigToml(rig.broker.port, rig.sim.url, extra).replace(
    'auth = "none"',
    'auth = "jwt"',
  );
}

/** Answers `c8y/s/uat` with a token valid for an hour, like the thin-edge bridge. */
function fakeBridge(rig: Rig): void {
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const payload = btoa(JSON.stringify({ exp })).replace(/=+$/, "");
  rig.observer.client.on("message", (topic) => {
    if (topic === "c8y/s/uat") {
      rig.observer.publish("c8y/s/dat", `71,e30.${payload}.sig`).catch(
        () => {},
      );
    }
  });
}

function line(report: CheckReport, name: string): string {
  const found = report.lines.find((l) => l.name.startsWith(name));
  assert.ok(found, `no line ${name} in\n${text(report)}`);
  return formatCheckLine(found);
}

function text(report: CheckReport): string {
  return report.lines.map(formatCheckLine).join("\n");
}

Deno.test("runCheck() says OK for every item of a working daemon-mode setup", async () => {
  await using rig = await startRig();
  fakeBridge(rig);
  await using s = await setup(jwtToml(rig));
  const config = testConfig(
    await Deno.readTextFile(s.configPath),
  );
  await writeOperationFile(config, { command: null, owner: null });
  const agent = new Agent(config);
  rig.defer(() => agent.close());
  await agent.ready;

  const report = await runCheck({ path: s.configPath, probeTimeoutMs: 2000 });
  assert.ok(report.ok, text(report));
  assert.deepEqual(report.lines.map((l) => l.name), [
    "config file",
    "tedge.toml",
    "broker",
    "JWT",
    "cloud",
    'tunnel.allow[0] "127.0.0.1:*"',
    "operation file",
    "child devices",
  ]);
  assert.match(line(report, "config file"), /^OK {3}config file: .* is valid$/);
  assert.match(
    line(report, "JWT"),
    /^OK {3}JWT: obtained .*valid for (59|60) more min/,
  );
  assert.match(
    line(report, "cloud"),
    /^OK {3}cloud: http:\/\/127\.0\.0\.1:\d+ reachable \(HEAD .*HTTP \d{3}\)/,
  );
  assert.match(line(report, "tunnel.allow"), /host 127\.0\.0\.1, any port/);
  assert.match(
    line(report, "operation file"),
    new RegExp(
      `^OK   operation file: daemon mode .*daemon is up \\(pid ${Deno.pid}\\)`,
    ),
  );
  // The JWT itself never appears.
  assert.doesNotMatch(text(report), /e30\./);
});

Deno.test("runCheck() fails broker, JWT and the daemon-mode file when the broker is down, with hints", async () => {
  await using rig = await startRig();
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (closed.addr as Deno.NetAddr).port;
  closed.close();
  await using s = await setup(
    jwtToml(rig).replace(`port = ${rig.broker.port}`, `port = ${port}`),
  );
  const config = testConfig(await Deno.readTextFile(s.configPath));
  await writeOperationFile(config, { command: null, owner: null });
  const report = await runCheck({ path: s.configPath, probeTimeoutMs: 1000 });
  assert.ok(!report.ok);
  assert.match(
    line(report, "broker"),
    new RegExp(
      `^FAIL broker: cannot connect to 127\\.0\\.0\\.1:${port}: .*\\(hint: is mosquitto running\\? set mqtt\\.host and mqtt\\.port`,
    ),
  );
  assert.match(line(report, "JWT"), /^FAIL JWT: cannot ask for one/);
  assert.match(
    line(report, "operation file"),
    /^FAIL operation file: daemon mode .*daemon state unknown/,
  );
  assert.match(line(report, "cloud"), /^OK /);
});

Deno.test("runCheck() fails broker and JWT, never hangs, when the broker takes the connection but not the subscription", async () => {
  await using rig = await startRig();
  await using mute = muteBroker();
  await using s = await setup(
    jwtToml(rig).replace(`port = ${rig.broker.port}`, `port = ${mute.port}`),
  );
  const report = await runCheck({ path: s.configPath, probeTimeoutMs: 500 });
  assert.ok(!report.ok);
  assert.match(
    line(report, "broker"),
    new RegExp(
      `^FAIL broker: 127\\.0\\.0\\.1:${mute.port} accepted the connection but not the subscription: the broker did not acknowledge .* within 0\\.5 s \\(hint: `,
    ),
  );
  assert.match(line(report, "JWT"), /^FAIL JWT: cannot ask for one/);
});

Deno.test("runCheck() fails JWT when the bridge does not answer within c8y.jwt_timeout", async () => {
  await using rig = await startRig();
  await using s = await setup(jwtToml(rig, { c8y: "jwt_timeout = 0.2" }));
  const report = await runCheck({ path: s.configPath, probeTimeoutMs: 2000 });
  assert.match(
    line(report, "JWT"),
    /^FAIL JWT: cannot get one from the thin-edge bridge: no answer on c8y\/s\/dat within 0\.2 s \(hint: is tedge-mapper-c8y running/,
  );
});

Deno.test("runCheck() fails cloud for an unreachable c8y.url and never prints the password or proxy password", async () => {
  await using rig = await startRig();
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (closed.addr as Deno.NetAddr).port;
  closed.close();
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-cred-" });
  try {
    const credentials = join(dir, "credentials.toml");
    await Deno.writeTextFile(
      credentials,
      '[c8y]\nusername = "t1/device"\npassword = "s3cret-pw"\n',
    );
    await using s = await setup(
      rigToml(rig.broker.port, `http://127.0.0.1:${port}`).replace(
        'auth = "none"',
        `auth = "basic"\ncredentials_path = "${credentials}"`,
      ) +
        `[proxy]\naddress = "http://127.0.0.1:${port}"\nusername = "p"\npassword = "proxy-s3cret"\n`,
    );
    const report = await runCheck({ path: s.configPath, probeTimeoutMs: 1000 });
    assert.ok(!report.ok);
    assert.match(
      line(report, "credentials"),
      /^OK {3}credentials: .*credentials\.toml read \(user name and password set\)$/,
    );
    assert.match(
      line(report, "cloud"),
      /^FAIL cloud: cannot reach http:\/\/127\.0\.0\.1:\d+ through proxy .*\(hint: check proxy\./,
    );
    assert.doesNotMatch(text(report), /s3cret/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runCheck() tells each state of the operation file", async () => {
  await using rig = await startRig();
  fakeBridge(rig);
  await using s = await setup(jwtToml(rig));
  const config = testConfig(await Deno.readTextFile(s.configPath));
  const check = async () =>
    line(
      await runCheck({ path: s.configPath, probeTimeoutMs: 2000 }),
      "operation file",
    );

  assert.match(
    await check(),
    /^FAIL operation file: .* does not exist: .*\(hint: run `c8y-tunnel init` \(plugin mode\) or `c8y-tunnel init --daemon`/,
  );

  await writeOperationFile(config, { command: null, owner: null });
  await Deno.writeTextFile(
    operationFilePath(config),
    '[exec]\ncommand = "/usr/bin/c8y-remote-access-plugin"\ntopic = "c8y/s/ds"\non_message = "530"\n',
  );
  assert.match(
    await check(),
    /^FAIL operation file: .* runs thin-edge's own plugin \("\/usr\/bin\/c8y-remote-access-plugin"\), not c8y-tunnel: .*\(hint: remove or disable thin-edge's plugin first \(apt remove c8y-remote-access-plugin\), then run `c8y-tunnel init`/,
  );

  await writeOperationFile(config, {
    command: "/nonexistent/c8y-tunnel connect",
    owner: null,
  });
  assert.match(
    await check(),
    /^FAIL operation file: plugin mode, but its command \/nonexistent\/c8y-tunnel does not exist/,
  );

  await writeOperationFile(config, {
    command: `${Deno.execPath()} run -A ${MAIN} connect`,
    owner: null,
  });
  assert.match(
    await check(),
    /^OK {3}operation file: plugin mode: tedge-mapper-c8y runs ".*main\.ts connect"; no c8y-tunnel daemon is up$/,
  );

  await Deno.writeTextFile(operationFilePath(config), "[exec\n");
  assert.match(await check(), /^FAIL operation file: .*not valid TOML/);
});

Deno.test("runCheck() reports a bad config as its only line, naming the file and key", async () => {
  await using s = await setup(
    '[c8y]\nurl = "http://127.0.0.1:1"\ndevice_id = "d"\n[tunnel]\nallow = ["127.0.0.1:0"]\n',
  );
  const report = await runCheck({ path: s.configPath });
  assert.equal(report.lines.length, 1);
  assert.ok(!report.ok);
  assert.match(
    formatCheckLine(report.lines[0]!),
    /^FAIL config: .*config\.toml: key tunnel\.allow\[0\] = "127\.0\.0\.1:0" is invalid/,
  );
});

Deno.test("c8y-tunnel check prints one line per item and exits 1 when one fails", async () => {
  await using rig = await startRig();
  await using s = await setup(rigToml(rig.broker.port, rig.sim.url));
  const out = await runCli(["check", "--config", s.configPath]);
  const stdout = out.stdout;
  assert.equal(out.code, 1, stdout);
  const lines = stdout.trim().split("\n");
  assert.equal(lines.length, 8, stdout);
  for (const l of lines) assert.match(l, /^(OK {2}|FAIL) .+?: /);
  assert.match(lines.at(-2)!, /^FAIL operation file: .* does not exist/);
  assert.match(lines.at(-1)!, /^OK {3}child devices: none declare/);
});

Deno.test({
  name:
    "runCheck() names c8y.root_cert_path when the cloud's certificate is not trusted, and is OK with its CA",
  ignore: !HAVE_TLS_TOOLS,
  fn: async () => {
    await using rig = await startRig();
    await using pki = await makeTestPki();
    await using server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      cert: pki.server.cert,
      key: pki.server.key,
      onListen() {},
    }, () => new Response(null, { status: 200 }));
    const url = `https://127.0.0.1:${server.addr.port}`;
    await using untrusted = await setup(rigToml(rig.broker.port, url));
    const failing = await runCheck({
      path: untrusted.configPath,
      probeTimeoutMs: 5000,
    });
    assert.match(
      line(failing, "cloud"),
      /^FAIL cloud: cannot reach https:\/\/127\.0\.0\.1:\d+: .*\(hint: the server's certificate is not trusted: set c8y\.root_cert_path/,
    );
    await using trusted = await setup(
      rigToml(rig.broker.port, url).replace(
        "[c8y]",
        `[c8y]\nroot_cert_path = "${pki.caPath}"`,
      ),
    );
    const passing = await runCheck({
      path: trusted.configPath,
      probeTimeoutMs: 5000,
    });
    assert.match(
      line(passing, "cloud"),
      /^OK {3}cloud: https:\/\/127\.0\.0\.1:\d+ reachable .*HTTP 200/,
    );
  },
});
