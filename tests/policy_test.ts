import assert from "node:assert/strict";
import { parseAllowEntry, ruleAllows } from "../lib/config/allow.ts";
import { formatIPv6, parseIp, parseIPv6 } from "../lib/protocol/ip.ts";
import { Policy } from "../lib/session/policy.ts";

Deno.test("parseAllowEntry() accepts every documented form", () => {
  for (
    const entry of [
      "127.0.0.1:22",
      "localhost:*",
      "10.0.0.0/8:22",
      "*:5900",
      "*:*",
      "[::1]:22",
      "[fd00::/8]:*",
      "plc-1.local:502",
    ]
  ) {
    assert.equal(parseAllowEntry(entry).text, entry);
  }
});

Deno.test("parseAllowEntry() rejects malformed entries with a RangeError naming them", () => {
  for (
    const entry of [
      "127.0.0.1",
      "127.0.0.1:0",
      "127.0.0.1:65536",
      "127.0.0.1:abc",
      ":22",
      "::1:22",
      "[::1]22",
      "10.0.0.0/33:22",
      "300.1.1.1/8:22",
      "bad host:22",
      "a/b:22",
    ]
  ) {
    assert.throws(() => parseAllowEntry(entry), (e: unknown) => {
      assert.ok(e instanceof RangeError);
      assert.ok(e.message.includes(entry), e.message);
      return true;
    });
  }
});

Deno.test("ruleAllows() matches host, port, wildcard and CIDR", () => {
  const allows = (rule: string, host: string, port: number) =>
    ruleAllows(parseAllowEntry(rule), host, port);
  assert.ok(allows("127.0.0.1:22", "127.0.0.1", 22));
  assert.ok(!allows("127.0.0.1:22", "127.0.0.1", 23));
  assert.ok(!allows("127.0.0.1:22", "127.0.0.2", 22));
  assert.ok(allows("localhost:*", "LOCALHOST", 8080));
  assert.ok(!allows("localhost:*", "127.0.0.1", 8080));
  assert.ok(allows("192.168.1.0/24:502", "192.168.1.77", 502));
  assert.ok(!allows("192.168.1.0/24:502", "192.168.2.77", 502));
  assert.ok(!allows("192.168.1.0/24:502", "plc.local", 502));
  assert.ok(allows("*:5900", "anything.example", 5900));
  assert.ok(allows("[::1]:22", "::1", 22));
  assert.ok(allows("[::1]:22", "0:0:0:0:0:0:0:1", 22));
  assert.ok(allows("[fd00::/8]:*", "fd12:3456::1", 1));
  assert.ok(!allows("[fd00::/8]:*", "fe80::1", 1));
  assert.ok(!allows("127.0.0.0/8:22", "::ffff:127.0.0.1", 22));
  assert.ok(!allows("127.0.0.1:22", "127.000.000.001", 22));
});

Deno.test("parseIp() parses strict IPv4 and IPv6 literals only", () => {
  assert.equal(parseIp("10.1.2.3")?.value, 0x0a010203n);
  assert.equal(parseIp("::")?.value, 0n);
  assert.equal(parseIp("[::2]")?.value, 2n);
  assert.equal(parseIp("::ffff:1.2.3.4")?.value, 0xffff01020304n);
  for (
    const bad of [
      "1.2.3",
      "01.2.3.4",
      "1.2.3.4.5",
      "1:2:3:4:5:6:7:8:9",
      "1::2::3",
      "g::1",
      "",
    ]
  ) {
    assert.equal(parseIp(bad), null, bad);
  }
});

Deno.test("Policy.admit() names the target and the setting that refused it", () => {
  const policy = new Policy([parseAllowEntry("127.0.0.1:22")], 2);
  assert.deepEqual(policy.admit("127.0.0.1", 22, 0), { ok: true });
  assert.deepEqual(policy.admit("10.0.0.5", 22, 0), {
    ok: false,
    reason: "target 10.0.0.5:22 is not in tunnel.allow",
  });
  assert.deepEqual(policy.admit("::1", 22, 0), {
    ok: false,
    reason: "target [::1]:22 is not in tunnel.allow",
  });
  assert.deepEqual(policy.admit("127.0.0.1", 22, 2), {
    ok: false,
    reason: "session limit reached (tunnel.max_sessions = 2)",
  });
});

Deno.test("parseIPv6() takes an embedded IPv4 only as the last piece; formatIPv6() writes RFC 5952", () => {
  assert.equal(parseIPv6("1.2.3.4::"), null);
  assert.equal(parseIPv6("::1.2.3.4:1"), null);
  assert.equal(parseIPv6("[::1]"), null);
  const canonical = (text: string) => formatIPv6(parseIPv6(text)!.value);
  assert.equal(canonical("0:0:0:0:0:0:0:1"), "::1");
  assert.equal(canonical("2001:DB8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
  assert.equal(canonical("::ffff:1.2.3.4"), "::ffff:102:304");
  assert.equal(canonical("1:0:2:3:4:5:6:7"), "1:0:2:3:4:5:6:7");
  assert.equal(canonical("::"), "::");
});
