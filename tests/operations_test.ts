import assert from "node:assert/strict";
import fc from "fast-check";
import { csvField, parseCsv } from "../lib/protocol/csv.ts";
import {
  type OperationRef,
  parseConnectLine,
  parseJsonOperation,
  type ParseOutcome,
  parseSmartRest,
  type RemoteAccessRequest,
  shorten,
  statusPayload,
} from "../lib/protocol/operations.ts";

const KEY = "eb5e9d13-1caa-486b-bdda-130ca0d87df8";

function only(outcomes: ParseOutcome[]): ParseOutcome {
  assert.equal(
    outcomes.length,
    1,
    `expected one outcome, got ${JSON.stringify(outcomes)}`,
  );
  return outcomes[0]!;
}

function request(outcome: ParseOutcome): RemoteAccessRequest {
  assert.equal(outcome.kind, "request", JSON.stringify(outcome));
  return (outcome as { request: RemoteAccessRequest }).request;
}

function rejection(
  outcome: ParseOutcome,
): { ref: OperationRef; reason: string } {
  assert.equal(outcome.kind, "rejected", JSON.stringify(outcome));
  return outcome as { ref: OperationRef; reason: string };
}

function ignoredOutcome(
  outcome: ParseOutcome,
): { reason: string; quiet: boolean } {
  assert.equal(outcome.kind, "ignored", JSON.stringify(outcome));
  return outcome as { reason: string; quiet: boolean };
}

// --- parseCsv ---------------------------------------------------------------

Deno.test("parseCsv() splits quoted fields with commas and doubled quotes", () => {
  assert.deepEqual(parseCsv('530,"my,device","say ""hi""",22,""'), [
    ["530", "my,device", 'say "hi"', "22", ""],
  ]);
});

Deno.test("parseCsv() separates records on LF, CRLF and CR and skips blank lines", () => {
  assert.deepEqual(parseCsv("a,b\r\nc\n\n  \r\nd\re\n"), [["a", "b"], ["c"], [
    "d",
  ], ["e"]]);
});

Deno.test("parseCsv() trims whitespace around fields but not inside quotes", () => {
  assert.deepEqual(parseCsv(' a , " b " ,\tc\t, "" '), [["a", " b ", "c", ""]]);
});

Deno.test("parseCsv() keeps newlines inside quoted fields", () => {
  assert.deepEqual(parseCsv('1,"x\r\ny"\n2'), [["1", "x\r\ny"], ["2"]]);
});

Deno.test("parseCsv() is lenient with malformed input", () => {
  assert.deepEqual(parseCsv('a,"unterminated\nb'), [["a", "unterminated\nb"]]);
  assert.deepEqual(parseCsv('a,"x"y,z'), [["a", "xy", "z"]]);
  assert.deepEqual(parseCsv(""), []);
  assert.deepEqual(parseCsv("a,"), [["a", ""]]);
});

// --- parseSmartRest ---------------------------------------------------------

Deno.test("parseSmartRest() parses the documented 530 example", () => {
  const req = request(
    only(parseSmartRest(`530,my-device,127.0.0.1,22,${KEY}`)),
  );
  assert.deepEqual(req, {
    deviceId: "my-device",
    key: KEY,
    host: "127.0.0.1",
    port: 22,
    source: "smartrest",
  });
  assert.equal("operationId" in req, false);
});

Deno.test("parseSmartRest() accepts quoted fields and stray whitespace", () => {
  const req = request(
    only(
      parseSmartRest(
        ` "530" , "child,1" ,  "localhost" , "5900" , ${KEY} \r\n`,
      ),
    ),
  );
  assert.deepEqual(req, {
    deviceId: "child,1",
    key: KEY,
    host: "localhost",
    port: 5900,
    source: "smartrest",
  });
});

