/**
 * Hostile MQTT input (issue 11): size limit before any decoding, bounded
 * parsing, a bounded duplicate-key memory, and valid requests served behind
 * a (reduced) flood. The full flood and the soak are in bench/.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { Agent, IGNORED_LINES, rememberedKey } from "../lib/daemon/agent.ts";
import { parseRequest } from "../lib/handoff/protocol.ts";
import { jwtExpiry } from "../lib/mqtt/jwt.ts";
import { jsonTooDeep, MAX_JSON_DEPTH } from "../lib/protocol/json_depth.ts";
import {
  MAX_OTHER_RECORDS,
  parseJsonOperation,
  type ParseOutcome,
  parseSmartRest,
} from "../lib/protocol/operations.ts";
import { scanCsv } from "../lib/protocol/csv.ts";
import { setupLogging } from "../lib/util/log.ts";
import { LogBudget } from "../lib/util/log_budget.ts";
import {
  echo,
  type Rig,
  rigToml,
  startRig,
  tcpServer,
  testConfig,
} from "./harness.ts";

const EXECUTING = "501,c8y_RemoteAccessConnect";
const SUCCESSFUL = "503,c8y_RemoteAccessConnect";
const MAX_PAYLOAD = 16_384;

/** Captures log lines (text format, warn level) while `body` runs. */
async function withLog(
  body: (lines: string[]) => Promise<void>,
): Promise<void> {
  const lines: string[] = [];
  setupLogging({ level: "warn", format: "text", write: (l) => lines.push(l) });
  try {
    await body(lines);
  } finally {
    setupLogging({ level: "error", format: "text" });
  }
}

async function startAgent(rig: Rig, mqtt = ""): Promise<Agent> {
  const config = testConfig(
    rigToml(rig.broker.port, rig.sim.url).replace(
      "[mqtt]",
      `[mqtt]\nmax_payload = ${MAX_PAYLOAD}\n${mqtt}`,
    ),
  );
  const agent = new Agent(config);
  rig.defer(() => agent.close());
  await agent.ready;
  return agent;
}

/** Publishes a 530 for a fresh simulator session and waits until it is served. */
async function serveOne(rig: Rig, targetPort: number): Promise<void> {
  const session = rig.sim.openSession();
  const before = rig.observer.on("c8y/s/us").length;
  await rig.request530(session.key, "127.0.0.1", targetPort);
  await session.connected;
  await rig.observer.waitFor((m) =>
    m.topic === "c8y/s/us" && m.payload === SUCCESSFUL &&
    rig.observer.on("c8y/s/us").length >= before + 2
  );
  session.close();
  await session.closed;
}

Deno.test("Agent drops a message over mqtt.max_payload with one warning naming topic and size, and sends no status", async () => {
  await withLog(async (lines) => {
    await using rig = await startRig();
    const target = tcpServer(echo);
    rig.defer(() => target.close());
    await startAgent(rig);
    const big530 = `530,test-device,127.0.0.1,${target.port},${
      "k".repeat(MAX_PAYLOAD)
    }`;
    // (The embedded aedes broker stalls on a 1 MiB message under Deno;
    // bench/flood.ts sends those through mosquitto.)
    const bigJson = JSON.stringify({ id: "1", pad: "x".repeat(100_000) });
    const client = rig.observer.client;
    await client.publishAsync("c8y/s/ds", big530, { qos: 1 });
    await client.publishAsync("c8y/devicecontrol/notifications", bigJson, {
      qos: 0,
    });
    // A valid request behind them is served: both were handled before it.
    await serveOne(rig, target.port);
    const dropped = lines.filter((l) => l.includes("mqtt.max_payload"));
    assert.equal(dropped.length, 2, dropped.join("\n"));
    assert.match(dropped[0]!, new RegExp(`${big530.length}-byte .* c8y/s/ds`));
    assert.match(
      dropped[1]!,
      new RegExp(`${bigJson.length}-byte .* c8y/devicecontrol/notifications`),
    );
    assert.equal(lines.length, 2, lines.join("\n"));
    assert.deepEqual(rig.observer.on("c8y/s/us"), [EXECUTING, SUCCESSFUL]);
  });
});

