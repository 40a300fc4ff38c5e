/**
 * c8y-tunnel entry point: `deno run <permissions> main.ts <command> …`.
 * Parses the command line, wires signals, runs the command, exits.
 *
 * @module
 */
// First: npm code loaded after this sees only the agent's own variables.
import "./lib/util/env_fence.ts";
import { runCli } from "./lib/cli.ts";

if (import.meta.main) {
  const encoder = new TextEncoder();
  const shutdownRequested = new Promise<string>((resolve) => {
    for (const name of ["SIGTERM", "SIGINT"] as const) {
      Deno.addSignalListener(name, () => resolve(name));
    }
  });
  const code = await runCli(Deno.args, {
    shutdownRequested,
    env: (name) => Deno.env.get(name),
    stdout: (text) => Deno.stdout.writeSync(encoder.encode(text)),
    stderr: (text) => Deno.stderr.writeSync(encoder.encode(text)),
  });
  Deno.exit(code);
}