Deno.test("parseSmartRest() returns one outcome per record of a CRLF payload", () => {
  const payload =
    `510,dev\r\n530,dev,10.0.0.1,22,k1\r\n\r\n530,child,[::1],2222,k2\r\n`;
  const outcomes = parseSmartRest(payload);
  assert.equal(outcomes.length, 3);
  assert.deepEqual(ignoredOutcome(outcomes[0]!).quiet, true);
  assert.deepEqual(request(outcomes[1]!), {
    deviceId: "dev",
    key: "k1",
    host: "10.0.0.1",
    port: 22,
    source: "smartrest",
  });
  assert.deepEqual(request(outcomes[2]!), {
    deviceId: "child",
    key: "k2",
    host: "::1",
    port: 2222,
    source: "smartrest",
  });
});

Deno.test("parseSmartRest() ignores other templates quietly and garbage loudly", () => {
  const outcomes = parseSmartRest(
    `511,dev,"ls -la"\n\nhello world\n530,dev,host,22,key\n{"json":1}`,
  );
  assert.deepEqual(outcomes.map((o) => o.kind), [
    "ignored",
    "ignored",
    "request",
    "ignored",
  ]);
  assert.equal(ignoredOutcome(outcomes[0]!).quiet, true);
  assert.equal(ignoredOutcome(outcomes[1]!).quiet, false);
  assert.match(ignoredOutcome(outcomes[1]!).reason, /hello world/);
  assert.equal(ignoredOutcome(outcomes[3]!).quiet, false);
  assert.deepEqual(parseSmartRest(""), []);
  assert.deepEqual(parseSmartRest("\r\n\n"), []);
});

Deno.test("parseSmartRest() ignores loudly a 530 record it cannot identify", () => {
  const cases = [
    `530,,127.0.0.1,22,${KEY}`,
    `530,a/b,127.0.0.1,22,${KEY}`,
    `530,a+b,127.0.0.1,22,${KEY}`,
    `530,a#,127.0.0.1,22,${KEY}`,
    `530,"a\u0000b",127.0.0.1,22,${KEY}`,
    `530,"a\u0007b",127.0.0.1,22,${KEY}`,
    `530,"a\nb",127.0.0.1,22,${KEY}`,
    `530,dev,127.0.0.1,22,`,
    `530,dev,127.0.0.1,22`,
    `530`,
    `530,dev,127.0.0.1,22,"${KEY}`,
    `530,dev,127.0.0.1,22,"${KEY}"junk`,
  ];
  for (const payload of cases) {
    const outcome = ignoredOutcome(only(parseSmartRest(payload)));
    assert.equal(outcome.quiet, false, payload);
    assert.ok(outcome.reason.length > 0);
    assert.doesNotMatch(
      outcome.reason,
      /\p{Cc}/u,
      "reason must be safe to log",
    );
  }
});

