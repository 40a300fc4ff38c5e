/**
 * A throw-away PKI (made with openssl) and a real mosquitto with a TLS
 * listener and a password file, for tests of `mqtt.client.auth.*`
 * (thin-edge's local broker set up with TLS and a password). Both are
 * `AsyncDisposable`: create them with `await using` so that the cleanup is
 * registered where they are created.
 *
 * The PKI itself is in tests/test_pki.ts (re-exported here).
 *
 * @module
 */
import { HAVE_OPENSSL, makeTestPki, run, type TestPki } from "./test_pki.ts";
import {
  freePort,
  MOSQUITTO_RUNNING,
  spawn,
  type Started,
} from "./system_helpers.ts";

/** True when openssl and mosquitto_passwd can be run (the TLS broker tests need both). */
export const HAVE_TLS_TOOLS: boolean = (() => {
  try {
    return HAVE_OPENSSL && Deno.statSync("/usr/bin/mosquitto_passwd").isFile &&
      Deno.statSync("/usr/sbin/mosquitto").isFile;
  } catch {
    return false;
  }
})();

export { type Issued, makeTestPki, type TestPki } from "./test_pki.ts";

/** Options of {@linkcode startTlsMosquitto}. */
export interface TlsMosquittoOptions {
  /** Username and password written to mosquitto's password file (default `tedge` / a random one). */
  readonly username?: string;
  readonly password?: string;
  /** Require a client certificate signed by the test CA (default false). */
  readonly requireCertificate?: boolean;
}

/** A running mosquitto that speaks only TLS and wants a username and password. */
export interface TlsMosquitto extends AsyncDisposable {
  /** The TLS listener's port on 127.0.0.1. */
  readonly port: number;
  readonly pki: TestPki;
  readonly username: string;
  readonly password: string;
  /** A file holding the password on its first line (thin-edge's `mqtt.client.auth.password_file`). */
  readonly passwordFile: string;
  /** Everything mosquitto logged so far. */
  output(): string;
  /** Options for npm `mqtt`'s `connect()` that pass this broker's checks. */
  clientOptions(): {
    host: string;
    port: number;
    protocol: "mqtts";
    ca: string;
    cert?: string;
    key?: string;
    username: string;
    password: string;
    servername: string;
  };
  /** Stops mosquitto (SIGTERM) and waits for it; the PKI stays until dispose. */
  stop(): Promise<void>;
}

/**
 * Starts mosquitto on a free 127.0.0.1 port with a TLS listener (server
 * certificate from a fresh test CA), `allow_anonymous false` and a password
 * file made by `mosquitto_passwd`. Dispose of it to stop mosquitto and
 * remove every file it used.
 */
export async function startTlsMosquitto(
  options: TlsMosquittoOptions = {},
): Promise<TlsMosquitto> {
  const pki = await makeTestPki();
  const username = options.username ?? "tedge";
  const password = options.password ??
    `pw-${crypto.randomUUID().slice(0, 12)}`;
  const dir = pki.dir;
  let started: Started | undefined;
  try {
    await run("/usr/bin/mosquitto_passwd", [
      "-b",
      "-c",
      `${dir}/passwd`,
      username,
      password,
    ], dir);
    await Deno.chmod(`${dir}/passwd`, 0o644);
    const passwordFile = `${dir}/client_password`;
    await Deno.writeTextFile(passwordFile, `${password}\n`);
    const port = freePort();
    const conf = `${dir}/mosquitto.conf`;
    await Deno.writeTextFile(
      conf,
      [
        ...(Deno.uid() === 0 ? ["user root"] : []),
        `listener ${port} 127.0.0.1`,
        `cafile ${pki.caPath}`,
        `certfile ${pki.server.certPath}`,
        `keyfile ${pki.server.keyPath}`,
        `require_certificate ${options.requireCertificate ? "true" : "false"}`,
        "allow_anonymous false",
        `password_file ${dir}/passwd`,
        "set_tcp_nodelay true",
        "persistence false",
        "log_dest stdout",
        "",
      ].join("\n"),
    );
    const mosquitto = spawn("stdbuf", [
      "-oL",
      "/usr/sbin/mosquitto",
      "-c",
      conf,
    ]);
    started = mosquitto;
    await mosquitto.waitForOutput(MOSQUITTO_RUNNING);
    const stop = async () => {
      await mosquitto.stop();
    };
    return {
      port,
      pki,
      username,
      password,
      passwordFile,
      output: () => mosquitto.output(),
      clientOptions: () => ({
        host: "127.0.0.1",
        port,
        protocol: "mqtts",
        ca: Deno.readTextFileSync(pki.caPath),
        ...(options.requireCertificate
          ? { cert: pki.client.cert, key: pki.client.key }
          : {}),
        username,
        password,
        servername: "localhost",
      }),
      stop,
      async [Symbol.asyncDispose]() {
        await stop();
        await pki[Symbol.asyncDispose]();
      },
    };
  } catch (error) {
    await started?.stop();
    await pki[Symbol.asyncDispose]();
    throw error;
  }
}
