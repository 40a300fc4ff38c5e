/**
 * The agent against a cloud that breaks RFC 6455 (tests/hostile_frames.ts):
 * each session fails with the right close code, its target is closed, one
 * log line names the violation, and the agent serves the next request.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Agent } from "../lib/daemon/agent.ts";
import { setupLogging } from "../lib/util/log.ts";
import { rigToml, startRig, tcpServer, testConfig } from "./harness.ts";
import {
  concat,
  HOSTILE_CASES,
  hostileServer,
  PRELUDE,
} from "./hostile_frames.ts";

const EXECUTING = "501,c8y_RemoteAccessConnect";
const SUCCESSFUL = "503,c8y_RemoteAccessConnect";

/** Captured log lines, with a wait for the first line (from index `from`) that matches. */
function capture() {
  const lines: string[] = [];
  const waiters: {
    from: number;
    test: (line: string) => boolean;
    resolve: (line: string) => void;
  }[] = [];
  const write = (line: string) => {
    lines.push(line);
    for (const waiter of [...waiters]) {
      if (waiter.test(line)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  };
  const line = (from: number, test: (line: string) => boolean) => {
    const found = lines.slice(from).find(test);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise<string>((resolve) =>
      waiters.push({ from, test, resolve })
    );
  };
  return { lines, write, line };
}

Deno.test("Agent ends only the session whose cloud breaks RFC 6455: close 1002/1007/1009, target closed within 1 s, one log line naming the violation, next request served", async () => {
  const log = capture();
  setupLogging({ level: "debug", format: "text", write: log.write });
  try {
    await using rig = await startRig();
    const targetClosed: PromiseWithResolvers<number>[] = [];
    const closedSlot = (n: number) =>
      targetClosed[n] ??= Promise.withResolvers<number>();
    let targets = 0;
    const target = tcpServer(async (conn) => {
      const n = targets++;
      const buffer = new Uint8Array(1024);
      try {
        while ((await conn.read(buffer)) !== null) { /* until closed */ }
      } finally {
        closedSlot(n).resolve(performance.now());
      }
    });
    rig.defer(() => target.close());
    const cloud = hostileServer((n) =>
      concat(PRELUDE, HOSTILE_CASES[n]?.bytes ?? new Uint8Array(0))
    );
    rig.defer(() => cloud.close());
    const agent = new Agent(testConfig(rigToml(rig.broker.port, cloud.url)));
    rig.defer(() => agent.close());
    await agent.ready;

    for (const [n, hostile] of HOSTILE_CASES.entries()) {
      const from = log.lines.length;
      const statuses = rig.observer.on("c8y/s/us").length;
      await rig.request530(crypto.randomUUID(), "127.0.0.1", target.port);
      // Served: the request before this one did not take the agent down.
      await rig.observer.waitFor(() =>
        rig.observer.on("c8y/s/us").length >= statuses + 2
      );
      assert.deepEqual(
        rig.observer.on("c8y/s/us").slice(statuses, statuses + 2),
        [EXECUTING, SUCCESSFUL],
        hostile.name,
      );
      const seen = await cloud.seen(n);
      assert.equal(seen.closeCode, hostile.code, hostile.name);
      const closedAt = await closedSlot(n).promise;
      assert.ok(
        closedAt - seen.sentAt < 1000,
        `${hostile.name}: target closed ${
          closedAt - seen.sentAt
        } ms after the frame`,
      );
      const summary = await log.line(
        from,
        (line) => line.includes("ended after"),
      );
      assert.ok(
        summary.includes(hostile.violation) &&
          summary.includes(`closed with ${hostile.code}`),
        `${hostile.name}: ${summary}`,
      );
      const naming = log.lines.slice(from).filter((line) =>
        line.includes(hostile.violation)
      );
      assert.equal(naming.length, 1, naming.join("\n"));
    }
  } finally {
    setupLogging({ level: "error", format: "text" });
  }
});
