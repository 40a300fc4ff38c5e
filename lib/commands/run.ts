/**
 * `c8y-tunnel run`: the daemon until SIGTERM/SIGINT, then a clean stop
 * (sessions closed, health `down`) within the shutdown deadline.
 *
 * @module
 */
import { Agent } from "../daemon/agent.ts";
import { setupLogging } from "../util/log.ts";
import { daemonServesOperations } from "./operation_file.ts";
import {
  type CliArgs,
  type CliHost,
  configFrom,
  type ExitCode,
  stopWithinDeadline,
} from "./host.ts";

/** Runs the daemon until a shutdown signal, then closes everything. */
export async function runCommand(
  args: CliArgs,
  host: CliHost,
): Promise<ExitCode> {
  const config = await configFrom(args.config, host);
  setupLogging(config.log);
  // In plugin mode the mapper runs `connect`, which hands requests to us;
  // listening for them too would serve and report each request twice.
  const operations = await daemonServesOperations(config);
  if (!operations) {
    host.stderr(
      "operation file is in plugin mode: serving requests handed over by `c8y-tunnel connect` and child devices' requests (run `c8y-tunnel init --daemon` to listen for all)\n",
    );
  }
  const agent = new Agent(config, { operations });
  const signal = await host.shutdownRequested;
  host.stderr(`received ${signal}, closing sessions\n`);
  await stopWithinDeadline(agent.close(), host, "shutdown");
  return 0;
}
