/**
 * Shell-style words, as tedge-mapper-c8y reads an operation file's
 * `command` (thin-edge splits it with the `shell_words` crate, POSIX shell
 * rules without expansion): `quoteWords` writes a command line that splits
 * back into exactly the given words, `splitWords` reads one.
 *
 * @module
 */

/** Characters that never need quoting in a shell word. */
const PLAIN = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** One word, quoted for a POSIX shell only when it needs it (`'…'`, with `'\''` for a quote). */
export function quoteWord(word: string): string {
  if (PLAIN.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** A command line that `splitWords` (and thin-edge's mapper) splits back into `words`. */
export function quoteWords(words: readonly string[]): string {
  return words.map(quoteWord).join(" ");
}

/**
 * Splits a command line into words by POSIX shell rules, without any
 * expansion: blanks separate words; `'…'` is literal; in `"…"` a backslash
 * escapes only `$`, `` ` ``, `"`, `\` and a newline; elsewhere it escapes
 * any character (backslash-newline vanishes); `#` at the start of a word
 * starts a comment. Throws a `SyntaxError` for an unterminated quote or a
 * trailing backslash (the mapper refuses such a command).
 */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let i = 0;
  const n = line.length;
  while (i < n) {
    const c = line[i]!;
    if (c === " " || c === "\t" || c === "\n") {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
      i++;
    } else if (c === "#" && !inWord) {
      while (i < n && line[i] !== "\n") i++;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) {
        throw new SyntaxError(
          `Cannot split the command line: unterminated single quote at ${i}`,
        );
      }
      word += line.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i++;
      for (;;) {
        if (i >= n) {
          throw new SyntaxError(
            "Cannot split the command line: unterminated double quote",
          );
        }
        const d = line[i]!;
        if (d === '"') break;
        if (d === "\\" && i + 1 < n && '$`"\\\n'.includes(line[i + 1]!)) {
          if (line[i + 1] !== "\n") word += line[i + 1];
          i += 2;
        } else {
          word += d;
          i++;
        }
      }
      inWord = true;
      i++;
    } else if (c === "\\") {
      if (i + 1 >= n) {
        throw new SyntaxError(
          "Cannot split the command line: trailing backslash",
        );
      }
      if (line[i + 1] !== "\n") {
        word += line[i + 1];
        inWord = true;
      }
      i += 2;
    } else {
      word += c;
      inWord = true;
      i++;
    }
  }
  if (inWord) words.push(word);
  return words;
}