Deno.test("parseSmartRest() rejects an identifiable 530 record it cannot serve", () => {
  const cases: [string, string][] = [
    [
      `530,dev,127.0.0.1,0,${KEY}`,
      'invalid port "0" for host 127.0.0.1: expected 1-65535',
    ],
    [
      `530,dev,127.0.0.1,70000,${KEY}`,
      'invalid port "70000" for host 127.0.0.1: expected 1-65535',
    ],
    [
      `530,dev,127.0.0.1,abc,${KEY}`,
      'invalid port "abc" for host 127.0.0.1: expected 1-65535',
    ],
    [
      `530,dev,127.0.0.1,22.5,${KEY}`,
      'invalid port "22.5" for host 127.0.0.1: expected 1-65535',
    ],
    [
      `530,dev,127.0.0.1, ,${KEY}`,
      'invalid port "" for host 127.0.0.1: expected 1-65535',
    ],
    [
      `530,dev,127.0.0.1,-22,${KEY}`,
      'invalid port "-22" for host 127.0.0.1: expected 1-65535',
    ],
    [
      `530,dev,[::1],99999,${KEY}`,
      'invalid port "99999" for host [::1]: expected 1-65535',
    ],
    [`530,dev,,22,${KEY}`, "empty host in request"],
    [`530,dev,"",22,${KEY}`, "empty host in request"],
    [`530,dev,"a b",22,${KEY}`, 'invalid host "a b"'],
    [`530,dev,host/path,22,${KEY}`, 'invalid host "host/path"'],
    [`530,dev,user@host,22,${KEY}`, 'invalid host "user@host"'],
    [`530,dev,"a\tb",22,${KEY}`, 'invalid host "a\\tb"'],
    [`530,dev,host:22,22,${KEY}`, 'invalid host "host:22"'],
    [`530,dev,[::1,22,${KEY}`, 'invalid host "[::1"'],
    [`530,dev,[127.0.0.1],22,${KEY}`, 'invalid host "[127.0.0.1]"'],
    [`530,dev,fe80::1%eth0,22,${KEY}`, 'invalid host "fe80::1%eth0"'],
    [`530,dev,1::2::3,22,${KEY}`, 'invalid host "1::2::3"'],
    [`530,dev,256.0.0.1,22,${KEY}`, 'invalid host "256.0.0.1"'],
    [`530,dev,0177.0.0.1,22,${KEY}`, 'invalid host "0177.0.0.1"'],
    [`530,dev,0x7f.1,22,${KEY}`, 'invalid host "0x7f.1"'],
    [`530,dev,2130706433,22,${KEY}`, 'invalid host "2130706433"'],
    [`530,dev,-bad.example,22,${KEY}`, 'invalid host "-bad.example"'],
    [
      `530,dev,example.com.,22,${KEY}`,
      `invalid host "example.com.": write it without the trailing dot`,
    ],
    [`530,dev,${"a".repeat(64)}.com,22,${KEY}`, "invalid host"],
    [
      `530,dev,127.0.0.1,22,../../admin`,
      'invalid connection key "../../admin"',
    ],
    [`530,dev,127.0.0.1,22,a/b`, 'invalid connection key "a/b"'],
    [`530,dev,127.0.0.1,22,a?b`, 'invalid connection key "a?b"'],
    [`530,dev,127.0.0.1,22,a%2Fb`, 'invalid connection key "a%2Fb"'],
    [`530,dev,127.0.0.1,22,..`, 'invalid connection key ".."'],
    [`530,dev,127.0.0.1,22,"a b"`, 'invalid connection key "a b"'],
    [`530,dev,127.0.0.1,22,${"k".repeat(129)}`, "invalid connection key"],
    [
      `530,dev,127.0.0.1,22,${KEY},extra`,
      "malformed request: 6 fields instead of 5",
    ],
  ];
  for (const [payload, reason] of cases) {
    const outcome = rejection(only(parseSmartRest(payload)));
    assert.ok(
      outcome.reason.startsWith(reason),
      `${payload}: ${outcome.reason}`,
    );
    assert.equal(outcome.ref.deviceId, "dev");
    assert.equal(outcome.ref.operationId, undefined);
    assert.ok(outcome.ref.key.length > 0);
  }
});

