/**
 * A throw-away PKI (made with openssl) and a real mosquitto with a TLS
 * listener and a password file, for tests of `mqtt.client.auth.*`
 * (thin-edge's local broker set up with TLS and a password). Both are
 * `AsyncDisposable`: create them with `await using` so that the cleanup is
 * registered where they are created.
 *
 * @module
 */
import {
  freePort,
  spawn,
  type Started,
  waitForPort,
} from "./system_helpers.ts";

/** True when openssl and mosquitto_passwd can be run (the TLS broker tests need both). */
export const HAVE_TLS_TOOLS: boolean = (() => {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null" })
      .outputSync().success &&
      Deno.statSync("/usr/bin/mosquitto_passwd").isFile &&
      Deno.statSync("/usr/sbin/mosquitto").isFile;
  } catch {
    return false;
  }
})();

async function run(cmd: string, args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/** A certificate and its key, as files and as PEM text. */
export interface Issued {
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: string;
  readonly key: string;
}

/** A test CA in its own temp directory, which it removes on dispose. */
export interface TestPki extends AsyncDisposable {
  readonly dir: string;
  /** The CA certificate (PEM file). */
  readonly caPath: string;
  /** A server certificate for 127.0.0.1 and localhost. */
  readonly server: Issued;
  /** A client certificate (CN `c8y-tunnel-test-client`). */
  readonly client: Issued;
  /** Issues another certificate signed by this CA. */
  issue(
    name: string,
    options: { cn: string; san?: string; client?: boolean },
  ): Promise<Issued>;
}

/** Makes a CA (EC P-256, 30 days) with a server and a client certificate. */
export async function makeTestPki(): Promise<TestPki> {
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-pki-" });
  await Deno.chmod(dir, 0o755);
  await run("openssl", [
    "req",
    "-x509",
    ...EC_KEY,
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "30",
    "-subj",
    "/CN=c8y-tunnel test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ], dir);
  const issue = async (
    name: string,
    options: { cn: string; san?: string; client?: boolean },
  ): Promise<Issued> => {
    await run("openssl", [
      "req",
      ...EC_KEY,
      "-nodes",
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
      "-subj",
      `/CN=${options.cn}`,
    ], dir);
    await Deno.writeTextFile(
      `${dir}/${name}.ext`,
      [
        ...(options.san ? [`subjectAltName=${options.san}`] : []),
        "basicConstraints=CA:FALSE",
        `extendedKeyUsage=${options.client ? "clientAuth" : "serverAuth"}`,
        "",
      ].join("\n"),
    );
    await run("openssl", [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.pem`,
      "-days",
      "30",
      "-extfile",
      `${name}.ext`,
    ], dir);
    // mosquitto may drop privileges before reading keys: make them readable.
    await Deno.chmod(`${dir}/${name}.key`, 0o644);
    return {
      certPath: `${dir}/${name}.pem`,
      keyPath: `${dir}/${name}.key`,
      cert: await Deno.readTextFile(`${dir}/${name}.pem`),
      key: await Deno.readTextFile(`${dir}/${name}.key`),
    };
  };
  const server = await issue("server", {
    cn: "127.0.0.1",
    san: "IP:127.0.0.1,DNS:localhost",
  });
  const client = await issue("client", {
    cn: "c8y-tunnel-test-client",
    client: true,
  });
  return {
    dir,
    caPath: `${dir}/ca.pem`,
    server,
    client,
    issue,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

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
    await waitForPort(port);
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
