/**
 * Runs an operation file's command the way tedge-mapper-c8y does, from
 * thin-edge's source (facts in /tmp/helpers/tedge-facts.md):
 * - `command` split shell-style, the SmartREST line appended as one argument
 *   (`converter.rs` `forward_operation_request`, `logged_command.rs`);
 * - `TEDGE_CLOUD_PROFILE=<profile>` set only for a profile's mapper;
 * - stdin, stdout and stderr piped; the outcome is known only when the
 *   process has exited AND both pipes reached EOF (`wait_with_output`);
 * - after `timeout` seconds SIGTERM, stderr gets
 *   `operation failed due to timeout: duration=<n>s`;
 * - exit 0 -> `503,<op>,<stdout>`; else `502,<op>,<reason>` with the reason
 *   from {@linkcode failureReason}, cut at 500 bytes.
 *
 * @module
 */
import { splitWords } from "../lib/util/shell_words.ts";
import { csvField } from "../lib/protocol/csv.ts";

/** What the mapper would see and report for one run. */
export interface MapperRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The status line the mapper would publish after 501. */
  readonly status: string;
  /** The failure reason (502 only), as Cumulocity would show it. */
  readonly reason: string | null;
  readonly timedOut: boolean;
}

/** Drops control characters except \r \n \t and cuts at `max` bytes (`sanitize_for_smartrest`). */
export function sanitize(text: string, max = 16000): string {
  let out = "";
  let bytes = 0;
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    const control = code < 0x20 || (code >= 0x7f && code < 0xa0);
    if (control && ch !== "\r" && ch !== "\n" && ch !== "\t") continue;
    bytes += new TextEncoder().encode(ch).length;
    if (bytes > max) break;
    out += ch;
  }
  return out;
}

/**
 * The mapper's failure reason (`get_failure_reason_for_smartrest`): the
 * last line of stderr; when stderr has more than one line, that line, a
 * blank line and all of stderr.
 */
export function failureReason(stderr: string): string {
  const lines = stderr.trimEnd().split(/\r?\n/);
  const last = lines.at(-1) ?? "";
  const count = stderr === ""
    ? 0
    : stderr.replace(/\n$/, "").split("\n").length;
  return count <= 1 ? sanitize(last) : sanitize(`${last}\n\n${stderr}`);
}

/** Options of {@linkcode runLikeMapper}. */
export interface MapperOptions {
  /** Set as TEDGE_CLOUD_PROFILE (a profile's mapper); unset otherwise. */
  readonly profile?: string;
  /** Extra environment (the mapper passes its own on). */
  readonly env?: Record<string, string>;
  /** The operation file's `timeout` in seconds (default 3600). */
  readonly timeoutS?: number;
  readonly operation?: string;
  readonly cwd?: string;
}

/** Runs `command` + `line` as tedge-mapper-c8y would and returns what it would report. */
export async function runLikeMapper(
  command: string,
  line: string,
  options: MapperOptions = {},
): Promise<MapperRun> {
  const [program, ...args] = splitWords(command);
  if (program === undefined) throw new Error("command line is empty.");
  const env: Record<string, string> = { ...options.env };
  if (options.profile !== undefined) env.TEDGE_CLOUD_PROFILE = options.profile;
  const child = new Deno.Command(program, {
    args: [...args, line],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    ...(options.cwd ? { cwd: options.cwd } : {}),
  }).spawn();
  await child.stdin.close();
  const timeoutS = options.timeoutS ?? 3600;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
  }, timeoutS * 1000);
  const read = async (stream: ReadableStream<Uint8Array>) => {
    let text = "";
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      text += decoder.decode(chunk, { stream: true });
    }
    return text;
  };
  const [status, stdout, rawStderr] = await Promise.all([
    child.status,
    read(child.stdout),
    read(child.stderr),
  ]);
  clearTimeout(timer);
  const stderr = timedOut
    ? `${rawStderr}operation failed due to timeout: duration=${timeoutS}s\n`
    : rawStderr;
  const op = options.operation ?? "c8y_RemoteAccessConnect";
  if (status.code === 0 && !timedOut) {
    const result = sanitize(stdout);
    return {
      code: status.code,
      stdout,
      stderr,
      status: result === "" ? `503,${op}` : `503,${op},${csvField(result)}`,
      reason: null,
      timedOut,
    };
  }
  let reason = failureReason(stderr);
  if (new TextEncoder().encode(reason).length > 500) {
    reason = new TextDecoder().decode(
      new TextEncoder().encode(reason).slice(0, 500),
    );
  }
  return {
    code: status.code,
    stdout,
    stderr,
    status: `502,${op},${csvField(reason)}`,
    reason,
    timedOut,
  };
}

/** Kills the detached session process that `connect` names on its stdout ("in process <pid>"), if still alive. */
export function killSession(stdout: string): void {
  const pid = /in process (\d+)/.exec(stdout)?.[1];
  if (pid === undefined) return;
  try {
    Deno.kill(Number(pid), "SIGKILL");
  } catch {
    // Already ended with its session.
  }
}