Deno.test("parseSmartRest() accepts and normalizes plausible hosts", () => {
  const cases: [string, string][] = [
    ["localhost", "localhost"],
    ["My-Host.Example.COM", "my-host.example.com"],
    ["plc_1.local", "plc_1.local"],
    ["0.0.0.0", "0.0.0.0"],
    ["255.255.255.255", "255.255.255.255"],
    ["[::1]", "::1"],
    ["::1", "::1"],
    ["[0:0:0:0:0:0:0:1]", "::1"],
    ["FE80:0000:0000:0000:0202:B3FF:FE1E:8329", "fe80::202:b3ff:fe1e:8329"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["::ffff:127.0.0.1", "::ffff:7f00:1"],
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"],
    ["1.example", "1.example"],
  ];
  for (const [host, expected] of cases) {
    const req = request(only(parseSmartRest(`530,dev,${host},22,k`)));
    assert.equal(req.host, expected, host);
  }
  assert.equal(request(only(parseSmartRest("530,dev,h,65535,k"))).port, 65535);
  assert.equal(request(only(parseSmartRest("530,dev,h,1,k"))).port, 1);
  assert.equal(
    request(only(parseSmartRest(`530,dev,h,22,${"K".repeat(128)}`))).key.length,
    128,
  );
});

Deno.test("parseSmartRest() shows a long offending value shortened and escaped", () => {
  const host = `a\u202eb${"x".repeat(10_000)}`;
  const outcome = rejection(only(parseSmartRest(`530,dev,${host},22,k`)));
  assert.ok(outcome.reason.length < 200, outcome.reason);
  assert.match(outcome.reason, /a\\u\{202e\}b/);
});

Deno.test("parseSmartRest() handles a large payload in linear time", () => {
  const line = `530,dev,127.0.0.1,22,${KEY}\r\n`;
  const started = performance.now();
  assert.equal(parseSmartRest(line.repeat(20_000)).length, 20_000);
  const garbage = parseSmartRest(`530,"${"x,\n".repeat(300_000)}`);
  assert.equal(ignoredOutcome(only(garbage)).quiet, false);
  assert.ok(performance.now() - started < 2_000);
});

// --- parseJsonOperation -----------------------------------------------------

function jsonOp(
  overrides: Record<string, unknown> = {},
  params: Record<string, unknown> = {},
): string {
  return JSON.stringify({
    id: "4711",
    deviceId: "10200",
    externalSource: { externalId: "my-device", type: "c8y_Serial" },
    c8y_RemoteAccessConnect: {
      hostname: "127.0.0.1",
      port: 22,
      connectionKey: KEY,
      ...params,
    },
    description: "Connect to remote access server",
    ...overrides,
  });
}

Deno.test("parseJsonOperation() parses the documented example", () => {
  assert.deepEqual(request(parseJsonOperation(jsonOp())), {
    deviceId: "my-device",
    key: KEY,
    operationId: "4711",
    host: "127.0.0.1",
    port: 22,
    source: "json",
  });
});

Deno.test("parseJsonOperation() accepts a numeric string port and a numeric id", () => {
  const req = request(
    parseJsonOperation(
      jsonOp({ id: 4711 }, { port: "5900", hostname: "[::1]" }),
    ),
  );
  assert.equal(req.port, 5900);
  assert.equal(req.host, "::1");
  assert.equal(req.operationId, "4711");
});

Deno.test("parseJsonOperation() ignores other operations quietly", () => {
  const outcome = ignoredOutcome(
    parseJsonOperation(JSON.stringify({ id: "1", c8y_Restart: {} })),
  );
  assert.equal(outcome.quiet, true);
});

Deno.test("parseJsonOperation() ignores loudly what it cannot identify", () => {
  const cases = [
    "",
    "not json",
    "[1,2]",
    "null",
    '"c8y_RemoteAccessConnect"',
    "42",
    jsonOp({ id: undefined }),
    jsonOp({ id: "" }),
    jsonOp({ id: "47,11" }),
    jsonOp({ id: "4711\n" }),
    jsonOp({ id: -1 }),
    jsonOp({ id: 1.5 }),
    jsonOp({ id: { x: 1 } }),
    jsonOp({ externalSource: undefined }),
    jsonOp({ externalSource: { type: "c8y_Serial" } }),
    jsonOp({ externalSource: { externalId: 12 } }),
    jsonOp({ externalSource: { externalId: "" } }),
    jsonOp({ externalSource: { externalId: "a/b" } }),
    jsonOp({ externalSource: { externalId: "#" } }),
  ];
  for (const payload of cases) {
    const outcome = ignoredOutcome(parseJsonOperation(payload));
    assert.equal(outcome.quiet, false, payload);
    assert.doesNotMatch(outcome.reason, /\p{Cc}/u);
  }
});

Deno.test("parseJsonOperation() rejects an identifiable operation it cannot serve, by id", () => {
  const cases: [string, string][] = [
    [
      jsonOp({}, { port: 0 }),
      "invalid port 0 for host 127.0.0.1: expected 1-65535",
    ],
    [
      jsonOp({}, { port: 70000 }),
      "invalid port 70000 for host 127.0.0.1: expected 1-65535",
    ],
    [
      jsonOp({}, { port: "abc" }),
      'invalid port "abc" for host 127.0.0.1: expected 1-65535',
    ],
    [
      jsonOp({}, { port: 22.5 }),
      "invalid port 22.5 for host 127.0.0.1: expected 1-65535",
    ],
    [
      jsonOp({}, { port: " " }),
      'invalid port " " for host 127.0.0.1: expected 1-65535',
    ],
    [
      jsonOp({}, { port: null }),
      "invalid port null for host 127.0.0.1: expected 1-65535",
    ],
    [
      jsonOp({}, { port: undefined }),
      "invalid port missing for host 127.0.0.1: expected 1-65535",
    ],
    [jsonOp({}, { hostname: "" }), "empty host in request"],
    [jsonOp({}, { hostname: undefined }), "empty host in request"],
    [jsonOp({}, { hostname: 127 }), "invalid host 127"],
    [jsonOp({}, { hostname: "a b" }), 'invalid host "a b"'],
    [
      jsonOp({}, { connectionKey: "a/../b" }),
      'invalid connection key "a/../b"',
    ],
    [jsonOp({}, { connectionKey: "" }), 'invalid connection key ""'],
    [
      jsonOp({}, { connectionKey: undefined }),
      "invalid connection key missing",
    ],
    [jsonOp({ c8y_RemoteAccessConnect: "ssh" }), "malformed request"],
    [jsonOp({ c8y_RemoteAccessConnect: null }), "malformed request"],
  ];
  for (const [payload, reason] of cases) {
    const outcome = rejection(parseJsonOperation(payload));
    assert.ok(
      outcome.reason.startsWith(reason),
      `${payload}: ${outcome.reason}`,
    );
    assert.equal(outcome.ref.operationId, "4711");
    assert.equal(outcome.ref.deviceId, "my-device");
  }
});

// --- statusPayload / csvField -----------------------------------------------

Deno.test("statusPayload() reports by name without an operation id", () => {
  const ref = { deviceId: "main-device", key: KEY };
  assert.equal(
    statusPayload(ref, "executing"),
    "501,c8y_RemoteAccessConnect",
  );
  assert.equal(
    statusPayload(ref, "successful"),
    "503,c8y_RemoteAccessConnect",
  );
  assert.equal(
    statusPayload(ref, "failed", 'connection "refused"\nby 127.0.0.1:22'),
    '502,c8y_RemoteAccessConnect,"connection ""refused"" by 127.0.0.1:22"',
  );
});

Deno.test("statusPayload() reports by id with an operation id", () => {
  const ref = { deviceId: "child-1", key: KEY, operationId: "4711" };
  assert.equal(statusPayload(ref, "executing"), "504,4711");
  assert.equal(statusPayload(ref, "successful"), "506,4711");
  assert.equal(
    statusPayload(ref, "failed", "target 10.0.0.5:22 is not in tunnel.allow"),
    '505,4711,"target 10.0.0.5:22 is not in tunnel.allow"',
  );
});

Deno.test("statusPayload() always quotes a failure reason, even a missing one", () => {
  const payload = statusPayload(
    { deviceId: "main-device", key: "k" },
    "failed",
  );
  assert.match(payload, /^502,c8y_RemoteAccessConnect,"[^"]+"$/);
});

Deno.test("parseConnectLine() takes the first 530 and explains anything else", () => {
  const ok = parseConnectLine("530,dev,127.0.0.1,22,key-1");
  assert.ok(ok.ok && ok.request.port === 22 && ok.request.key === "key-1");
  const bad = parseConnectLine("530,dev,127.0.0.1,0,key-1");
  assert.ok(!bad.ok && /invalid port/.test(bad.reason));
  const other = parseConnectLine("71,abc");
  assert.ok(!other.ok && /not a remote access request/.test(other.reason));
  assert.ok(!parseConnectLine("").ok);
});

Deno.test("csvField() doubles quotes and replaces control characters", () => {
  assert.equal(csvField('say "hi"'), '"say ""hi"""');
  assert.equal(csvField("a\r\nb\tc\u0000d"), '"a  b c d"');
  assert.equal(csvField(""), '""');
});

Deno.test("csvField() cuts long values to 250 characters", () => {
  const [[value = ""] = []] = parseCsv(csvField("x".repeat(1000)));
  assert.equal(value.length, 250);
  assert.ok(value.endsWith("…"));
});

Deno.test("shorten() escapes control characters and cuts with an ellipsis", () => {
  assert.equal(shorten("a\nb\u0001c"), "a\\nb\\u{1}c");
  assert.equal(shorten("abcdef", 4), "abc…");
  assert.equal(shorten("abcd", 4), "abcd");
  assert.equal(shorten("\n\n\n", 5), "\\n\\n…");
  assert.ok(shorten("x".repeat(1_000_000)).length <= 200);
});

// --- properties -------------------------------------------------------------

const TOPIC_UNSAFE = /[/+#\p{Cc}\p{Cs}]/u;
const NUM_RUNS = { numRuns: 1000 };

function assertWellFormed(outcome: ParseOutcome): void {
  switch (outcome.kind) {
    case "request": {
      const r = outcome.request;
      assert.ok(Number.isInteger(r.port) && r.port >= 1 && r.port <= 65535);
      assert.ok(r.host.length > 0 && !/[\s/@\p{Cc}\[\]]/u.test(r.host), r.host);
      assert.ok(r.deviceId.length > 0 && !TOPIC_UNSAFE.test(r.deviceId));
      assert.match(r.key, /^[A-Za-z0-9._~-]{1,128}$/);
      assert.ok(r.key !== "." && r.key !== "..");
      if (r.source === "json") assert.match(r.operationId ?? "", /^[0-9]+$/);
      else assert.equal(r.operationId, undefined);
      break;
    }
    case "rejected":
      assert.ok(
        outcome.ref.deviceId.length > 0 &&
          !TOPIC_UNSAFE.test(outcome.ref.deviceId),
      );
      if (outcome.ref.operationId !== undefined) {
        assert.match(outcome.ref.operationId, /^[0-9]+$/);
      } else assert.ok(outcome.ref.key.length > 0);
      assert.ok(outcome.reason.length > 0);
      assert.ok(!/\p{Cc}/u.test(outcome.reason), outcome.reason);
      break;
    case "ignored":
      assert.equal(typeof outcome.quiet, "boolean");
      assert.ok(outcome.reason.length > 0);
      assert.ok(!/\p{Cc}/u.test(outcome.reason), outcome.reason);
      break;
    default:
      assert.fail(`unknown outcome ${JSON.stringify(outcome)}`);
  }
}

const csvish = fc.array(
  fc.oneof(
    fc.constantFrom(
      "530",
      "511",
      "",
      " ",
      '"',
      '""',
      ",",
      "\n",
      "\r\n",
      "\r",
      "[::1]",
      "::",
      "22",
      "0",
      "70000",
      KEY,
    ),
    fc.string(),
    fc.string({ unit: "binary" }),
    fc.domain(),
    fc.ipV6(),
  ),
  { maxLength: 12 },
);

Deno.test("parseSmartRest() never throws and returns well-formed outcomes", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ maxLength: 200 }),
        fc.string({ unit: "binary", maxLength: 200 }),
        csvish.map((fields) => fields.join(",")),
        csvish.map((fields) => ["530", ...fields].join(",")),
      ),
      (payload) => {
        for (const outcome of parseSmartRest(payload)) {
          assertWellFormed(outcome);
        }
      },
    ),
    NUM_RUNS,
  );
});