/** A few hundred hostile payloads of every kind, some over the limit. */
function* reducedFlood(): Generator<[string, string]> {
  const records = Array.from(
    { length: 2000 },
    (_, i) => i % 10 === 0 ? "garbage ~~" : "511,test-device,echo x",
  ).join("\n");
  const deep = "[".repeat(10_000) + "]".repeat(10_000);
  for (let i = 0; i < 300; i++) {
    switch (i % 6) {
      case 0:
        yield ["c8y/s/ds", "x".repeat(i % 12 === 0 ? 100_000 : 500)];
        break;
      case 1:
        yield ["c8y/s/ds", records.slice(0, 4000 + i * 50)];
        break;
      case 2:
        yield ["c8y/devicecontrol/notifications", deep.slice(0, 10_000 + i)];
        break;
      case 3:
        yield ["c8y-tunnel/connect/request/flood-" + i, `{"line":${deep}}`];
        break;
      case 4:
        yield ["c8y/s/ds", `530,a/b,127.0.0.1,22,key-${i}`];
        break;
      default:
        yield ["c8y/devicecontrol/notifications", `{"id":[${deep}]}`];
    }
  }
}

Deno.test("Agent serves a valid 530 published behind a few hundred hostile payloads", async () => {
  await withLog(async (lines) => {
    await using rig = await startRig();
    const target = tcpServer(echo);
    rig.defer(() => target.close());
    await startAgent(rig);
    const client = rig.observer.client;
    for (const [topic, payload] of reducedFlood()) {
      client.publish(topic, payload, { qos: 0 });
    }
    await serveOne(rig, target.port);
    assert.deepEqual(rig.observer.on("c8y/s/us"), [EXECUTING, SUCCESSFUL]);
    // Oversized messages get one line each; everything else ignored is
    // logged within a budget (IGNORED_LINES per 10 s, the rest counted).
    const oversized = lines.filter((l) => l.includes("mqtt.max_payload"));
    const over = [...reducedFlood()].filter(([, p]) =>
      new TextEncoder().encode(p).length > MAX_PAYLOAD
    );
    assert.equal(oversized.length, over.length);
    const ignored = lines.filter((l) => l.includes("ignored message"));
    assert.equal(ignored.length, IGNORED_LINES);
    const handoff = lines.filter((l) => l.includes("connect handoff"));
    assert.ok(handoff.length <= IGNORED_LINES, `${handoff.length}`);
  });
});

Deno.test("Agent remembers a huge invalid key by its digest: one refusal per key, repeats dropped", async () => {
  await using rig = await startRig();
  await startAgent(rig, "");
  const key = (n: number) => `${n}-${"k".repeat(12_000)}`;
  for (const n of [1, 1, 2]) {
    await rig.request530(key(n), "127.0.0.1", 22);
  }
  const target = tcpServer(echo);
  rig.defer(() => target.close());
  await serveOne(rig, target.port);
  const statuses = rig.observer.on("c8y/s/us");
  assert.deepEqual(statuses.slice(0, 4).map((s) => s.slice(0, 4)), [
    "501,",
    "502,",
    "501,",
    "502,",
  ]);
  assert.deepEqual(statuses.slice(4), [EXECUTING, SUCCESSFUL]);
});

Deno.test("rememberedKey() keeps a valid key and reduces a long one to a fixed-size digest", () => {
  const valid = "eb5e9d13-1caa-486b-bdda-130ca0d87df8";
  assert.equal(rememberedKey(valid), valid);
  assert.equal(rememberedKey("K".repeat(128)), "K".repeat(128));
  const huge = rememberedKey("k".repeat(1024 * 1024));
  assert.ok(huge.length <= 128, huge);
  assert.equal(huge, rememberedKey("k".repeat(1024 * 1024)));
  assert.notEqual(huge, rememberedKey("k".repeat(1024 * 1024 - 1)));
});

Deno.test("jsonTooDeep() counts nesting outside strings only", () => {
  const nested = (n: number) => "[".repeat(n) + "]".repeat(n);
  assert.equal(jsonTooDeep(nested(MAX_JSON_DEPTH)), false);
  assert.equal(jsonTooDeep(nested(MAX_JSON_DEPTH + 1)), true);
  assert.equal(jsonTooDeep(`{"a":"${"[".repeat(1000)}"}`), false);
  assert.equal(jsonTooDeep(`{"a":"\\"${"{".repeat(1000)}"}`), false);
  assert.equal(jsonTooDeep('{"a":{"b":[1,{"c":2}]}}', 4), false);
  assert.equal(jsonTooDeep('{"a":{"b":[1,{"c":2}]}}', 3), true);
});

