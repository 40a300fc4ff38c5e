/**
 * The command line (DESIGN.md §2): parses arguments, picks the command,
 * maps the outcome to an exit code. Each command's module is loaded only
 * when it runs, so `run` never loads the demo, the simulator, the embedded
 * broker or `check`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { ConfigError } from "./config/config.ts";
import type { CliArgs, CliHost, ExitCode } from "./commands/host.ts";
import { errorMessage } from "./util/errors.ts";
import denoJson from "../deno.json" with { type: "json" };

export type { CliHost, ExitCode };

/** The agent's version, from deno.json. */
export const VERSION: string = denoJson.version;

const USAGE =
  `c8y-tunnel ${VERSION} — Cumulocity Cloud Remote Access agent for thin-edge.io

Usage:
  c8y-tunnel run     [--config FILE]          daemon: MQTT listener + tunnels
  c8y-tunnel connect [--config FILE] "530,…"  one session (thin-edge operation plugin)
  c8y-tunnel init    [--config FILE] [--daemon | --child ID]  write the thin-edge operation file
                                              (--child: declare remote access for a child device)
  c8y-tunnel cleanup [--config FILE] [--child ID]  remove it
  c8y-tunnel check   [--config FILE]          validate config, try broker and cloud
  c8y-tunnel demo    [--ssh-port N] [--http-port N]  broker + cloud simulator + agent
  c8y-tunnel --help | --version

The config file defaults to /etc/c8y-tunnel/config.toml (env C8Y_TUNNEL_CONFIG);
missing values come from /etc/tedge/tedge.toml.
`;

/** Runs one command, loading its module first. */
async function dispatch(
  command: string,
  args: CliArgs,
  host: CliHost,
): Promise<ExitCode | undefined> {
  switch (command) {
    case "run":
      return await (await import("./commands/run.ts")).runCommand(args, host);
    case "connect":
      return await (await import("./commands/connect.ts")).connectCommand(
        args,
        host,
      );
    case "init":
      return await (await import("./commands/operation_file.ts")).initCommand(
        args,
        host,
      );
    case "cleanup":
      return await (await import("./commands/operation_file.ts"))
        .cleanupCommand(args, host);
    case "check":
      return await (await import("./commands/check.ts")).checkCommand(
        args,
        host,
      );
    case "demo":
      return await (await import("./commands/demo.ts")).demoCommand(
        args,
        host,
      );
    default:
      return undefined;
  }
}

/** Parses `args` and runs the command; returns the exit code. */
export async function runCli(
  args: readonly string[],
  host: CliHost,
): Promise<ExitCode> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        config: { type: "string", short: "c" },
        daemon: { type: "boolean" },
        child: { type: "string" },
        "ssh-port": { type: "string" },
        "http-port": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (error) {
    host.stderr(`${errorMessage(error)}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.version) {
    host.stdout(`c8y-tunnel ${VERSION}\n`);
    return 0;
  }
  const command = positionals[0];
  if (values.help || command === undefined || command === "help") {
    host.stdout(USAGE);
    return command === undefined && !values.help ? 2 : 0;
  }
  const cliArgs: CliArgs = {
    config: values.config,
    rest: positionals.slice(1),
    daemon: values.daemon ?? false,
    child: values.child,
    sshPort: values["ssh-port"],
    httpPort: values["http-port"],
  };
  try {
    const code = await dispatch(command, cliArgs, host);
    if (code !== undefined) return code;
    host.stderr(`unknown command "${command}"\n\n${USAGE}`);
    return 2;
  } catch (error) {
    if (error instanceof ConfigError) {
      host.stderr(`c8y-tunnel: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}
