/**
 * loadCaCerts() on directories laid out like the operating system's CA
 * store (/etc/ssl/certs): PEM files, symlinks, hash links, bundles and
 * files that are no certificate; and TLS with the result.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { join } from "node:path";
import { loadCaCerts } from "../lib/config/ca_certs.ts";
import { makeTestPki } from "./test_pki.ts";

const OS_STORE = "/etc/ssl/certs";
const OS_BUNDLE = `${OS_STORE}/ca-certificates.crt`;

function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

function blocksOf(text: string): string[] {
  return [
    ...text.matchAll(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g,
    ),
  ].map((match) => match[0]);
}

Deno.test("loadCaCerts() reads a CA store directory: every distinct certificate once, one PEM block each", async () => {
  await using pki = await makeTestPki();
  const store = join(pki.dir, "store");
  await Deno.mkdir(join(store, "java"), { recursive: true });
  const ca = await Deno.readTextFile(pki.caPath);
  await Deno.writeTextFile(join(store, "Test_CA.pem"), ca);
  await Deno.symlink("Test_CA.pem", join(store, "5a3f0ff8.0")); // hash link
  await Deno.symlink(pki.caPath, join(store, "test-ca-link.pem"));
  await Deno.writeTextFile(join(store, "server.pem"), pki.server.cert);
  // a bundle repeating both, plus the client certificate, with CRLF lines
  await Deno.writeTextFile(
    join(store, "ca-certificates.crt"),
    `${ca}${pki.server.cert}${pki.client.cert.replaceAll("\n", "\r\n")}`,
  );
  await Deno.writeFile(
    join(store, "java", "cacerts"),
    new Uint8Array([0xfe, 0xed, 0xfe, 0xed, 0, 1, 2]),
  );
  await Deno.writeFile(
    join(store, "binary.der"),
    new Uint8Array([0x30, 0x82, 0xff, 0x00]),
  );
  await Deno.writeTextFile(join(store, "README"), "not a certificate\n");
  await Deno.writeTextFile(join(store, "key.pem"), pki.server.key);
  await Deno.writeTextFile(
    join(store, "revoked.crl"),
    "-----BEGIN X509 CRL-----\nMIIB\n-----END X509 CRL-----\n",
  );
  await Deno.writeTextFile(
    join(store, "broken.pem"),
    "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
  );
  await Deno.symlink("gone.pem", join(store, "dangling.pem"));

  const certs = await loadCaCerts(store);
  assert.deepEqual(
    certs.map(fingerprint).sort(),
    [ca, pki.server.cert, pki.client.cert].map(fingerprint).sort(),
  );
  for (const pem of certs) assert.equal(blocksOf(pem).length, 1);

  // a bundle file alone is split the same way
  const bundle = await loadCaCerts(join(store, "ca-certificates.crt"));
  assert.equal(bundle.length, 3);
});

Deno.test("loadCaCerts() lets TLS trust a server whose CA is only in the store directory", async () => {
  await using pki = await makeTestPki();
  const store = join(pki.dir, "os-store");
  await Deno.mkdir(store);
  // the operating system's bundle, then the tenant's private CA as
  // update-ca-certificates installs it: a file and its hash link
  await Deno.copyFile(OS_BUNDLE, join(store, "ca-certificates.crt"));
  await Deno.copyFile(pki.caPath, join(store, "Tenant_CA.pem"));
  await Deno.symlink("Tenant_CA.pem", join(store, "0a1b2c3d.0"));
  using listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: pki.server.cert,
    key: pki.server.key,
  });
  const accepted = (async () => {
    const conns: Deno.TlsConn[] = [];
    for await (const conn of listener) {
      conns.push(conn);
      await conn.handshake().catch(() => {});
      conn.close();
      if (conns.length === 2) return;
    }
  })();
  const dial = (caCerts: string[]) =>
    Deno.connectTls({
      hostname: "127.0.0.1",
      port: listener.addr.port,
      caCerts,
    });

  const trusted = await dial(await loadCaCerts(store));
  await trusted.handshake();
  trusted.close();

  // the same store without the tenant's CA: refused
  await Deno.remove(join(store, "0a1b2c3d.0"));
  await Deno.remove(join(store, "Tenant_CA.pem"));
  const untrusted = await dial(await loadCaCerts(store));
  await assert.rejects(untrusted.handshake(), /UnknownIssuer|certificate/i);
  untrusted.close();
  await accepted;
});

Deno.test("loadCaCerts() reads the operating system's /etc/ssl/certs as its bundle lists it, without duplicates", async () => {
  const certs = await loadCaCerts(OS_STORE);
  const fingerprints = certs.map(fingerprint);
  assert.equal(new Set(fingerprints).size, certs.length);
  const bundle = new Set(
    blocksOf(await Deno.readTextFile(OS_BUNDLE)).map(fingerprint),
  );
  for (const print of bundle) assert.ok(fingerprints.includes(print), print);
  // hash links, .pem symlinks and the bundle repeat each root 2-3 times
  let entries = 0;
  for await (const _ of Deno.readDir(OS_STORE)) entries++;
  assert.ok(
    entries > certs.length,
    `${entries} entries, ${certs.length} certs`,
  );
});
