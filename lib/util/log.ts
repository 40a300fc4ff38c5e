/**
 * Logging set-up: one category tree under "c8y-tunnel", written to stderr as
 * text or JSON lines at the configured level. Modules take their logger with
 * {@linkcode logger}; nothing here ever formats a data chunk.
 *
 * @module
 */
import {
  configureSync,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogRecord,
  resetSync,
  type Sink,
} from "@logtape/logtape";

/** Lowest level of log records that are written (config key log.level, DESIGN.md §2). */
export type LogLevel = "debug" | "info" | "warn" | "error";
/** Log line format: human-readable text or one JSON object per line (log.format). */
export type LogFormat = "text" | "json";
export type { Logger };

const LEVELS = {
  debug: "debug",
  info: "info",
  warn: "warning",
  error: "error",
} as const;

/** Where log lines go; stderr unless a test captures them. */
export type LineWriter = (line: string) => void;

const encoder = new TextEncoder();
const stderrWriter: LineWriter = (line) => {
  try {
    Deno.stderr.writeSync(encoder.encode(line));
  } catch {
    // stderr closed (detached process): nothing sensible left to do.
  }
};

/** Drops every line (`connect` without `log.file`: its stderr is the operation's failure reason). */
export const dropLines: LineWriter = () => {};

/**
 * Appends each line to `path` (created 0644 if missing); lines that cannot
 * be written are dropped, as nothing else may go to `connect`'s stderr.
 */
export function fileLineWriter(path: string): LineWriter {
  let file: Deno.FsFile | null = null;
  try {
    file = Deno.openSync(path, {
      append: true,
      create: true,
      mode: 0o644,
    });
  } catch {
    return dropLines;
  }
  return (line) => {
    try {
      file?.writeSync(encoder.encode(line));
    } catch {
      // Disk full or file gone: the log is best effort.
    }
  };
}

/** Configures logging once per process (calling again replaces the set-up). */
export function setupLogging(
  options: {
    readonly level: LogLevel;
    readonly format: LogFormat;
    readonly write?: LineWriter;
  },
): void {
  const write = options.write ?? stderrWriter;
  const formatter = options.format === "json"
    ? getJsonLinesFormatter()
    : getTextFormatter({
      timestamp: "date-time-timezone",
      // Strings bare (paths, targets, reasons), everything else as JSON.
      value: (v: unknown) =>
        typeof v === "string" ? v : JSON.stringify(v) ?? String(v),
    });
  const sink: Sink = (record: LogRecord) => write(formatter(record));
  resetSync();
  configureSync({
    reset: true,
    sinks: { out: sink },
    loggers: [
      {
        category: ["c8y-tunnel"],
        lowestLevel: LEVELS[options.level],
        sinks: ["out"],
      },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["out"] },
    ],
  });
}

/** A logger under the agent's category tree, e.g. `logger("mqtt")`. */
export function logger(...category: string[]): Logger {
  return getLogger(["c8y-tunnel", ...category]);
}

/** Shortens a connection key for log lines: enough to correlate, not to reuse. */
export function shortKey(key: string): string {
  return key.length <= 8 ? key : `${key.slice(0, 8)}…`;
}
