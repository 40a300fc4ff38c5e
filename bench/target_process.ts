/**
 * The TCP target of the benchmark in its own process (like sshd is to an ssh
 * client): {@linkcode TargetServer} on 127.0.0.1. Talks to the driver in
 * lines on stdout: `ready <port>`, `open <count>` whenever the number of
 * open connections changes, and `report <json>` for each upload it received
 * (times as `performance.timeOrigin + performance.now()`).
 *
 * Usage: deno run -A bench/target_process.ts
 *
 * @module
 */
import { Pattern, TargetServer } from "./wire.ts";

const size = Number(Deno.args[0] ?? 0);
const encoder = new TextEncoder();
const print = (line: string): void => {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
};
const target = new TargetServer(new Pattern(size), {
  onOpen: (count) => print(`open ${count}`),
  onReport: (id, report) =>
    print(
      `report ${
        JSON.stringify({
          id,
          ...report,
          lastByteAt: performance.timeOrigin + report.lastByteAt,
        })
      }`,
    ),
});
print(`ready ${target.port}`);

const stop = async () => {
  await target.close();
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