Deno.test("Deep JSON is refused before parsing, without throwing, wherever the agent reads JSON", () => {
  const deep = "[".repeat(200_000) + "]".repeat(200_000);
  const outcome = parseJsonOperation(`{"id":"1","x":${deep}}`);
  assert.equal(outcome.kind, "ignored");
  assert.match(
    (outcome as { reason: string }).reason,
    new RegExp(`nested deeper than ${MAX_JSON_DEPTH} levels`),
  );
  assert.equal(
    parseRequest(`{"line":"530","expires":1,"x":${deep}}`),
    undefined,
  );
  const payload = btoa(`{"exp":${deep}}`).replace(/=+$/, "");
  assert.equal(jwtExpiry(`h.${payload}.s`), null);
});

Deno.test("parseSmartRest() gives thousands of other records one outcome together, and stops early without a 530", () => {
  const others = Array.from(
    { length: 4000 },
    (_, i) => i % 3 ? "511,dev,echo" : "garbage",
  );
  const withRequest = [...others, "530,dev,127.0.0.1,22,key"].join("\n");
  const outcomes = parseSmartRest(withRequest);
  assert.equal(outcomes.length, MAX_OTHER_RECORDS + 2);
  assert.equal(outcomes.filter((o) => o.kind === "request").length, 1);
  const summary = outcomes.at(-1) as { reason: string; quiet: boolean };
  assert.match(summary.reason, /3996 more records/);
  assert.equal(summary.quiet, false);
  const without = parseSmartRest(others.join("\n"));
  assert.equal(without.length, MAX_OTHER_RECORDS + 1);
  assert.match(
    (without.at(-1) as { reason: string }).reason,
    /no 530 in the payload/,
  );
  const quiet = parseSmartRest("511,dev,x\n".repeat(100));
  assert.equal((quiet.at(-1) as { quiet: boolean }).quiet, true);
});

/** Checks one outcome is small and well-formed, whatever the payload was. */
function assertBounded(outcome: ParseOutcome): void {
  switch (outcome.kind) {
    case "ignored":
    case "rejected":
      assert.ok(outcome.reason.length < 400, outcome.reason);
      break;
    case "request":
      assert.ok(outcome.request.key.length <= 128);
      assert.ok(outcome.request.host.length <= 253);
  }
}

/** Records of a payload that could be 530s (an upper bound on requests). */
function maybe530(payload: string): number {
  return payload.split(/\r\n|\r|\n/).filter((l) => l.includes("530")).length;
}

const hostileText = fc.oneof(
  fc.string({ maxLength: 300 }),
  fc.string({ unit: "binary", maxLength: 300 }),
  fc.tuple(
    fc.array(
      fc.oneof(
        fc.constantFrom("530", "511", '"530"', "", " ", '"', '""', "\r", "\n"),
        fc.string({ maxLength: 20 }),
        fc.constantFrom("127.0.0.1", "22", "key-1", "dev", "a/b", "[::1]"),
      ),
      { maxLength: 40 },
    ),
    fc.constantFrom(",", "\n"),
  ).map(([parts, separator]) => parts.join(separator)),
);

Deno.test("parseSmartRest() on random payloads: never throws, outcomes bounded in number and size", () => {
  fc.assert(
    fc.property(
      fc.array(hostileText, { minLength: 1, maxLength: 30 }).map((lines) =>
        lines.join("\n")
      ),
      (payload) => {
        const outcomes = parseSmartRest(payload);
        assert.ok(
          outcomes.length <= maybe530(payload) + MAX_OTHER_RECORDS + 1,
          `${outcomes.length} outcomes`,
        );
        outcomes.forEach(assertBounded);
      },
    ),
    { numRuns: 500 },
  );
});

/**
 * What parseSmartRest() must find in `payload`, read the slow way: every
 * record split whole by scanCsv(), each parsed on its own.
 */
function expectedSmartRest(payload: string) {
  const served: ParseOutcome[] = [];
  let others = 0;
  let loud = false; // some record is garbage or an unusable 530
  for (const record of scanCsv(payload)) {
    const [outcome] = parseSmartRest(record.text);
    if (outcome !== undefined && outcome.kind !== "ignored") {
      served.push(outcome);
    } else {
      others++;
      loud ||= outcome?.kind === "ignored" && !outcome.quiet;
    }
  }
  return { served, others, loud };
}

/** Payloads of many records built to hit every path of the skimmer. */
/** Records of other templates: quiet, whichever way the skimmer reads them. */
const TEMPLATE_RECORDS = [
  "511,dev,echo",
  "511 ,dev",
  '533,dev,"a","b"',
  '533,dev,"a,\n530,x,127.0.0.1,22,k","b"',
  '533,dev,x"y,530',
  '511,"a"" ',
  '511, "a" ,"b""c"',
  "5300,x",
  "530,dev,127.0.0.1,22,key",
];

