/**
 * A nesting-depth check for JSON text, run before `JSON.parse` on anything
 * read from MQTT: V8 parses deep nesting without a stack overflow, but a
 * 2 MB `[[[[…` costs ~130 MB of heap and over a second, and the parsed
 * value can still overflow the stack of a recursive consumer such as
 * `JSON.stringify`. Remote-access operations nest 3 levels.
 *
 * @module
 */

/** Deepest nesting of arrays and objects accepted in a JSON message from MQTT. */
export const MAX_JSON_DEPTH = 32;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACKET = 0x5d;
const CLOSE_BRACE = 0x7d;

/**
 * True when the arrays and objects of `text` nest deeper than `max`
 * (brackets inside strings do not count). One pass, no allocation; for any
 * text, valid JSON or not.
 */
export function jsonTooDeep(text: string, max = MAX_JSON_DEPTH): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (inString) {
      if (code === BACKSLASH) i++;
      else if (code === QUOTE) inString = false;
    } else if (code === QUOTE) {
      inString = true;
    } else if (code === OPEN_BRACKET || code === OPEN_BRACE) {
      if (++depth > max) return true;
    } else if (code === CLOSE_BRACKET || code === CLOSE_BRACE) {
      depth--;
    }
  }
  return false;
}
