/**
 * Shell-style words: what tedge-mapper-c8y does to an operation file's
 * `command` (thin-edge's `shell_words::split`), checked against /bin/sh.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { quoteWord, quoteWords, splitWords } from "../lib/util/shell_words.ts";

/** The words /bin/sh makes of `line` (no expansion characters in the test lines). */
async function shWords(line: string): Promise<string[]> {
  const out = await new Deno.Command("/bin/sh", {
    args: ["-c", `for w in ${line}; do printf '%s\\0' "$w"; done`],
    stdout: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  return text === "" ? [] : text.slice(0, -1).split("\0");
}

Deno.test("splitWords() splits like /bin/sh: quotes, escapes, blanks, comments", async () => {
  const lines = [
    "/usr/bin/c8y-tunnel connect",
    "'/opt/my tools/c8y-tunnel' connect --config '/etc/c y/x.toml'",
    `"/opt/my tools/c8y-tunnel" connect --config "/etc/a \\"q\\" b"`,
    "a\\ b c\\\\d   e\t f",
    `'it'\\''s' "x'y" 'a"b'`,
    `mixed"dq part"'sq part'plain`,
    "x '' y",
  ];
  for (const line of lines) {
    assert.deepEqual(splitWords(line), await shWords(line), line);
  }
  assert.deepEqual(splitWords("a b # a comment\nc"), ["a", "b", "c"]);
  assert.deepEqual(splitWords("a#b"), ["a#b"]);
  assert.deepEqual(splitWords("   "), []);
});

Deno.test("splitWords() throws a SyntaxError for an unterminated quote or a trailing backslash", () => {
  for (const bad of ["'open", '"open', "tail\\"]) {
    assert.throws(() => splitWords(bad), SyntaxError, bad);
  }
});

Deno.test("quoteWords() round-trips through splitWords() for any words", () => {
  fc.assert(
    fc.property(
      fc.array(fc.string({ maxLength: 12 }), { maxLength: 6 }),
      (ws) => {
        assert.deepEqual(splitWords(quoteWords(ws)), ws);
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("quoteWord() leaves plain paths alone and quotes the rest", async () => {
  assert.equal(quoteWord("/usr/bin/c8y-tunnel"), "/usr/bin/c8y-tunnel");
  assert.equal(quoteWord("/opt/my tools/x"), "'/opt/my tools/x'");
  assert.equal(quoteWord(""), "''");
  const words = ["/opt/my tools/c8y-tunnel", "it's", 'a "b"', "$HOME"];
  assert.deepEqual(await shWords(quoteWords(words)), words);
});
