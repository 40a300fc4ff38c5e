/**
 * A throw-away PKI made with openssl: a test CA (EC P-256, 30 days) with a
 * server certificate for 127.0.0.1/localhost and a client certificate, in a
 * temp directory removed on dispose. For TLS tests of the cloud leg
 * (wss:// simulator), of `root_cert_path`/`ca_certs` and of the TLS broker
 * in tests/mosquitto_tls.ts.
 *
 * @module
 */

/** True when openssl can be run (every test that makes a PKI needs it). */
export const HAVE_OPENSSL: boolean = (() => {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

/** Runs `cmd args` in `cwd`; throws with its stderr when it fails. */
export async function run(
  cmd: string,
  args: string[],
  cwd: string,
): Promise<void> {
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
