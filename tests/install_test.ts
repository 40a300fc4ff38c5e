/**
 * Packaging tests: install.sh into a throwaway root with a fake binary, the
 * systemd unit, the .deb, the config template, the permission flags and the
 * compile script, and the agent run with exactly the production permissions.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseConfig } from "../lib/config/config.ts";
import {
  compileFlags,
  ENV_READ,
  optionsFromEnv,
  parseList,
  permissionFlags,
  READ_PATHS,
  runFlags,
  SPAWNS_SELF,
  SYS,
  WRITE_PATHS,
} from "../scripts/permissions.ts";
import {
  checkDenort,
  compileArgs,
  isDenortDownloadFailure,
  outputPath,
  parseCommandLine,
  unstableFlags,
  V8_FLAGS,
  v8FlagsArg,
} from "../scripts/compile.ts";
import { echo, readBytes, rigToml, startRig, tcpServer } from "./harness.ts";
import { type Ran, runCommand } from "./system_helpers.ts";

const ROOT = new URL("../", import.meta.url);
const path = (relative: string) => new URL(relative, ROOT).pathname;
const INSTALL_SH = path("install/install.sh");
const BUILD_DEB = path("scripts/build-deb.sh");
const UNIT = path("install/c8y-tunnel.service");
const TEMPLATE = path("install/config.toml");
const decoder = new TextDecoder();

function run(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Ran> {
  return runCommand(cmd, args, { env, cwd: ROOT });
}

function which(command: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    try {
      const file = `${dir}/${command}`;
      if (Deno.statSync(file).isFile) return file;
    } catch { /* not in this directory */ }
  }
  return null;
}

/**
 * Reports a check that cannot run on this machine. CI installs every tool
 * these checks need, so there (env CI set) a missing tool fails the test.
 */
function skip(test: string, reason: string): void {
  if (Deno.env.get("CI")) {
    throw new Error(`${test} cannot run in CI: ${reason}`);
  }
  console.log(`SKIP ${test}: ${reason}`);
}

