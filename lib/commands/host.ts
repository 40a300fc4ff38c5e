/**
 * What every command gets from main.ts (signals, environment, output) and
 * the few steps they share: loading the config the command line names,
 * and a clean stop within the shutdown deadline.
 *
 * @module
 */
import { type Config, loadConfig } from "../config/config.ts";
import { settlesWithin, SHUTDOWN_MS } from "../util/deadline.ts";

/** What the process should exit with: 0 ok, 1 failed, 2 bad command line. */
export type ExitCode = 0 | 1 | 2;

/** Runtime hooks the CLI needs from main.ts (signals), injectable for tests. */
export interface CliHost {
  /** Resolves when SIGTERM or SIGINT arrives. */
  readonly shutdownRequested: Promise<string>;
  readonly env: (name: string) => string | undefined;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

/** The command line as the commands see it. */
export interface CliArgs {
  /** `--config FILE`, as given. */
  readonly config: string | undefined;
  /** Positional arguments after the command name. */
  readonly rest: readonly string[];
  /** `init --daemon`. */
  readonly daemon: boolean;
  /** `init --child ID`, `cleanup --child ID`: a child device's external id. */
  readonly child: string | undefined;
  /** `demo --ssh-port N`. */
  readonly sshPort: string | undefined;
  /** `demo --http-port N`. */
  readonly httpPort: string | undefined;
}

/**
 * Loads the config `--config` names (else env C8Y_TUNNEL_CONFIG, else the
 * default path). `profileFromEnv`: the cloud profile is TEDGE_CLOUD_PROFILE's
 * alone, as tedge-mapper-c8y tells `connect` (see loadConfig).
 */
export async function configFrom(
  path: string | undefined,
  host: CliHost,
  options: { readonly profileFromEnv?: boolean } = {},
): Promise<Config> {
  return await loadConfig({
    ...(path !== undefined ? { path } : {}),
    env: host.env,
    ...(options.profileFromEnv ? { profileFromEnv: true } : {}),
  });
}

/**
 * Waits for `stopping` at most {@linkcode SHUTDOWN_MS} (the exit must come
 * within 5 s of the signal); says so on stderr when it took longer.
 */
export async function stopWithinDeadline(
  stopping: Promise<unknown>,
  host: Pick<CliHost, "stderr">,
  what: string,
): Promise<void> {
  if (!(await settlesWithin(stopping, SHUTDOWN_MS))) {
    host.stderr(
      `${what} took longer than ${SHUTDOWN_MS / 1000} s; exiting anyway\n`,
    );
  }
}
