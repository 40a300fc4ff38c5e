/**
 * Reading extra CA certificates (`c8y.root_cert_path`) for the cloud leg's
 * TLS: settings files are read by lib/config/, nowhere else.
 *
 * @module
 */
import { join } from "node:path";

const PEM_CERT = "-----BEGIN CERTIFICATE-----";

/**
 * Reads extra CA certificates from `path`: a PEM file, or a directory whose
 * regular files (symlinks followed) holding PEM certificates are all taken.
 * @throws {Error} naming `c8y.root_cert_path`, the path and what is wrong.
 */
export async function loadCaCerts(path: string): Promise<string[]> {
  const key = "c8y.root_cert_path";
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    throw new Error(
      `cannot read ${key} = "${path}": ${
        error instanceof Deno.errors.NotFound ? "no such file or directory" : (
          error instanceof Error ? error.message : String(error)
        )
      }: give a PEM file or a directory of PEM files, or "" for none`,
    );
  }
  const texts: string[] = [];
  if (info.isDirectory) {
    const names: string[] = [];
    for await (const entry of Deno.readDir(path)) names.push(entry.name);
    names.sort();
    for (const name of names) {
      const file = join(path, name);
      try {
        if (!(await Deno.stat(file)).isFile) continue;
        const text = await Deno.readTextFile(file);
        if (text.includes(PEM_CERT)) texts.push(text);
      } catch {
        // A dangling symlink or an unreadable file is not a certificate.
      }
    }
  } else {
    const text = await Deno.readTextFile(path).catch((error) => {
      throw new Error(
        `cannot read ${key} = "${path}": ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    });
    if (text.includes(PEM_CERT)) texts.push(text);
  }
  const unique = [...new Set(texts)];
  if (unique.length === 0) {
    throw new Error(
      `${key} = "${path}" holds no PEM certificate ("${PEM_CERT}"): give a PEM file or a directory of PEM files, or "" for none`,
    );
  }
  return unique;
}