/** Records that are odd in some way (garbage, unusable, quoted, blank). */
const ODD_RECORDS = [
  "530,dev",
  " 530 ,dev,127.0.0.1,22,key",
  '"530",dev,127.0.0.1,22,key',
  "",
  " ",
  ",",
  ",530",
  "123456,x",
  "garbage ~~~",
  '"unterminated,530',
  '530,dev,"127.0.0.1" x,22,key',
  '511,"a""',
  '511,x,"',
  '511,x, "',
  '511,x"',
  '511,"a,b"x"',
  'garbage "x",530',
  ' "511",x',
];

/** Joins records, each followed by a random separator. */
function joinRecords(records: string[]) {
  return fc.array(fc.constantFrom("\n", "\r\n", "\r"), {
    minLength: records.length,
    maxLength: records.length,
  }).map((separators) =>
    records.map((record, i) => record + separators[i]).join("")
  );
}

/**
 * Payloads of many records built to hit every path of the skimmer: any mix,
 * or other templates with at most one odd record (so that the summary's
 * quiet flag depends on that one record).
 */
const manyRecords = fc.oneof(
  fc.array(
    fc.oneof(
      fc.constantFrom(...TEMPLATE_RECORDS, ...ODD_RECORDS),
      fc.string({ maxLength: 12 }),
    ),
    { minLength: 0, maxLength: 60 },
  ),
  fc.tuple(
    fc.array(fc.constantFrom(...TEMPLATE_RECORDS), { maxLength: 30 }),
    fc.oneof(fc.constantFrom(...ODD_RECORDS), fc.string({ maxLength: 12 })),
    fc.nat(30),
  ).map(([records, odd, at]) => records.toSpliced(at, 0, odd)),
).chain(joinRecords);

Deno.test("parseSmartRest() skims records past the first few exactly as scanning them whole would", () => {
  fc.assert(
    fc.property(manyRecords, (payload) => {
      const outcomes = parseSmartRest(payload);
      const expected = expectedSmartRest(payload);
      assert.deepEqual(
        outcomes.filter((o) => o.kind !== "ignored"),
        expected.served,
      );
      const ignored = outcomes.filter((o) => o.kind === "ignored");
      const summary = /^(\d+) more records ignored/.exec(
        (ignored.at(-1) as { reason: string } | undefined)?.reason ?? "",
      );
      if (payload.includes("530")) {
        const counted = Math.min(expected.others, MAX_OTHER_RECORDS) +
          Number(summary?.[1] ?? 0);
        assert.equal(counted, expected.others, payload);
        if (summary !== null) {
          // Quiet only when every record was another template.
          assert.equal(ignored.at(-1)?.quiet, !expected.loud, payload);
        }
      }
    }),
    { numRuns: 1000 },
  );
});

Deno.test("parseJsonOperation() on random and deep payloads: never throws, one bounded outcome", () => {
  const operation = fc.oneof(
    fc.jsonValue({ maxDepth: 6 }).map((v) => JSON.stringify(v)),
    fc.record({
      id: fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.nat().map(String)),
      externalSource: fc.jsonValue({ maxDepth: 2 }),
      c8y_RemoteAccessConnect: fc.jsonValue({ maxDepth: 3 }),
    }).map((o) => JSON.stringify(o)),
    fc.tuple(fc.integer({ min: 1, max: 5000 }), fc.constantFrom("[", '{"a":'))
      .map(([n, open]) =>
        `{"id":"1","c8y_RemoteAccessConnect":${open.repeat(n)}`
      ),
    hostileText,
  );
  fc.assert(
    fc.property(operation, (payload) => {
      const outcome = parseJsonOperation(payload);
      assertBounded(outcome);
    }),
    { numRuns: 500 },
  );
});

Deno.test("LogBudget allows a number of lines per window and hands the count of the rest to the next one", () => {
  let now = 0;
  const budget = new LogBudget(2, 1000, () => now);
  assert.deepEqual(budget.take(), { log: true, suppressed: 0 });
  assert.deepEqual(budget.take(), { log: true, suppressed: 0 });
  assert.deepEqual(budget.take(), { log: false });
  assert.deepEqual(budget.take(), { log: false });
  now = 999;
  assert.deepEqual(budget.take(), { log: false });
  now = 1000;
  assert.deepEqual(budget.take(), { log: true, suppressed: 3 });
  assert.deepEqual(budget.take(), { log: true, suppressed: 0 });
});