const jsonish = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.string(),
  fc.integer(),
  fc.constant(undefined),
);

Deno.test("parseJsonOperation() never throws and returns well-formed outcomes", () => {
  const operation = fc.record(
    {
      id: fc.oneof(jsonish, fc.nat().map(String)),
      externalSource: fc.oneof(
        jsonish,
        fc.record({
          externalId: fc.oneof(jsonish, fc.string({ unit: "binary" })),
        }),
      ),
      c8y_RemoteAccessConnect: fc.oneof(
        jsonish,
        fc.record(
          {
            hostname: fc.oneof(jsonish, fc.domain(), fc.ipV4(), fc.ipV6()),
            port: fc.oneof(
              jsonish,
              fc.integer({ min: -1, max: 70000 }),
              fc.integer({ min: 1, max: 65535 }).map(String),
            ),
            connectionKey: fc.oneof(jsonish, fc.uuid()),
          },
          { requiredKeys: [] },
        ),
      ),
    },
    { requiredKeys: [] },
  );
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string(),
        fc.string({ unit: "binary" }),
        fc.json(),
        operation.map((o) => JSON.stringify(o)),
      ),
      (payload) => assertWellFormed(parseJsonOperation(payload)),
    ),
    NUM_RUNS,
  );
});

/** Quotes a field as CSV, without csvField's sanitizing. */
function quote(value: string): string {
  return `"${value.replaceAll('"', '""')}"`;
}

