/**
 * Private helpers to read a TOML settings file: parse with a message that
 * names the file and line (never the text), and look up dotted keys.
 *
 * @module
 */
import { parse as parseToml, TomlError } from "smol-toml";
import { ConfigError, isTable } from "./_messages.ts";

/** TOML text -> table; a syntax error names the file and line (never the text). */
export function parseTomlText(
  file: string,
  text: string,
): Record<string, unknown> {
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (error) {
    if (!(error instanceof TomlError)) throw error;
    const detail = (error.message.split("\n")[0] ?? "")
      .replace(/^Invalid TOML document: /, "");
    throw new ConfigError(
      `${file}: TOML syntax error at line ${error.line}, column ${error.column}: ${detail}`,
    );
  }
}

/** The value at a dotted path ("c8y.bridge.topic_prefix"), or undefined. */
export function lookup(doc: Record<string, unknown>, path: string): unknown {
  let node: unknown = doc;
  for (const part of path.split(".")) {
    if (!isTable(node) || !Object.hasOwn(node, part)) return undefined;
    node = node[part];
  }
  return node;
}
