/**
 * The command line: parses arguments and runs one command (DESIGN.md §2).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type Config, ConfigError, loadConfig } from "./config/config.ts";
import { setupLogging } from "./util/log.ts";
import { Agent } from "./daemon/agent.ts";
import { demoCommand } from "./commands/demo.ts";
import {
  CHILD_ENV,
  runConnect,
  runConnectChild,
  selfCommand,
} from "./commands/connect.ts";
import { formatCheckLine, runCheck } from "./commands/check.ts";
import {
  daemonServesOperations,
  inspectOperationFile,
  pluginCommand,
  removeOperationFile,
  writeOperationFile,
} from "./config/operation_file.ts";
import { resolve as resolvePath } from "node:path";
import denoJson from "../deno.json" with { type: "json" };

/** The agent's version, from deno.json. */
export const VERSION: string = denoJson.version;

const USAGE =
  `c8y-tunnel ${VERSION} — Cumulocity Cloud Remote Access agent for thin-edge.io

Usage:
  c8y-tunnel run     [--config FILE]          daemon: MQTT listener + tunnels
  c8y-tunnel connect [--config FILE] "530,…"  one session (thin-edge operation plugin)
  c8y-tunnel init    [--config FILE] [--daemon]  write the thin-edge operation file
  c8y-tunnel cleanup [--config FILE]          remove it
  c8y-tunnel check   [--config FILE]          validate config, try broker and cloud
  c8y-tunnel demo    [--ssh-port N] [--http-port N]  broker + cloud simulator + agent
  c8y-tunnel --help | --version

The config file defaults to /etc/c8y-tunnel/config.toml (env C8Y_TUNNEL_CONFIG);
missing values come from /etc/tedge/tedge.toml.
`;

/** What the process should exit with. */
export type ExitCode = 0 | 1 | 2;