/** The 8 groups of a valid IPv6 address, written independently of the library. */
function expandIPv6(address: string): number[] {
  let text = address;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [
      number,
      number,
      number,
      number,
    ];
    text = text.slice(0, v4.index) +
      `${(a * 256 + b).toString(16)}:${(c * 256 + d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const groups = (
    part: string,
  ) => (part === "" ? [] : part.split(":").map((g) => parseInt(g, 16)));
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  return [
    ...front,
    ...Array<number>(8 - front.length - back.length).fill(0),
    ...back,
  ];
}

Deno.test("parseSmartRest() round-trips valid generated records", () => {
  const deviceId = fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 })
    .filter((s) =>
      s.trim() !== "" &&
      !/[/+#\p{Cc}\p{Zl}\p{Zp}\ufdd0-\ufdef\ufffe\uffff]/u.test(s)
    );
  const host = fc.oneof(
    fc.domain().map((h) => ({
      raw: h,
      expected: (r: string) => r === h.toLowerCase(),
    })),
    fc.ipV4().map((h) => ({ raw: h, expected: (r: string) => r === h })),
    fc.ipV6().chain((h) =>
      fc.boolean().map((brackets) => ({
        raw: brackets ? `[${h}]` : h,
        expected: (r: string) =>
          JSON.stringify(expandIPv6(r)) === JSON.stringify(expandIPv6(h)),
      }))
    ),
  );
  const key = fc.oneof(
    fc.uuid(),
    fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$/),
  );
  const pad = fc.constantFrom("", " ", "\t", "  ");
  const field = (value: string) =>
    fc.tuple(fc.boolean(), pad, pad).map(([quoted, before, after]) => {
      const needsQuotes = /[",\r\n]/.test(value) || value !== value.trim();
      return before + (quoted || needsQuotes ? quote(value) : value) + after;
    });
  const record = fc.record({
    deviceId,
    host,
    port: fc.integer({ min: 1, max: 65535 }),
    key,
  }).chain((r) =>
    fc.tuple(
      fc.constant(r),
      fc.tuple(
        field("530"),
        field(r.deviceId),
        field(r.host.raw),
        field(String(r.port)),
        field(r.key),
      ),
      fc.constantFrom("\n", "\r\n"),
      fc.array(
        fc.constantFrom("510,dev", "", "106,a,b", '511,dev,"echo ""x"""'),
        { maxLength: 3 },
      ),
    )
  );
  fc.assert(
    fc.property(record, ([r, fields, separator, others]) => {
      const payload = [...others, fields.join(","), ...others].join(separator);
      const outcomes = parseSmartRest(payload).filter((o) =>
        o.kind !== "ignored"
      );
      const req = request(only(outcomes));
      assert.equal(req.deviceId, r.deviceId);
      assert.equal(req.port, r.port);
      assert.equal(req.key, r.key);
      assert.equal(req.source, "smartrest");
      assert.ok(r.host.expected(req.host), `${r.host.raw} -> ${req.host}`);
    }),
    NUM_RUNS,
  );
});

Deno.test("csvField() output parses back to the sanitized value", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string(),
        fc.string({ unit: "binary" }),
        fc.string({ maxLength: 400 }),
      ),
      (value) => {
        const field = csvField(value);
        assert.ok(!/[\p{Cc}\p{Zl}\p{Zp}]/u.test(field));
        const records = parseCsv(field);
        assert.equal(records.length, 1);
        assert.equal(records[0]!.length, 1);
        const parsed = records[0]![0]!;
        assert.ok(parsed.length <= 250);
        assert.equal(csvField(parsed), field, "sanitizing is idempotent");
        if (
          value.length <= 250 && !/[\p{Cc}\p{Zl}\p{Zp}\p{Cs}]/u.test(value)
        ) assert.equal(parsed, value);
      },
    ),
    NUM_RUNS,
  );
});
