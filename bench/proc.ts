/**
 * Memory and CPU of a process, read from /proc (Linux): the numbers the
 * benchmark reports for each contender.
 *
 * @module
 */

/** USER_HZ: clock ticks per second in /proc/<pid>/stat. */
const PAGE_TICKS = 100;

/**
 * The `<field>: <n> kB` line of a /proc file's text (status,
 * smaps_rollup), in bytes; NaN when the field is not there.
 */
export function kBField(text: string, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return match === null ? NaN : Number(match[1]) * 1024;
}

function statusField(pid: number, field: string): number {
  const bytes = kBField(
    Deno.readTextFileSync(`/proc/${pid}/status`),
    field,
  );
  if (Number.isNaN(bytes)) {
    throw new Error(
      `Cannot read ${field} of process ${pid}: not in /proc/${pid}/status`,
    );
  }
  return bytes;
}

/** Resident set size in bytes. */
export function rss(pid: number): number {
  return statusField(pid, "VmRSS");
}

/** Where a process's resident memory goes, in bytes. */
export interface Memory {
  /** `VmRSS`: every resident page, shared ones included. */
  readonly rss: number;
  /** `RssAnon`: private (anonymous) pages: heap, stacks; what the process alone costs. */
  readonly anon: number;
  /** `Pss` from smaps_rollup: RSS with each shared page divided by the processes sharing it. */
  readonly pss: number;
}

/** RSS, private memory and PSS of one process (`/proc/<pid>/status`, `smaps_rollup`). */
export function memory(pid: number): Memory {
  const pss = kBField(
    Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`),
    "Pss",
  );
  if (Number.isNaN(pss)) {
    throw new Error(`Cannot read Pss of process ${pid}: not in smaps_rollup`);
  }
  return {
    rss: statusField(pid, "VmRSS"),
    anon: statusField(pid, "RssAnon"),
    pss,
  };
}

/** {@linkcode memory} of a process plus that of its children (socat forks per connection). */
export function treeMemory(pid: number): Memory {
  let total = memory(pid);
  for (const child of children(pid)) {
    try {
      const m = memory(child);
      total = {
        rss: total.rss + m.rss,
        anon: total.anon + m.anon,
        pss: total.pss + m.pss,
      };
    } catch {
      // exited meanwhile
    }
  }
  return total;
}

/** Peak resident set size in bytes since start or the last {@linkcode resetPeak}. */
export function peakRss(pid: number): number {
  return statusField(pid, "VmHWM");
}

/** Resets the peak RSS (`VmHWM`) of a process; false when the kernel refuses. */
export function resetPeak(pid: number): boolean {
  try {
    Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/**
 * User + system CPU seconds a process has used, with those of its children
 * that have exited and been waited for (socat forks one per connection).
 */
export function cpuSeconds(pid: number): number {
  const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // utime, stime, cutime, cstime are fields 14-17 of the line: 11-14 here.
  let ticks = 0;
  for (let i = 11; i <= 14; i++) ticks += Number(fields[i]);
  return ticks / PAGE_TICKS;
}

/** RSS of a process plus that of its children, in bytes. */
export function treeRss(pid: number): number {
  let total = rss(pid);
  for (const child of children(pid)) {
    try {
      total += rss(child);
    } catch {
      // exited meanwhile
    }
  }
  return total;
}

/** Child process ids of `pid` (one level), for relays that fork per connection. */
export function children(pid: number): number[] {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`);
    return text.trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Samples a value every `intervalMs` until stopped; `stop()` resolves with
 * the largest value seen (sampled once more at the end).
 */
export function sampleMax(
  read: () => number,
  intervalMs = 20,
): { stop(): number } {
  let max = 0;
  const sample = () => {
    try {
      max = Math.max(max, read());
    } catch {
      // the process may be gone between samples
    }
  };
  sample();
  const timer = setInterval(sample, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return max;
    },
  };
}
