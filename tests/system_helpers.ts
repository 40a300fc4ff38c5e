/**
 * Real programs for system tests: mosquitto, sshd, the agent as its own
 * process. Each starter returns a handle whose `stop()` frees everything,
 * once the program has said (on its output) that it listens.
 *
 * @module
 */
import { deadline } from "../lib/util/deadline.ts";
import { quoteWords } from "../lib/util/shell_words.ts";

/** True when an executable exists at `path`. */
export function installed(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** A free loopback TCP port (listen on 0, close, reuse the number). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * mosquitto's line once every listener is open (its "Opening … socket" line
 * comes before the listen()): wait for it with {@linkcode Started.waitForOutput}.
 */
export const MOSQUITTO_RUNNING: RegExp = /mosquitto version \S+ running/;

/** A child process with its output collected. */
export interface Started {
  readonly process: Deno.ChildProcess;
  /** Everything written to stdout and stderr so far. */
  output(): string;
  /**
   * Resolves once the output matches `pattern` (checked as output arrives);
   * rejects when the process ends first or after `timeoutMs`.
   */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** SIGTERM, then wait for exit; returns the status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/** Spawns a command with piped output that is drained in the background. */
export function spawn(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Started {
  const process = new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.env ? { env: options.env } : {}),
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const waiters = new Set<() => void>();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) {
      text += decoder.decode(chunk, { stream: true });
      for (const check of waiters) check();
    }
  };
  const drained = Promise.all([drain(process.stdout), drain(process.stderr)]);
  let stopped: Promise<Deno.CommandStatus> | undefined;
  return {
    process,
    output: () => text,
    async waitForOutput(pattern: RegExp, timeoutMs = 10_000) {
      const seen = Promise.withResolvers<void>();
      const check = () => {
        if (pattern.test(text)) seen.resolve();
      };
      waiters.add(check);
      check();
      const ended = process.status.then((status) => {
        throw new Error(
          `${command} exited (code ${status.code}) before printing ${pattern}: ${text}`,
        );
      });
      ended.catch(() => {});
      try {
        await deadline(
          Promise.race([seen.promise, ended]),
          timeoutMs,
          `${command} did not print ${pattern} within ${timeoutMs} ms: ${text}`,
        );
      } finally {
        waiters.delete(check);
      }
    },
    stop(signal: Deno.Signal = "SIGTERM") {
      stopped ??= (async () => {
        try {
          process.kill(signal);
        } catch { /* already exited */ }
        const status = await process.status;
        await drained;
        return status;
      })();
      return stopped;
    },
  };
}

/** main.ts of this checkout: the tests run `c8y-tunnel` from source. */
export const MAIN: string = new URL("../main.ts", import.meta.url).pathname;

/** The words that run `c8y-tunnel <args>` from source: `deno run --allow-all main.ts <args>`. */
export function cliWords(...args: string[]): [string, ...string[]] {
  return [Deno.execPath(), "run", "--allow-all", MAIN, ...args];
}

/**
 * The operation file's command for this checkout, quoted shell-style as
 * tedge-mapper-c8y splits it: `deno run --allow-all main.ts connect --config <path>`.
 */
export function connectCommand(configPath: string): string {
  return quoteWords(cliWords("connect", "--config", configPath));
}

/** What a finished process left: exit code and both outputs. */
export interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `command args` (stdin closed, `env` added, in `cwd`) to its end and collects its output. */
export async function runCommand(
  command: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string | URL } = {},
): Promise<Ran> {
  const out = await new Deno.Command(command, {
    args,
    env: options.env ?? {},
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
}

/** Runs `c8y-tunnel <args>` as its own process (the way users and the mapper do) to its end. */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
): Promise<Ran> {
  const [deno, ...words] = cliWords(...args);
  return runCommand(deno, words, { env });
}

/** Starts the daemon, `c8y-tunnel run --config <path>`, as its own process with `env` added. */
export function spawnDaemon(
  configPath: string,
  env?: Record<string, string>,
): Started {
  const [deno, ...words] = cliWords("run", "--config", configPath);
  return spawn(deno, words, env ? { env } : {});
}

/** A mosquitto on a free port with a temp dir of its own (for its config and the test's files). */
export interface TempMosquitto extends AsyncDisposable {
  readonly dir: string;
  readonly port: number;
  readonly broker: Started;
}

/** Starts {@linkcode startMosquitto} in a new temp dir; dispose stops it and removes the dir. */
export async function startTempMosquitto(
  prefix = "c8y-tunnel-mqtt-",
): Promise<TempMosquitto> {
  const dir = await Deno.makeTempDir({ prefix });
  const port = freePort();
  let broker: Started;
  try {
    broker = await startMosquitto(dir, port);
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
  return {
    dir,
    port,
    broker,
    async [Symbol.asyncDispose]() {
      await broker.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Starts mosquitto on 127.0.0.1:port with a generated config. */
export async function startMosquitto(
  dir: string,
  port: number,
  /** More lines of mosquitto.conf, e.g. `max_inflight_messages 1`. */
  extraConfig: readonly string[] = [],
): Promise<Started> {
  const conf = `${dir}/mosquitto-${port}.conf`;
  await Deno.writeTextFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      "allow_anonymous true",
      "set_tcp_nodelay true",
      "persistence false",
      // stderr is unbuffered: its start-up lines arrive as they are written.
      "log_dest stderr",
      ...extraConfig,
      "",
    ].join("\n"),
  );
  const started = spawn("/usr/sbin/mosquitto", ["-c", conf]);
  await started.waitForOutput(MOSQUITTO_RUNNING);
  return started;
}

/** A running sshd and a client key that it accepts for the current user. */
export interface Sshd extends Started {
  readonly port: number;
  readonly clientKey: string;
  readonly user: string;
}

/** Starts OpenSSH's sshd on a free loopback port (DESIGN.md §5). */
export async function startSshd(dir: string): Promise<Sshd> {
  await Deno.mkdir("/run/sshd", { recursive: true });
  const hostKey = `${dir}/host_ed25519`;
  const clientKey = `${dir}/client_ed25519`;
  for (const key of [hostKey, clientKey]) {
    const out = await new Deno.Command("ssh-keygen", {
      args: ["-q", "-t", "ed25519", "-N", "", "-f", key],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(
        `ssh-keygen failed: ${new TextDecoder().decode(out.stderr)}`,
      );
    }
  }
  await Deno.copyFile(`${clientKey}.pub`, `${dir}/authorized_keys`);
  await Deno.chmod(`${dir}/authorized_keys`, 0o600);
  const port = freePort();
  const config = `${dir}/sshd_config`;
  await Deno.writeTextFile(
    config,
    [
      "ListenAddress 127.0.0.1",
      `Port ${port}`,
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      "StrictModes no",
      "PermitRootLogin prohibit-password",
      `PidFile ${dir}/sshd.pid`,
      "",
    ].join("\n"),
  );
  const started = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", config]);
  await started.waitForOutput(
    new RegExp(`Server listening on 127\\.0\\.0\\.1 port ${port}\\.`),
  );
  const user = new TextDecoder().decode(
    (await new Deno.Command("id", { args: ["-un"], stdout: "piped" }).output())
      .stdout,
  ).trim();
  return { ...started, port, clientKey, user };
}

/** ssh client arguments for a non-interactive session to 127.0.0.1:port. */
export function sshArgs(sshd: Sshd, port: number, command: string): string[] {
  return [
    "-p",
    String(port),
    "-i",
    sshd.clientKey,
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=20",
    `${sshd.user}@127.0.0.1`,
    command,
  ];
}
