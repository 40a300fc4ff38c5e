/**
 * Reading extra CA certificates (`c8y.root_cert_path`) for the cloud leg's
 * TLS: settings files are read by lib/config/, nowhere else.
 *
 * The path is used as thin-edge uses it: a PEM file, or a directory such as
 * the operating system's `/etc/ssl/certs` (thin-edge's default), which holds
 * PEM files, symlinks to them, OpenSSL hash links (`5a3f0ff8.0`) that point
 * at the same files, bundles of many certificates (`ca-certificates.crt`),
 * and things that are no certificate at all (`java/`, keystores, CRLs). The
 * result is every distinct certificate once, each as its own PEM block, so
 * the TLS stack parses ~150 roots instead of ~600 copies of them.
 *
 * @module
 */
import { X509Certificate } from "node:crypto";
import { join } from "node:path";

const KEY = "c8y.root_cert_path";
const PEM_BLOCK =
  /-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----/g;
/** A bundle holds a few hundred certificates; nothing sensible is larger. */
const MAX_FILE_BYTES = 8 * 1024 * 1024;
/** Files read at once from a directory. */
const PARALLEL_READS = 16;

function reasonOf(error: unknown): string {
  return error instanceof Deno.errors.NotFound
    ? "no such file or directory"
    : error instanceof Error
    ? error.message
    : String(error);
}

/**
 * The certificate blocks of a PEM text, keyed by their base64 body without
 * whitespace (so the same certificate from a bundle and from its own file is
 * one entry). Blocks that do not parse as X.509 are skipped: one corrupt
 * certificate must not break every TLS connection.
 */
function addBlocks(text: string, into: Map<string, string>): void {
  for (const match of text.matchAll(PEM_BLOCK)) {
    const body = match[1]!.replace(/\s+/g, "");
    if (body === "" || into.has(body)) continue;
    const lines = body.match(/.{1,64}/g)!.join("\n");
    const pem =
      `-----BEGIN CERTIFICATE-----\n${lines}\n-----END CERTIFICATE-----\n`;
    try {
      new X509Certificate(pem);
    } catch {
      continue;
    }
    into.set(body, pem);
  }
}

/** The text of a regular file below the size limit, or null for anything else. */
async function readCandidate(file: string): Promise<string | null> {
  try {
    const info = await Deno.stat(file);
    if (!info.isFile || info.size > MAX_FILE_BYTES) return null;
    const bytes = await Deno.readFile(file);
    return new TextDecoder().decode(bytes);
  } catch {
    // A dangling symlink or an unreadable file is not a certificate.
    return null;
  }
}

/**
 * The distinct files of a directory, following symlinks: a hash link, a
 * `.pem` symlink and their target are one file, read once.
 */
async function distinctFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  names.sort();
  const seen = new Set<string>();
  const files: string[] = [];
  for (let i = 0; i < names.length; i += PARALLEL_READS) {
    const batch = names.slice(i, i + PARALLEL_READS).map((name) =>
      join(dir, name)
    );
    const real = await Promise.all(
      batch.map((file) => Deno.realPath(file).catch(() => null)),
    );
    real.forEach((target, j) => {
      if (target === null || seen.has(target)) return;
      seen.add(target);
      files.push(batch[j]!);
    });
  }
  return files;
}

/**
 * Reads extra CA certificates from `path`: a PEM file (one certificate or a
 * bundle), or a directory whose regular files (symlinks followed) are read
 * for PEM certificates. Returns each distinct certificate once, one PEM
 * block per entry; files and blocks that are not certificates are skipped.
 * @throws {Error} naming `c8y.root_cert_path`, the path and what is wrong.
 */
export async function loadCaCerts(path: string): Promise<string[]> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    throw new Error(
      `cannot read ${KEY} = "${path}": ${
        reasonOf(error)
      }: give a PEM file or a directory of PEM files, or "" for none`,
    );
  }
  const certs = new Map<string, string>();
  if (info.isDirectory) {
    let files: string[];
    try {
      files = await distinctFiles(path);
    } catch (error) {
      throw new Error(`cannot read ${KEY} = "${path}": ${reasonOf(error)}`);
    }
    for (let i = 0; i < files.length; i += PARALLEL_READS) {
      const texts = await Promise.all(
        files.slice(i, i + PARALLEL_READS).map(readCandidate),
      );
      for (const text of texts) if (text !== null) addBlocks(text, certs);
    }
  } else {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      throw new Error(`cannot read ${KEY} = "${path}": ${reasonOf(error)}`);
    }
    addBlocks(text, certs);
  }
  if (certs.size === 0) {
    throw new Error(
      `${KEY} = "${path}" holds no PEM certificate ("-----BEGIN CERTIFICATE-----"): give a PEM file or a directory of PEM files, or "" for none`,
    );
  }
  return [...certs.values()];
}
