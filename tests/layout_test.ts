/**
 * The import rule of ARCHITECTURE.md, checked on the import graph of lib/**:
 * cli -> commands -> daemon -> handoff / session -> mqtt / cloud -> config
 * -> protocol / util, one way only; nothing imports commands/ or cli.ts
 * (except cli.ts itself), and only commands/ (the demo) uses the simulator.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(new URL("..", import.meta.url).pathname);
const LIB = join(ROOT, "lib");

/** Layer of each part of lib/: an import must go to a higher number (or stay in its directory). */
const LAYER: Readonly<Record<string, number>> = {
  "cli.ts": 0,
  commands: 1,
  daemon: 2,
  sim: 2,
  handoff: 3,
  session: 3,
  mqtt: 4,
  cloud: 4,
  config: 5,
  protocol: 6,
  util: 6,
};

/**
 * Edges that break the rule today and are being removed by a change in
 * flight (the owner deletes the line when it lands). Keep this short.
 */
const PENDING: ReadonlySet<string> = new Set<string>([]);

/** Every lib/ file's relative imports (static, `export … from`, dynamic). */
async function importGraph(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  const walk = async (dir: string): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) await walk(path);
      else if (entry.name.endsWith(".ts")) {
        const text = await Deno.readTextFile(path);
        const specifiers = [
          ...text.matchAll(
            /(?:^|\n)\s*(?:import|export)\b[^;]*?from\s+"([^"]+)"/g,
          ),
          ...text.matchAll(/(?:^|\n)\s*import\s+"([^"]+)"/g),
          ...text.matchAll(/\bimport\(\s*"([^"]+)"\s*\)/g),
        ].map((match) => match[1] ?? "")
          .filter((specifier) => specifier.startsWith("."));
        graph.set(
          relative(LIB, path),
          specifiers.map((s) => relative(LIB, resolve(dirname(path), s))),
        );
      }
    }
  };
  await walk(LIB);
  return graph;
}

/** The part of lib/ a file belongs to: its first directory, or the file at the top. */
function part(file: string): string {
  return file.split("/")[0] ?? file;
}

Deno.test("importGraph() finds static, re-exported and dynamic imports", async () => {
  const graph = await importGraph();
  const cli = graph.get("cli.ts") ?? [];
  assert.ok(cli.includes("commands/run.ts"), "cli.ts loads commands/run.ts");
  assert.ok(cli.includes("commands/demo.ts"), "cli.ts loads commands/demo.ts");
  assert.ok(
    (graph.get("daemon/agent.ts") ?? []).includes("handoff/server.ts"),
  );
});

Deno.test("lib/ imports go one way: cli -> commands -> daemon -> handoff/session -> mqtt/cloud -> config -> protocol/util", async () => {
  const graph = await importGraph();
  const broken: string[] = [];
  for (const [from, targets] of graph) {
    const fromLayer = LAYER[part(from)];
    assert.ok(fromLayer !== undefined, `lib/${from} is in no layer of LAYER`);
    for (const to of targets) {
      if (to.startsWith("..")) continue; // deno.json
      const toLayer = LAYER[part(to)];
      assert.ok(toLayer !== undefined, `lib/${to} is in no layer of LAYER`);
      const inside = part(from) === part(to);
      if (inside || toLayer > fromLayer) continue;
      const edge = `${from} -> ${to}`;
      if (!PENDING.has(edge)) broken.push(edge);
    }
  }
  assert.deepEqual(broken, [], "imports against the rule");
});

Deno.test("nothing outside cli.ts imports commands/, and only commands/ uses the simulator", async () => {
  const graph = await importGraph();
  for (const [from, targets] of graph) {
    for (const to of targets) {
      if (part(to) === "commands" || to === "cli.ts") {
        assert.ok(
          from === "cli.ts" || part(from) === "commands",
          `${from} imports ${to}`,
        );
      }
      if (part(to) === "sim") {
        assert.ok(
          part(from) === "commands" || part(from) === "sim",
          `${from} imports ${to}`,
        );
      }
    }
  }
});

Deno.test("cli.ts loads command modules only with import(): its static imports of commands/ are type-only", async () => {
  const text = await Deno.readTextFile(join(LIB, "cli.ts"));
  const statics = [
    ...text.matchAll(
      /(?:^|\n)\s*import\b([^;]*?)from\s+"(\.\/commands\/[^"]+)"/g,
    ),
  ];
  for (const [, clause = "", specifier] of statics) {
    assert.match(
      clause,
      /^\s*type\b/,
      `cli.ts imports ${specifier} eagerly: use import type, or import() in the command's case`,
    );
  }
  const dynamic = [...text.matchAll(/\bimport\(\s*"(\.\/commands\/[^"]+)"/g)]
    .map((match) => match[1]);
  for (
    const module of ["run", "connect", "operation_file", "check", "demo"]
  ) {
    assert.ok(
      dynamic.includes(`./commands/${module}.ts`),
      `cli.ts does not load commands/${module}.ts with import()`,
    );
  }
});
