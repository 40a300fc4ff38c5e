import assert from "node:assert/strict";
import { demoCommand, parsePortFlag, runDemo } from "../lib/commands/demo.ts";
import { deadline, settlesWithin } from "../lib/util/deadline.ts";
import { errorMessage } from "../lib/util/errors.ts";
import { installed, sshArgs, startSshd } from "./system_helpers.ts";

const HAVE_SSH = installed("/usr/sbin/sshd") && installed("/usr/bin/ssh");
const IS_ROOT = Deno.uid() === 0;

/** Collects written text and lets a test wait for a pattern in it. */
class Capture {
  text = "";
  #waiters: { pattern: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];

  readonly write = (chunk: string): void => {
    this.text += chunk;
    this.#waiters = this.#waiters.filter((w) => {
      const match = this.text.match(w.pattern);
      if (match === null) return true;
      w.resolve(match);
      return false;
    });
  };

  /**
   * Resolves with the first match of `pattern` in everything written so far
   * or later; rejects, showing what was written, if none came within 10 s.
   */
  async waitFor(pattern: RegExp): Promise<RegExpMatchArray> {
    const match = this.text.match(pattern);
    if (match !== null) return match;
    const seen = Promise.withResolvers<RegExpMatchArray>();
    const waiter = { pattern, resolve: seen.resolve };
    this.#waiters.push(waiter);
    try {
      return await deadline(seen.promise, 10_000, `no ${pattern} within 10 s`);
    } catch (error) {
      // Show what was written by the time it gave up.
      throw new Error(`${errorMessage(error)} in:\n${this.text}`);
    } finally {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
    }
  }
}

const READY = /^demo ready: http=127\.0\.0\.1:(\d+) ssh=127\.0\.0\.1:(\d+)$/m;

/** One HTTP/1.0 request over a fresh TCP connection; returns everything until EOF. */
async function httpGet(port: number, path = "/"): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(
      new TextEncoder().encode(
        `GET ${path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n`,
      ),
    );
    return await new Response(conn.readable).text();
  } finally {
    try {
      conn.close();
    } catch {
      // closed by reading to the end
    }
  }
}

/** A loopback port with nothing listening on it (just freed). */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

Deno.test("runDemo() serves the HTTP target through the whole path and stops cleanly", async () => {
  const out = new Capture();
  const err = new Capture();
  const shutdown = Promise.withResolvers<void>();
  const running = runDemo({
    httpPort: 0,
    sshPort: 0,
    sshTargetPort: closedPort(),
    shutdown: shutdown.promise,
    stdout: out.write,
    stderr: err.write,
  });
  let stopped = false;
  try {
    const ready = await Promise.race([
      out.waitFor(READY),
      running.then(() => {
        throw new Error("runDemo() ended before it was ready");
      }),
    ]);
    assert.equal(out.text.indexOf("demo ready:"), 0, "ready line comes first");
    const httpPort = Number(ready[1]);
    assert.match(
      out.text,
      new RegExp(`curl http://127\\.0\\.0\\.1:${httpPort}/`),
    );

    const response = await httpGet(httpPort, "/hello");
    assert.match(response, /^HTTP\/1\.[01] 200 /);
    assert.match(response, /came through the tunnel/);
    assert.match(response, /GET \/hello/);

    await out.waitFor(/\[session \S+\] 530 request for 127\.0\.0\.1:\d+/);
    await out.waitFor(/\[session \S+\] 501 executing/);
    await out.waitFor(/\[session \S+\] 503 connected/);
    await err.waitFor(/session "?\S+"? to "?127\.0\.0\.1:\d+"? ended after/);
    // The same key labels the 530 and its statuses.
    const labels = [...out.text.matchAll(/\[session (\S+)\]/g)].map((m) =>
      m[1]
    );
    assert.equal(new Set(labels).size, 1, out.text);
  } finally {
    shutdown.resolve();
    await running;
    stopped = true;
  }
  assert.ok(stopped);
  assert.match(out.text, /stopping:/);
});

Deno.test("runDemo() shows a 502 with its reason when the SSH target refuses", async () => {
  const out = new Capture();
  const err = new Capture();
  const shutdown = Promise.withResolvers<void>();
  const sshTargetPort = closedPort();
  const running = runDemo({
    httpPort: 0,
    sshPort: 0,
    sshTargetPort,
    shutdown: shutdown.promise,
    stdout: out.write,
    stderr: err.write,
  });
  try {
    const ready = await out.waitFor(READY);
    assert.match(out.text, /nothing answered on 127\.0\.0\.1:\d+ at start-up/);
    const sshPort = Number(ready[2]);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: sshPort });
    // The simulator closes the client connection when the session fails.
    const rest = await new Response(conn.readable).text();
    assert.equal(rest, "");
    const failed = await out.waitFor(/\[session \S+\] 502 failed: (.*)/);
    assert.match(failed[1]!, new RegExp(`127\\.0\\.0\\.1:${sshTargetPort}`));
    assert.match(failed[1]!, /refused/);
  } finally {
    shutdown.resolve();
    await running;
  }
});

