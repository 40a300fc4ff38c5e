/**
 * The PEM material for TLS to the local broker (thin-edge's
 * `mqtt.client.auth.ca_file`, `ca_dir`, `cert_file`, `key_file`, our
 * `mqtt.*` keys of the same names): settings files are read by lib/config/,
 * nowhere else. Read synchronously, once, when a broker connection is set up.
 *
 * @module
 */
import { join } from "node:path";
import type { Config } from "./types.ts";

const PEM_CERT = "-----BEGIN CERTIFICATE-----";

/** What TLS to the broker needs: trusted CAs, and the client certificate with its key. */
export interface BrokerTlsMaterial {
  /** PEM texts of the CA certificates (ca_file and every PEM file of ca_dir). */
  readonly ca: readonly string[];
  readonly cert?: string;
  readonly key?: string;
}

function keyName(config: Config, key: string): string {
  const from = config.origins[key];
  return from === undefined ? key : `${key} (${from})`;
}

function readText(config: Config, key: string, path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Error
      ? error.message
      : String(error);
    throw new Error(
      `Cannot read ${keyName(config, key)} = "${path}": ${reason}`,
    );
  }
}

/**
 * Reads the files `config.mqtt.tls` names; null when the broker is plain
 * MQTT (thin-edge too speaks TLS to its broker only when a CA file or
 * directory is set).
 * @throws {Error} naming the key, where it came from, the path and the problem.
 */
export function readBrokerTls(config: Config): BrokerTlsMaterial | null {
  const tls = config.mqtt.tls;
  if (tls === null) return null;
  const ca: string[] = [];
  if (tls.caFile !== null) {
    const text = readText(config, "mqtt.ca_file", tls.caFile);
    if (!text.includes(PEM_CERT)) {
      throw new Error(
        `${
          keyName(config, "mqtt.ca_file")
        } = "${tls.caFile}" holds no PEM certificate: give the CA certificate of the broker`,
      );
    }
    ca.push(text);
  }
  if (tls.caDir !== null) {
    let names: string[];
    try {
      names = [...Deno.readDirSync(tls.caDir)].map((entry) => entry.name)
        .sort();
    } catch (error) {
      throw new Error(
        `Cannot read ${keyName(config, "mqtt.ca_dir")} = "${tls.caDir}": ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    }
    for (const name of names) {
      try {
        const file = join(tls.caDir, name);
        if (!Deno.statSync(file).isFile) continue;
        const text = Deno.readTextFileSync(file);
        if (text.includes(PEM_CERT)) ca.push(text);
      } catch {
        // A dangling hash link or an unreadable file is not a certificate.
      }
    }
    if (tls.caFile === null && ca.length === 0) {
      throw new Error(
        `${
          keyName(config, "mqtt.ca_dir")
        } = "${tls.caDir}" holds no PEM certificate: give the directory of the broker's CA certificates`,
      );
    }
  }
  if (tls.certFile !== null && tls.keyFile !== null) {
    return {
      ca: [...new Set(ca)],
      cert: readText(config, "mqtt.cert_file", tls.certFile),
      key: readText(config, "mqtt.key_file", tls.keyFile),
    };
  }
  return { ca: [...new Set(ca)] };
}
