/**
 * `c8y-tunnel connect` as tedge-mapper-c8y runs it (tests/mapper_emulator.ts
 * follows thin-edge's source): the command split shell-style with the 530
 * appended, pipes awaited to EOF, and the status the mapper derives from
 * exit code, stdout and stderr.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  failureReason,
  killSession,
  runLikeMapper,
} from "./mapper_emulator.ts";
import { oneLine } from "../lib/commands/connect.ts";
import { echo, type Rig, rigToml, startRig, tcpServer } from "./harness.ts";
import { connectCommand, freePort } from "./system_helpers.ts";

Deno.test("failureReason() is the last stderr line, plus all of stderr when there are more", () => {
  assert.equal(failureReason(""), "");
  assert.equal(failureReason("one reason\n"), "one reason");
  assert.equal(
    failureReason("log line\nthe reason\n"),
    "the reason\n\nlog line\nthe reason\n",
  );
  assert.equal(failureReason("bell\x07 gone\n"), "bell gone");
});

Deno.test("runLikeMapper() appends the line as one argument, sets TEDGE_CLOUD_PROFILE only for a profile, honours timeout", async () => {
  const echoArgs =
    `sh -c 'printf "%s|" "$@"; printf "%s" "$TEDGE_CLOUD_PROFILE"' sh`;
  const plain = await runLikeMapper(echoArgs, "530,d,h,22,k k");
  assert.equal(plain.stdout, "530,d,h,22,k k|");
  assert.match(plain.status, /^503,c8y_RemoteAccessConnect,/);
  const profiled = await runLikeMapper(echoArgs, "530,x", {
    profile: "second",
  });
  assert.equal(profiled.stdout, "530,x|second");
  const failing = await runLikeMapper(
    `sh -c 'echo first >&2; echo "the reason" >&2; exit 3' sh`,
    "530",
  );
  assert.equal(failing.code, 3);
  assert.equal(failing.reason, "the reason\n\nfirst\nthe reason\n");
  const slow = await runLikeMapper("sleep 30", "530", { timeoutS: 0.2 });
  assert.ok(slow.timedOut);
  assert.match(
    slow.reason ?? "",
    /^operation failed due to timeout: duration=0\.2s/,
  );
});

/** A config for `connect` against the rig, in a directory whose name has a space. */
async function spacedConfig(
  rig: Rig,
  options: { allow?: string[]; log?: string } = {},
): Promise<{ dir: string; path: string } & AsyncDisposable> {
  const base = await Deno.makeTempDir({ prefix: "c8y-tunnel-mapper-" });
  const dir = join(base, "my config");
  await Deno.mkdir(dir);
  const tedgeToml = join(dir, "tedge.toml");
  await Deno.writeTextFile(tedgeToml, "");
  const path = join(dir, "config.toml");
  await Deno.writeTextFile(
    path,
    rigToml(rig.broker.port, rig.sim.url, {
      ...(options.allow ? { allow: options.allow } : {}),
    }).replace('level = "warn"', options.log ?? 'level = "warn"') +
      `[tedge]\nconfig_path = "${tedgeToml}"\n`,
  );
  return {
    dir,
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(base, { recursive: true });
    },
  };
}

/** Runs `connect` like the mapper for a 530 to 127.0.0.1:port, with a simulator session of its own that it closes afterwards. */
async function connectLikeMapper(rig: Rig, configPath: string, port: number) {
  const session = rig.sim.openSession();
  try {
    return await runLikeMapper(
      connectCommand(configPath),
      `530,test-device,127.0.0.1,${port},${session.key}`,
      { timeoutS: 60 },
    );
  } finally {
    await session[Symbol.asyncDispose]();
  }
}

Deno.test({
  name:
    "connect run like the mapper, from a quoted config path with a space, reports 503 with a short stdout once both legs are up",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = await startRig();
    await using cfg = await spacedConfig(rig);
    const target = tcpServer(echo);
    rig.defer(() => target.close());
    const session = rig.sim.openSession();
    rig.defer(async () => await session[Symbol.asyncDispose]());
    const run = await runLikeMapper(
      connectCommand(cfg.path),
      `530,test-device,127.0.0.1,${target.port},${session.key}`,
      { timeoutS: 60 },
    );
    killSession(run.stdout);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, "");
    assert.ok(!run.timedOut, "the session held the mapper's pipes open");
    assert.equal(run.stdout.trim().split("\n").length, 1, run.stdout);
    assert.ok(run.stdout.length < 160, `stdout too long: ${run.stdout}`);
    assert.equal(target.accepted(), 1);
  },
});

Deno.test({
  name:
    "a failing connect writes exactly one stderr line, the reason, at every log level",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = await startRig();
    const port = freePort(); // nothing listens there
    for (const level of ["debug", "info", "warn", "error"]) {
      await using cfg = await spacedConfig(rig, {
        log: `level = "${level}"`,
      });
      const run = await connectLikeMapper(rig, cfg.path, port);
      killSession(run.stdout);
      assert.equal(run.code, 1, `${level}: ${run.stdout}`);
      assert.equal(
        run.stderr,
        `cannot connect to target 127.0.0.1:${port}: connection refused\n`,
        `log level ${level}`,
      );
      assert.equal(
        run.reason,
        `cannot connect to target 127.0.0.1:${port}: connection refused`,
      );
    }
  },
});

Deno.test({
  name:
    "connect writes its log to log.file, not stderr; a bad config and an overlong reason are one line too",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using rig = await startRig();
    const port = freePort(); // nothing listens there
    await using cfg = await spacedConfig(rig, {
      log: 'level = "debug"\nfile = "@LOG@"',
    });
    const logFile = join(cfg.dir, "connect.log");
    await Deno.writeTextFile(
      cfg.path,
      (await Deno.readTextFile(cfg.path)).replace("@LOG@", logFile),
    );
    const run = await connectLikeMapper(rig, cfg.path, port);
    assert.equal(run.stderr.split("\n").length, 2, run.stderr);
    const log = await Deno.readTextFile(logFile);
    assert.match(log, /\[DBG\].*serving the request itself/);
    assert.match(log, /connecting -> failed/);

    // A config error: one line naming the file and key.
    await Deno.writeTextFile(cfg.path, '[tunnel]\nallow = "nope"\n');
    const bad = await runLikeMapper(connectCommand(cfg.path), "530,d,h,22,k");
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr.split("\n").length, 2, bad.stderr);
    assert.match(bad.reason ?? "", /tunnel\.allow/);
  },
});

Deno.test("oneLine() keeps a reason on one line and under the mapper's 500-byte cut, between characters", () => {
  assert.equal(oneLine("a\nb\r\nc"), "a b c");
  assert.equal(oneLine(""), "remote access failed");
  const long = oneLine("é".repeat(400));
  assert.ok(new TextEncoder().encode(long).length <= 500);
  assert.ok(long.endsWith("..."));
  assert.ok(!long.includes("\uFFFD"));
});