/** Runtime hooks the CLI needs from main.ts (signals), injectable for tests. */
export interface CliHost {
  /** Resolves when SIGTERM or SIGINT arrives. */
  readonly shutdownRequested: Promise<string>;
  readonly env: (name: string) => string | undefined;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

async function configFrom(
  path: string | undefined,
  host: CliHost,
): Promise<Config> {
  return await loadConfig({
    ...(path !== undefined ? { path } : {}),
    env: host.env,
  });
}

/** Runs the daemon until a shutdown signal, then closes everything within 5 s. */
async function runDaemon(config: Config, host: CliHost): Promise<ExitCode> {
  // In plugin mode the mapper runs `connect`, which hands requests to us;
  // listening for them too would serve and report each request twice.
  const operations = await daemonServesOperations(config);
  if (!operations) {
    host.stderr(
      "operation file is in plugin mode: serving requests handed over by `c8y-tunnel connect` only (run `c8y-tunnel init --daemon` to listen directly)\n",
    );
  }
  const agent = new Agent(config, { operations });
  const signal = await host.shutdownRequested;
  host.stderr(`received ${signal}, closing sessions\n`);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<"timeout">((resolve) =>
    timer = setTimeout(() => resolve("timeout"), 4500)
  );
  const result = await Promise.race([
    agent.close().then(() => "done" as const),
    deadline,
  ]);
  clearTimeout(timer);
  if (result === "timeout") {
    host.stderr("shutdown took longer than 4.5 s; exiting anyway\n");
  }
  return 0;
}

/** `connect "530,…"`: the parent hands over or starts the session; the detached child holds it. */
async function connectCommand(
  configPath: string | undefined,
  line: string | undefined,
  host: CliHost,
): Promise<ExitCode> {
  if (line === undefined) {
    host.stderr(
      'connect needs the request as its argument: c8y-tunnel connect "530,<device>,<host>,<port>,<key>"\n',
    );
    return 1;
  }
  const config = await configFrom(configPath, host);
  setupLogging(config.log);
  if (host.env(CHILD_ENV) === "1") {
    return await runConnectChild(config, line, {
      shutdownRequested: host.shutdownRequested,
    });
  }
  return await runConnect(config, line, {
    childArgs: [
      "connect",
      ...(configPath !== undefined
        ? ["--config", resolvePath(configPath)]
        : []),
      line,
    ],
    stdout: host.stdout,
    stderr: host.stderr,
  });
}

/** `init [--daemon]`: writes the thin-edge operation file. */
async function initCommand(
  configPath: string | undefined,
  daemon: boolean,
  host: CliHost,
): Promise<ExitCode> {
  const config = await configFrom(configPath, host);
  if (!daemon && config.c8y.profile !== "") {
    // Every thin-edge mapper shares operations/c8y: a plugin-mode file for one
    // profile would take the operation away from the default connection.
    host.stderr(
      `c8y-tunnel: plugin mode serves only the default connection, and c8y.profile = "${config.c8y.profile}": run \`c8y-tunnel init --daemon\` and the daemon for this profile instead\n`,
    );
    return 1;
  }
  let result;
  try {
    const command = daemon
      ? null
      : pluginCommand(config.configFile, selfCommand);
    result = await writeOperationFile(config, { command });
  } catch (error) {
    host.stderr(
      `c8y-tunnel: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    return 1;
  }
  if (result.previous.kind === "foreign") {
    host.stderr(
      `note: replaced an operation file that ran "${result.previous.command}" (thin-edge's c8y-remote-access-plugin?); remove that package so it does not write the file back\n`,
    );
  }
  host.stdout(
    daemon
      ? `wrote ${result.path} (daemon mode: no [exec]); run the daemon: c8y-tunnel run (systemctl enable --now c8y-tunnel)\n`
      : `wrote ${result.path} (plugin mode: tedge-mapper-c8y runs c8y-tunnel connect per request)\n`,
  );
  return 0;
}

/** `cleanup`: removes our operation file; a missing one is fine, another program's is left alone. */
async function cleanupCommand(
  configPath: string | undefined,
  host: CliHost,
): Promise<ExitCode> {
  const config = await configFrom(configPath, host);
  const state = await inspectOperationFile(config);
  if (state.kind === "foreign") {
    host.stdout(
      `left ${state.path} in place: it runs "${state.command}", not c8y-tunnel\n`,
    );
    return 0;
  }
  try {
    const removed = await removeOperationFile(config);
    host.stdout(
      removed
        ? `removed ${state.path}\n`
        : `${state.path} does not exist; nothing to remove\n`,
    );
    return 0;
  } catch (error) {
    host.stderr(
      `c8y-tunnel: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    return 1;
  }
}

/** `check`: one OK/FAIL line per item; exit 0 only when all are OK. */
async function checkCommand(
  configPath: string | undefined,
  host: CliHost,
): Promise<ExitCode> {
  const report = await runCheck({
    ...(configPath !== undefined ? { path: configPath } : {}),
    env: host.env,
  });
  for (const line of report.lines) host.stdout(`${formatCheckLine(line)}\n`);
  return report.ok ? 0 : 1;
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
        "ssh-port": { type: "string" },
        "http-port": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (error) {
    host.stderr(
      `${error instanceof Error ? error.message : String(error)}\n\n${USAGE}`,
    );
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
  try {
    switch (command) {
      case "run": {
        const config = await configFrom(values.config, host);
        setupLogging(config.log);
        return await runDaemon(config, host);
      }
      case "demo":
        return await demoCommand({
          sshPort: values["ssh-port"],
          httpPort: values["http-port"],
        }, host);
      case "connect":
        return await connectCommand(values.config, positionals[1], host);
      case "init":
        return await initCommand(values.config, values.daemon ?? false, host);
      case "cleanup":
        return await cleanupCommand(values.config, host);
      case "check":
        return await checkCommand(values.config, host);
      default:
        host.stderr(`unknown command "${command}"\n\n${USAGE}`);
        return 2;
    }
  } catch (error) {
    if (error instanceof ConfigError) {
      host.stderr(`c8y-tunnel: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}