async function exists(file: string): Promise<boolean> {
  try {
    await Deno.lstat(file);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function mode(file: string): Promise<number> {
  return (await Deno.stat(file)).mode! & 0o7777;
}

/** A temp dir with a fake c8y-tunnel that logs its arguments to `calls`. */
async function fakeSetup(): Promise<
  {
    dir: string;
    root: string;
    binary: string;
    calls: string;
    [Symbol.asyncDispose](): Promise<void>;
  }
> {
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-install-" });
  const root = `${dir}/root`;
  await Deno.mkdir(root);
  const binary = `${dir}/c8y-tunnel`;
  const calls = `${dir}/calls`;
  await Deno.writeTextFile(
    binary,
    `#!/bin/sh
printf '%s\\n' "$*" >> "${calls}"
if [ "$1" = init ] && [ -n "\${FAKE_FAIL_INIT:-}" ]; then
  echo "cannot write the operation file: permission denied" >&2
  exit 1
fi
exit 0
`,
  );
  await Deno.chmod(binary, 0o755);
  return {
    dir,
    root,
    binary,
    calls,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

async function readCalls(file: string): Promise<string[]> {
  if (!(await exists(file))) return [];
  return (await Deno.readTextFile(file)).split("\n").filter((l) => l !== "");
}

async function hasGroup(name: string): Promise<boolean> {
  const text = await Deno.readTextFile("/etc/group").catch(() => "");
  return text.split("\n").some((line) => line.startsWith(`${name}:`));
}

// ---------------------------------------------------------------- install.sh

Deno.test("install.sh installs binary, config and unit, and runs init --daemon", async () => {
  await using t = await fakeSetup();
  const result = await run("sh", [
    INSTALL_SH,
    "--binary",
    t.binary,
    "--prefix",
    t.root,
    "--no-systemctl",
  ]);
  assert.equal(result.code, 0, result.stderr + result.stdout);

  const bin = `${t.root}/usr/bin/c8y-tunnel`;
  const config = `${t.root}/etc/c8y-tunnel/config.toml`;
  const unit = `${t.root}/etc/systemd/system/c8y-tunnel.service`;
  assert.equal(await mode(bin), 0o755);
  assert.equal(
    await Deno.readTextFile(bin),
    await Deno.readTextFile(t.binary),
  );
  assert.equal(
    await mode(config),
    Deno.uid() === 0 && await hasGroup("tedge") ? 0o640 : 0o644,
  );
  assert.equal(
    await Deno.readTextFile(config),
    await Deno.readTextFile(TEMPLATE),
  );
  assert.equal(await mode(`${t.root}/etc/c8y-tunnel`), 0o755);
  // connect's log directory (log.file), for the mapper's user tedge
  assert.equal(await mode(`${t.root}/var/log/c8y-tunnel`), 0o750);
  assert.equal(await mode(unit), 0o644);
  assert.equal(await Deno.readTextFile(unit), await Deno.readTextFile(UNIT));
  assert.deepEqual(await readCalls(t.calls), [
    `init --daemon --config ${t.root}/etc/c8y-tunnel/config.toml`,
  ]);
  // no temporary files left behind
  for (const dir of ["usr/bin", "etc/c8y-tunnel", "etc/systemd/system"]) {
    for await (const entry of Deno.readDir(`${t.root}/${dir}`)) {
      assert.ok(!entry.name.endsWith(".new"), `${dir}/${entry.name} left`);
    }
  }
});

Deno.test("install.sh never overwrites an existing config", async () => {
  await using t = await fakeSetup();
  const config = `${t.root}/etc/c8y-tunnel/config.toml`;
  await Deno.mkdir(`${t.root}/etc/c8y-tunnel`, { recursive: true });
  const mine = '[tunnel]\nallow = ["127.0.0.1:22", "127.0.0.1:5900"]\n';
  await Deno.writeTextFile(config, mine);
  await Deno.chmod(config, 0o600);

  for (let i = 0; i < 2; i++) {
    const result = await run("sh", [
      INSTALL_SH,
      "--binary",
      t.binary,
      "--prefix",
      t.root,
      "--no-systemctl",
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /kept the existing .*config\.toml/);
  }
  assert.equal(await Deno.readTextFile(config), mine);
  assert.equal(await mode(config), 0o600);
});

Deno.test("install.sh DESTDIR works like --prefix", async () => {
  await using t = await fakeSetup();
  const result = await run("sh", [
    INSTALL_SH,
    "--binary",
    t.binary,
    "--no-systemctl",
    "--no-init",
  ], { DESTDIR: t.root });
  assert.equal(result.code, 0, result.stderr);
  assert.ok(await exists(`${t.root}/usr/bin/c8y-tunnel`));
  assert.deepEqual(await readCalls(t.calls), []);
});

Deno.test("install.sh --uninstall removes all but the config and runs cleanup", async () => {
  await using t = await fakeSetup();
  const args = ["--prefix", t.root, "--no-systemctl"];
  assert.equal(
    (await run("sh", [INSTALL_SH, "--binary", t.binary, ...args])).code,
    0,
  );
  const config = `${t.root}/etc/c8y-tunnel/config.toml`;
  await Deno.writeTextFile(config, "# edited\n", { append: true });
  const edited = await Deno.readTextFile(config);

  const result = await run("sh", [INSTALL_SH, "--uninstall", ...args]);
  assert.equal(result.code, 0, result.stderr);
  assert.ok(!(await exists(`${t.root}/usr/bin/c8y-tunnel`)));
  assert.ok(
    !(await exists(`${t.root}/etc/systemd/system/c8y-tunnel.service`)),
  );
  assert.equal(await Deno.readTextFile(config), edited);
  assert.deepEqual(await readCalls(t.calls), [
    `init --daemon --config ${config}`,
    `cleanup --config ${config}`,
  ]);
  assert.match(result.stdout, /kept .*config\.toml/);
});

Deno.test("install.sh fails naming init --daemon when init fails", async () => {
  await using t = await fakeSetup();
  const result = await run("sh", [
    INSTALL_SH,
    "--binary",
    t.binary,
    "--prefix",
    t.root,
    "--no-systemctl",
  ], { FAKE_FAIL_INIT: "1" });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /permission denied/);
  assert.match(result.stderr, /c8y-tunnel init --daemon failed/);
  // the files are in place so that the user can fix the cause and re-run
  assert.ok(await exists(`${t.root}/usr/bin/c8y-tunnel`));
});

Deno.test("install.sh rejects bad arguments with a message", async () => {
  await using t = await fakeSetup();
  const missing = await run("sh", [
    INSTALL_SH,
    "--binary",
    `${t.dir}/nope`,
    "--prefix",
    t.root,
    "--no-systemctl",
  ]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /--binary .*nope does not exist/);
  const unknown = await run("sh", [INSTALL_SH, "--frobnicate"]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /unknown argument '--frobnicate'/);
  const noRoot = await run("sh", [INSTALL_SH, "--prefix", `${t.dir}/absent`]);
  assert.equal(noRoot.code, 1);
  assert.match(noRoot.stderr, /absent is not a directory/);
});

Deno.test("install.sh and build-deb.sh pass shellcheck", async () => {
  if (which("shellcheck") === null) {
    skip("shellcheck", "shellcheck is not installed");
    return;
  }
  const result = await run("shellcheck", ["-s", "sh", INSTALL_SH, BUILD_DEB]);
  assert.equal(result.code, 0, result.stdout + result.stderr);
});

// ---------------------------------------------------------------- the unit

function unitSettings(text: string): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!match) continue;
    const [, key, value] = match as unknown as [string, string, string];
    settings.set(key, [...(settings.get(key) ?? []), value]);
  }
  return settings;
}

Deno.test("c8y-tunnel.service runs the agent as tedge, hardened", async () => {
  const settings = unitSettings(await Deno.readTextFile(UNIT));
  const expect: Record<string, string> = {
    ExecStart: "/usr/bin/c8y-tunnel run",
    User: "tedge",
    Group: "tedge",
    NoNewPrivileges: "yes",
    ProtectSystem: "strict",
    ProtectHome: "yes",
    PrivateTmp: "yes",
    RestrictAddressFamilies: "AF_INET AF_INET6 AF_UNIX",
    Restart: "on-failure",
    KillMode: "mixed",
    KillSignal: "SIGTERM",
    TimeoutStopSec: "10",
    WantedBy: "multi-user.target",
  };
  for (const [key, value] of Object.entries(expect)) {
    assert.deepEqual(settings.get(key), [value], key);
  }
  // what init/cleanup write must be writable under ProtectSystem=strict
  for (const dir of WRITE_PATHS) {
    assert.ok(
      settings.get("ReadWritePaths")?.some((v) =>
        v.split(/\s+/).includes(`-${dir}`)
      ),
      `ReadWritePaths lacks -${dir}`,
    );
  }
  assert.ok(settings.has("RestartSteps") && settings.has("RestartMaxDelaySec"));
});

Deno.test("c8y-tunnel.service passes systemd-analyze verify", async () => {
  if (which("systemd-analyze") === null) {
    skip("systemd-analyze verify", "systemd-analyze is not installed");
    return;
  }
  await using t = await fakeSetup();
  // verify checks that ExecStart exists: point it at the fake binary
  const unit = `${t.dir}/c8y-tunnel.service`;
  await Deno.writeTextFile(
    unit,
    (await Deno.readTextFile(UNIT)).replace(
      "ExecStart=/usr/bin/c8y-tunnel",
      `ExecStart=${t.binary}`,
    ),
  );
  const result = await run("systemd-analyze", ["verify", unit]);
  const version = /systemd (\d+)/.exec(
    (await run("systemd-analyze", ["--version"])).stdout,
  );
  const major = Number(version?.[1] ?? 0);
  // Before systemd 254 the two backoff keys are unknown: expected, harmless.
  const tolerated = major < 254
    ? /Unknown key '?(RestartSteps|RestartMaxDelaySec)'?/
    : /^$/;
  const problems = (result.stdout + result.stderr).split("\n").filter((l) =>
    l.trim() !== "" && !tolerated.test(l)
  );
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(problems, [], `systemd ${major}`);
});

// ---------------------------------------------------------------- .deb

Deno.test("build-deb.sh builds a .deb with binary, unit, conffile and maintainer scripts", async () => {
  if (which("dpkg-deb") === null) {
    skip("build-deb.sh", "dpkg-deb is not installed");
    return;
  }
  await using t = await fakeSetup();
  const out = `${t.dir}/out`;
  const result = await run(
    "sh",
    [BUILD_DEB, "arm64", t.binary, out],
    { VERSION: "v1.2.3-rc.1" },
  );
  assert.equal(result.code, 0, result.stderr);
  const deb = `${out}/c8y-tunnel_1.2.3~rc.1_arm64.deb`;
  assert.equal(result.stdout.trim(), deb);

  const contents = await run("dpkg-deb", ["-c", deb]);
  assert.equal(contents.code, 0, contents.stderr);
  const entries = new Map(
    contents.stdout.trim().split("\n").map((line) => {
      const fields = line.split(/\s+/);
      return [fields[5] ?? "", { perms: fields[0], owner: fields[1] }];
    }),
  );
  assert.deepEqual(entries.get("./usr/bin/c8y-tunnel"), {
    perms: "-rwxr-xr-x",
    owner: "root/root",
  });
  assert.deepEqual(entries.get("./lib/systemd/system/c8y-tunnel.service"), {
    perms: "-rw-r--r--",
    owner: "root/root",
  });
  assert.deepEqual(entries.get("./etc/c8y-tunnel/config.toml"), {
    perms: "-rw-r--r--",
    owner: "root/root",
  });
  assert.ok(entries.has("./usr/share/doc/c8y-tunnel/install.md"));

  const info = await run("dpkg-deb", ["-I", deb]);
  assert.equal(info.code, 0, info.stderr);
  assert.match(info.stdout, /^ Package: c8y-tunnel$/m);
  assert.match(info.stdout, /^ Version: 1\.2\.3~rc\.1$/m);
  assert.match(info.stdout, /^ Architecture: arm64$/m);
  for (const script of ["postinst", "prerm", "postrm", "conffiles"]) {
    assert.match(info.stdout, new RegExp(`\\b${script}\\b`), script);
  }

  const control = `${t.dir}/control`;
  const extracted = await run("dpkg-deb", ["-e", deb, control]);
  assert.equal(extracted.code, 0, extracted.stderr);
  assert.equal(
    await Deno.readTextFile(`${control}/conffiles`),
    "/etc/c8y-tunnel/config.toml\n",
  );
  const postinst = await Deno.readTextFile(`${control}/postinst`);
  assert.match(postinst, /\/usr\/bin\/c8y-tunnel init --daemon/);
  assert.match(postinst, /systemctl enable c8y-tunnel\.service/);
  const prerm = await Deno.readTextFile(`${control}/prerm`);
  assert.match(prerm, /systemctl stop c8y-tunnel\.service/);
  assert.match(prerm, /\/usr\/bin\/c8y-tunnel cleanup/);
  for (const script of ["postinst", "prerm", "postrm"]) {
    assert.equal(await mode(`${control}/${script}`), 0o755, script);
    const syntax = await run("sh", ["-n", `${control}/${script}`]);
    assert.equal(syntax.code, 0, `${script}: ${syntax.stderr}`);
    if (which("shellcheck") !== null) {
      const lint = await run("shellcheck", [
        "-s",
        "sh",
        `${control}/${script}`,
      ]);
      assert.equal(lint.code, 0, `${script}: ${lint.stdout}`);
    }
  }
});

Deno.test("build-deb.sh takes the version from deno.json and refuses armhf", async () => {
  if (which("dpkg-deb") === null) {
    skip("build-deb.sh version", "dpkg-deb is not installed");
    return;
  }
  await using t = await fakeSetup();
  const { version } = JSON.parse(
    await Deno.readTextFile(path("deno.json")),
  ) as { version: string };
  const result = await run("sh", [BUILD_DEB, "x86_64", t.binary, t.dir]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(
    result.stdout.trim(),
    `${t.dir}/c8y-tunnel_${version.replace("-", "~")}_amd64.deb`,
  );
  const armhf = await run("sh", [BUILD_DEB, "armhf", t.binary, t.dir]);
  assert.equal(armhf.code, 1);
  assert.match(armhf.stderr, /no 32-bit ARM target/);
  const badVersion = await run("sh", [BUILD_DEB, "amd64", t.binary, t.dir], {
    VERSION: "latest",
  });
  assert.equal(badVersion.code, 1);
  assert.match(badVersion.stderr, /not a Debian version/);
});

// ---------------------------------------------------------------- config template

/** `section.key` -> default, from the tables of docs/config.md. */
async function documentedKeys(): Promise<Map<string, string>> {
  const keys = new Map<string, string>();
  let section = "";
  for (
    const line of (await Deno.readTextFile(path("docs/config.md"))).split("\n")
  ) {
    const heading = /^### `\[(\w+)\]`/.exec(line);
    if (heading) section = heading[1]!;
    const row = /^\| `(\w+)` +\|[^|]*\| ([^|]*?) +\|/.exec(line);
    if (row && section !== "") keys.set(`${section}.${row[1]}`, row[2]!);
  }
  return keys;
}

/** The template with every `# key = value` line uncommented. */
async function uncommentedTemplate(): Promise<string> {
  return (await Deno.readTextFile(TEMPLATE)).split("\n").map((line) =>
    line.replace(/^# ([a-z_]+ = )/, "$1")
  ).join("\n");
}

Deno.test("install/config.toml lists every key of docs/config.md with its default", async () => {
  const documented = await documentedKeys();
  assert.ok(documented.size >= 20, `found ${documented.size} keys`);
  const template = await Deno.readTextFile(TEMPLATE);
  let section = "";
  const inTemplate = new Map<string, string>();
  for (const line of template.split("\n")) {
    const heading = /^\[(\w+)\]$/.exec(line);
    if (heading) section = heading[1]!;
    const key = /^# ([a-z_]+) = (.*?)(?:\s+#.*)?$/.exec(line);
    if (key) inTemplate.set(`${section}.${key[1]}`, key[2]!);
  }
  assert.deepEqual(
    [...inTemplate.keys()].sort(),
    [...documented.keys()].sort(),
  );
  for (const [key, value] of inTemplate) {
    const doc = documented.get(key)!;
    if (doc === "required") continue; // an example value, documented as such
    assert.equal(`\`${value}\``, doc, key);
  }
  // nothing is set until the user uncomments it
  assert.ok(!/^[a-z_]+ = /m.test(template));
});

Deno.test("install/config.toml parses, commented and uncommented", async () => {
  // as installed: every value from tedge.toml and the defaults
  const installed = parseConfig({
    file: TEMPLATE,
    text: await Deno.readTextFile(TEMPLATE),
    tedgeFile: "/etc/tedge/tedge.toml",
    tedgeText: 'device.id = "dev-1"\nc8y.url = "t1.example.com"\n',
  });
  assert.equal(installed.c8y.url, "https://t1.example.com");
  assert.deepEqual(installed.tunnel.allow.map((rule) => rule.text), [
    "127.0.0.1:22",
  ]);
  // every key uncommented: the documented defaults
  const all = parseConfig({
    file: TEMPLATE,
    text: await uncommentedTemplate(),
    tedgeFile: null,
    tedgeText: null,
  });
  assert.deepEqual(all.mqtt, {
    host: "127.0.0.1",
    port: 1883,
    topicPrefix: "c8y",
    clientId: "c8y-tunnel",
    maxPayloadBytes: 65536,
    tls: null,
    auth: null,
  });
  assert.equal(all.tunnel.maxSessions, 16);
  assert.equal(all.tunnel.idleTimeoutMs, 3_600_000);
  assert.deepEqual(all.log, { level: "info", format: "text", file: "" });
});

// ---------------------------------------------------------------- permissions

Deno.test("permissionFlags() scopes read and write, and net only when asked", () => {
  const tail = [
    ...(SYS.length > 0 ? [`--allow-sys=${SYS.join(",")}`] : []),
    ...(SPAWNS_SELF ? ["--allow-run=/usr/bin/c8y-tunnel"] : []),
  ];
  const read = READ_PATHS.join(",");
  assert.deepEqual(permissionFlags(), [
    `--allow-read=${read}`,
    "--allow-write=/etc/tedge/operations,/var/log/c8y-tunnel",
    `--allow-env=${ENV_READ.join(",")}`,
    "--allow-net",
    ...tail,
  ]);
  assert.deepEqual(
    permissionFlags({
      net: ["127.0.0.1:1883", "t1.example.com:443"],
      extraRead: ["/usr/local/share/ca-certificates", "/etc/tedge"],
      extraWrite: ["/srv/tedge/operations"],
    }),
    [
      `--allow-read=${read},/usr/local/share/ca-certificates`,
      "--allow-write=/etc/tedge/operations,/var/log/c8y-tunnel,/srv/tedge/operations",
      `--allow-env=${ENV_READ.join(",")}`,
      "--allow-net=127.0.0.1:1883,t1.example.com:443",
      ...tail,
    ],
  );
  assert.throws(
    () => permissionFlags({ extraRead: ["/a b"] }),
    /holds a comma or a space/,
  );
  assert.deepEqual(compileFlags().slice(0, 1), ["--no-prompt"]);
  // from a checkout, the program that starts itself is this deno
  assert.deepEqual(
    runFlags().slice(1),
    permissionFlags({ selfPath: Deno.execPath() }),
  );
  assert.deepEqual(
    permissionFlags({ selfPath: "/opt/bin/c8y-tunnel" }).includes(
      "--allow-run=/opt/bin/c8y-tunnel",
    ),
    SPAWNS_SELF,
  );
});

Deno.test("optionsFromEnv() reads the build variables", () => {
  const env: Record<string, string> = {
    C8Y_TUNNEL_ALLOW_NET: " 127.0.0.1:1883, t1.example.com:443 ,",
    C8Y_TUNNEL_ALLOW_READ: "/etc/ssl/certs",
  };
  assert.deepEqual(optionsFromEnv((name) => env[name]), {
    net: ["127.0.0.1:1883", "t1.example.com:443"],
    extraRead: ["/etc/ssl/certs"],
    extraWrite: [],
  });
  assert.deepEqual(parseList(undefined), []);
});

Deno.test("SPAWNS_SELF, SYS, READ_PATHS and ENV_READ match the agent's source", async () => {
  // The agent: main.ts and lib/ without the simulator (demo and tests only).
  let source = await Deno.readTextFile(path("main.ts"));
  const readTree = async (dir: string): Promise<void> => {
    for await (const entry of Deno.readDir(path(dir))) {
      const child = `${dir}/${entry.name}`;
      if (entry.isDirectory && child !== "lib/sim") await readTree(child);
      else if (entry.isFile && entry.name.endsWith(".ts")) {
        source += await Deno.readTextFile(path(child));
      }
    }
  };
  await readTree("lib");
  const fix = "update scripts/permissions.ts (and docs/install.md)";
  assert.equal(
    SPAWNS_SELF,
    /new Deno\.Command\(|Deno\.execPath\(\)/.test(source),
    `SPAWNS_SELF (--allow-run) disagrees with the source: ${fix}`,
  );
  for (const [name, call] of [["uid", "uid"], ["gid", "gid"]] as const) {
    assert.equal(
      SYS.includes(name),
      source.includes(`Deno.${call}()`),
      `--allow-sys=${name} disagrees with the use of Deno.${call}(): ${fix}`,
    );
  }
  for (const file of ["/etc/passwd", "/etc/group", "/etc/ssl/certs"]) {
    assert.equal(
      READ_PATHS.includes(file),
      source.includes(`"${file}"`),
      `--allow-read of ${file} disagrees with the source: ${fix}`,
    );
  }
  const { CONFIG_PATH_ENV } = await import("../lib/config/config.ts");
  assert.ok(ENV_READ.includes(CONFIG_PATH_ENV));
  assert.deepEqual(READ_PATHS.slice(0, 2), ["/etc/c8y-tunnel", "/etc/tedge"]);
});

Deno.test("docs/install.md shows the permissions that are baked in", async () => {
  const docs = await Deno.readTextFile(path("docs/install.md"));
  assert.ok(
    docs.includes(permissionFlags().join(" ")),
    "docs/install.md does not show the current permission flags",
  );
});

// ---------------------------------------------------------------- compile.ts

Deno.test("parseCommandLine() picks targets and merges permission lists", () => {
  const env: Record<string, string> = { C8Y_TUNNEL_ALLOW_NET: "127.0.0.1" };
  const all = parseCommandLine(
    ["--target", "all", "--allow-net=t1.example.com:443"],
    (name) => env[name],
  );
  assert.deepEqual(all.targets, [
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
  ]);
  assert.deepEqual(all.permissions.net, ["127.0.0.1", "t1.example.com:443"]);
  assert.equal(all.outDir, "dist");
  assert.throws(
    () =>
      parseCommandLine(
        ["--target", "armv7-unknown-linux-gnueabihf"],
        () => undefined,
      ),
    /not supported.*no 32-bit ARM target/,
  );
  assert.throws(() => parseCommandLine(["--bogus"], () => undefined), /usage/);
});

Deno.test("compileArgs() bakes the permissions, the V8 flags and deno.json's unstable features", async () => {
  const options = parseCommandLine(
    ["--target", "aarch64-unknown-linux-gnu"],
    () => undefined,
  );
  const unstable = unstableFlags(await Deno.readTextFile(path("deno.json")));
  assert.ok(unstable.includes("--unstable-net"));
  assert.deepEqual(
    compileArgs("aarch64-unknown-linux-gnu", options, unstable),
    [
      "compile",
      ...compileFlags(),
      v8FlagsArg(),
      ...unstable,
      "--target",
      "aarch64-unknown-linux-gnu",
      "--output",
      "dist/c8y-tunnel-aarch64-unknown-linux-gnu",
      "main.ts",
    ],
  );
  assert.equal(
    outputPath("out/", "x86_64-unknown-linux-gnu"),
    "out/c8y-tunnel-x86_64-unknown-linux-gnu",
  );
});

Deno.test("V8_FLAGS are the same in the binaries, the start task and the README", async () => {
  assert.ok(V8_FLAGS.length > 0);
  assert.equal(v8FlagsArg(["--a", "--b=1"]), "--v8-flags=--a,--b=1");
  const denoJson = JSON.parse(await Deno.readTextFile(path("deno.json"))) as {
    tasks: Record<string, string>;
  };
  assert.ok(
    denoJson.tasks.start!.split(" ").includes(v8FlagsArg()),
    `deno.json's start task lacks ${v8FlagsArg()}: ${denoJson.tasks.start}`,
  );
  const readme = await Deno.readTextFile(path("README.md"));
  assert.ok(
    readme.includes(`deno run --no-prompt ${v8FlagsArg()} \\`),
    `README's run-from-checkout command lacks ${v8FlagsArg()}`,
  );
});

Deno.test("checkDenort() refuses a runtime of the wrong architecture", async () => {
  await using t = await fakeSetup();
  const deno = Deno.execPath();
  const host = Deno.build.arch === "x86_64"
    ? "x86_64-unknown-linux-gnu"
    : "aarch64-unknown-linux-gnu";
  const other = host === "x86_64-unknown-linux-gnu"
    ? "aarch64-unknown-linux-gnu"
    : "x86_64-unknown-linux-gnu";
  await checkDenort(deno, host);
  await assert.rejects(
    checkDenort(deno, other),
    new RegExp(`runtime for ${host}, not ${other}`),
  );
  await assert.rejects(checkDenort(t.binary, host), /not an ELF executable/);
  await assert.rejects(
    checkDenort(`${t.dir}/absent`, host),
    /cannot be read/,
  );
});

Deno.test("isDenortDownloadFailure() recognises deno's offline error", () => {
  const offline = `Compile main.ts to dist/c8y-tunnel
Download https://dl.deno.land/release/v2.9.6/denort-x86_64-unknown-linux-gnu.zip
error: Writing deno compile executable to temporary file 'dist/c8y-tunnel.tmp-1'

Caused by:
    0: Setting up base binary.
    1: error sending request for url (https://dl.deno.land/release/v2.9.6/denort-x86_64-unknown-linux-gnu.zip): client error (Connect): dns error: failed to lookup address information
`;
  assert.ok(isDenortDownloadFailure(offline));
  assert.ok(
    !isDenortDownloadFailure(
      'error: Module not found "file:///work/main/nope.ts".',
    ),
  );
});

Deno.test("compile.ts stops with one line on a missing DENORT_BIN", async () => {
  const result = await run(Deno.execPath(), [
    "run",
    "-A",
    path("scripts/compile.ts"),
    "--target",
    "x86_64-unknown-linux-gnu",
  ], { DENORT_BIN: "/nonexistent/denort" });
  assert.equal(result.code, 1);
  const lines = result.stderr.trim().split("\n");
  assert.equal(lines.length, 1, result.stderr);
  assert.match(
    lines[0]!,
    /^compile: DENORT_BIN=\/nonexistent\/denort cannot be read/,
  );
});

Deno.test("compile.ts runs deno compile with the baked flags and prints the size", async () => {
  // This machine cannot download denort; deno's own binary stands in for it,
  // which checks that deno compile accepts every flag and embeds main.ts
  // (the result is not a working c8y-tunnel: deno ignores the payload).
  const host = Deno.build.arch === "x86_64"
    ? "x86_64-unknown-linux-gnu"
    : "aarch64-unknown-linux-gnu";
  if (Deno.build.os !== "linux") {
    skip(
      "compile.ts with a stand-in denort",
      `not on Linux (${Deno.build.os})`,
    );
    return;
  }
  const out = await Deno.makeTempDir({ prefix: "c8y-tunnel-compile-" });
  try {
    const result = await run(Deno.execPath(), [
      "run",
      "-A",
      path("scripts/compile.ts"),
      "--target",
      host,
      "--out-dir",
      out,
    ], { DENORT_BIN: Deno.execPath(), NO_COLOR: "1" });
    assert.equal(result.code, 0, result.stderr);
    const binary = `${out}/c8y-tunnel-${host}`;
    const { size } = await Deno.stat(binary);
    assert.ok(
      result.stdout.includes(`${binary}: `) &&
        result.stdout.includes(`(${size} bytes)`),
      result.stdout,
    );
    assert.match(
      result.stdout,
      new RegExp(`deno compile ${compileFlags().join(" ")} `),
    );
    assert.match(result.stderr, /main\.ts/);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

// ---------------------------------------------------------------- production permissions

/** Starts `deno run <runFlags> main.ts run` against a rig; returns the child and its output. */
function spawnAgent(configPath: string, extraRead: string[], net?: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...runFlags({ extraRead, ...(net ? { net } : {}) }),
      path("main.ts"),
      "run",
      "--config",
      configPath,
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  return { child, output };
}

/** A tedge config dir in `dir` whose operation file is in daemon mode (as `init --daemon` leaves it). */
async function daemonModeTedge(dir: string): Promise<string> {
  const tedge = `${dir}/tedge`;
  await Deno.mkdir(`${tedge}/operations/c8y`, { recursive: true });
  await Deno.writeTextFile(`${tedge}/tedge.toml`, "");
  await Deno.writeTextFile(
    `${tedge}/operations/c8y/c8y_RemoteAccessConnect`,
    "# daemon mode: no [exec]\n",
  );
  return `${tedge}/tedge.toml`;
}

Deno.test("runFlags() are enough for `run` to serve a session, `check` to pass, and SIGTERM to stop it", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-perm-" });
  rig.defer(() => Deno.remove(dir, { recursive: true }));
  const configPath = `${dir}/config.toml`;
  await Deno.writeTextFile(
    configPath,
    rigToml(rig.broker.port, rig.sim.url, {
      allow: [`127.0.0.1:${target.port}`],
    }) + `[tedge]\nconfig_path = "${await daemonModeTedge(dir)}"\n`,
  );

  const { child, output } = spawnAgent(configPath, [dir]);
  let exited = false;
  rig.defer(async () => {
    if (!exited) child.kill("SIGKILL");
    await output;
  });
  const health = "te/device/main/service/c8y-tunnel/status/health";
  const died = child.status.then(async () => {
    exited = true;
    const out = await output;
    throw new Error(
      `the agent exited early:\n${decoder.decode(out.stderr)}`,
    );
  });
  await Promise.race([
    rig.observer.waitFor((m) =>
      m.topic === health && m.payload.includes('"up"')
    ),
    died,
  ]);

  // a session end to end
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  const status = await Promise.race([
    rig.observer.waitFor((m) =>
      m.topic === "c8y/s/us" && /^50[23],/.test(m.payload)
    ),
    died,
  ]);
  assert.equal(status.payload, "503,c8y_RemoteAccessConnect");
  const reader = session.received.getReader();
  const hello = new TextEncoder().encode("hello through the tunnel");
  session.send(hello);
  assert.deepEqual(await readBytes(reader, hello.length), hello);
  reader.releaseLock();

  // check, with the daemon up and the operation file in daemon mode
  const check = await run(Deno.execPath(), [
    "run",
    ...runFlags({ extraRead: [dir] }),
    path("main.ts"),
    "check",
    "--config",
    configPath,
  ]);
  assert.doesNotMatch(
    check.stdout + check.stderr,
    /NotCapable|Requires \w+ access/,
  );
  assert.equal(check.code, 0, check.stdout + check.stderr);

  child.kill("SIGTERM");
  const out = await output;
  exited = true;
  await session.closed;
  const stderr = decoder.decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.doesNotMatch(stderr, /NotCapable|Requires \w+ access/);
  await rig.observer.waitFor((m) =>
    m.topic === health && m.payload.includes('"down"')
  );
});

Deno.test("a scoped --allow-net refuses a target that tunnel.allow accepts", async () => {
  await using rig = await startRig();
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  const dir = await Deno.makeTempDir({ prefix: "c8y-tunnel-perm-" });
  rig.defer(() => Deno.remove(dir, { recursive: true }));
  const configPath = `${dir}/config.toml`;
  await Deno.writeTextFile(
    configPath,
    rigToml(rig.broker.port, rig.sim.url, { allow: ["127.0.0.1:*"] }),
  );
  const simPort = new URL(rig.sim.url).port;
  // net for the broker and the cloud only: the outer fence excludes the target
  const { child, output } = spawnAgent(configPath, [dir], [
    `127.0.0.1:${rig.broker.port}`,
    `127.0.0.1:${simPort}`,
  ]);
  let exited = false;
  rig.defer(async () => {
    if (!exited) child.kill("SIGKILL");
    await output;
  });
  await rig.observer.waitFor((m) =>
    m.topic === "te/device/main/service/c8y-tunnel/status/health" &&
    m.payload.includes('"up"')
  );
  const session = rig.sim.openSession();
  await rig.request530(session.key, "127.0.0.1", target.port);
  const failed = await rig.observer.waitFor((m) =>
    m.topic === "c8y/s/us" && m.payload.startsWith("502,")
  );
  assert.match(failed.payload, new RegExp(`127\\.0\\.0\\.1:${target.port}`));
  assert.equal(target.accepted(), 0);
  session.drop();
  child.kill("SIGTERM");
  const out = await output;
  exited = true;
  assert.equal(out.code, 0, decoder.decode(out.stderr));
});

Deno.test("runFlags() are enough for `main.ts --version`", async () => {
  const result = await run(Deno.execPath(), [
    "run",
    ...runFlags(),
    path("main.ts"),
    "--version",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const { version } = JSON.parse(
    await Deno.readTextFile(path("deno.json")),
  ) as { version: string };
  assert.equal(result.stdout.trim(), `c8y-tunnel ${version}`);
});

Deno.test("runFlags() are enough for `init --daemon` and `cleanup`", async () => {
  await using t = await fakeSetup();
  const tedge = `${t.dir}/tedge`;
  await Deno.mkdir(tedge);
  await Deno.writeTextFile(`${tedge}/tedge.toml`, "");
  const config = `${t.dir}/config.toml`;
  await Deno.writeTextFile(
    config,
    `[c8y]\nurl = "http://127.0.0.1:1"\ndevice_id = "d"\nauth = "none"\n[tedge]\nconfig_path = "${tedge}/tedge.toml"\n`,
  );
  // the same scoping as the release binary, moved to the temp dir
  const flags = runFlags({
    extraRead: [t.dir],
    extraWrite: [`${tedge}/operations`],
  });
  const operation = `${tedge}/operations/c8y/c8y_RemoteAccessConnect`;

  const init = await run(Deno.execPath(), [
    "run",
    ...flags,
    path("main.ts"),
    "init",
    "--daemon",
    "--config",
    config,
  ]);
  assert.equal(init.code, 0, init.stderr);
  assert.doesNotMatch(init.stderr, /NotCapable|Requires \w+ access/);
  assert.doesNotMatch(await Deno.readTextFile(operation), /^\[exec\]/m);

  const cleanup = await run(Deno.execPath(), [
    "run",
    ...flags,
    path("main.ts"),
    "cleanup",
    "--config",
    config,
  ]);
  assert.equal(cleanup.code, 0, cleanup.stderr);
  assert.ok(!(await exists(operation)));
});