Deno.test({
  name:
    "runDemo() carries a real ssh session to a real sshd (skipped without openssh or root)",
  ignore: !HAVE_SSH || !IS_ROOT,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-demo-" });
    const sshd = await startSshd(dir);
    const out = new Capture();
    const shutdown = Promise.withResolvers<void>();
    const running = runDemo({
      httpPort: 0,
      sshPort: 0,
      sshTargetPort: sshd.port,
      shutdown: shutdown.promise,
      stdout: out.write,
      stderr: () => {},
    });
    try {
      const ready = await out.waitFor(READY);
      assert.match(out.text, /an SSH server answered on 127\.0\.0\.1:\d+/);
      const result = await new Deno.Command("ssh", {
        args: sshArgs(sshd, Number(ready[2]), "echo hello-through-the-demo"),
        stdin: "null",
      }).output();
      const stderr = new TextDecoder().decode(result.stderr);
      assert.equal(result.code, 0, `ssh failed: ${stderr}\n${out.text}`);
      assert.match(
        new TextDecoder().decode(result.stdout),
        /hello-through-the-demo/,
      );
      await out.waitFor(/503 connected/);
    } finally {
      shutdown.resolve();
      await running;
      await sshd.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("runDemo() rejects a taken port that was asked for, naming the flag, and leaves nothing running", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const out = new Capture();
    await assert.rejects(
      runDemo({
        httpPort: taken.addr.port,
        sshPort: 0,
        shutdown: new Promise(() => {}),
        stdout: out.write,
        stderr: () => {},
      }),
      (error: Error) => {
        assert.match(error.message, new RegExp(`:${taken.addr.port}`));
        assert.match(error.message, /--http-port/);
        return true;
      },
    );
    assert.doesNotMatch(out.text, /demo ready/);
  } finally {
    taken.close();
  }
});

Deno.test("parsePortFlag() accepts 0-65535 and names the flag otherwise", () => {
  assert.equal(parsePortFlag("--http-port", undefined), undefined);
  assert.equal(parsePortFlag("--http-port", "0"), 0);
  assert.equal(parsePortFlag("--http-port", "8080"), 8080);
  assert.equal(parsePortFlag("--ssh-port", "65535"), 65535);
  for (const bad of ["", "abc", "-1", "65536", "1e3", "80.5", "0x50"]) {
    assert.throws(
      () => parsePortFlag("--ssh-port", bad),
      (error: Error) =>
        error instanceof RangeError && /--ssh-port/.test(error.message) &&
        /0 to 65535/.test(error.message),
      bad,
    );
  }
});

Deno.test("demoCommand() exits 2 with a message for a bad port flag", async () => {
  const err = new Capture();
  const code = await demoCommand({ httpPort: "http" }, {
    shutdownRequested: new Promise(() => {}),
    stdout: () => {},
    stderr: err.write,
  });
  assert.equal(code, 2);
  assert.match(err.text, /--http-port "http" is invalid/);
});

Deno.test("demoCommand() as `main.ts demo` serves a request and exits 0 on SIGINT", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../main.ts", import.meta.url).pathname,
      "demo",
      "--http-port",
      "0",
      "--ssh-port",
      "0",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const out = new Capture();
  const reading = child.stdout.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (chunk) => out.write(chunk) }),
  );
  let exited = false;
  child.status.then(() => exited = true);
  try {
    const ready = await Promise.race([
      out.waitFor(READY),
      child.status.then((status) => {
        throw new Error(`demo exited early with ${status.code}`);
      }),
    ]);
    const response = await httpGet(Number(ready[1]));
    assert.match(response, /came through the tunnel/);
    await out.waitFor(/503 connected/);

    child.kill("SIGINT");
    assert.ok(
      await settlesWithin(child.status, 5_000),
      "demo did not exit within 5 s",
    );
    const status = await child.status;
    assert.equal(status.code, 0, `exit code; stderr:\n${await stderr}`);
  } finally {
    if (!exited) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
    await child.status;
    await reading;
    await stderr;
  }
  assert.match(out.text, /stopping:/);
});
