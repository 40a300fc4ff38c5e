/**
 * A proxy that answers 401 instead of 407 to bad proxy credentials (issue 9
 * point 13): the answer to CONNECT is the proxy's own, so it gets the same
 * hint as 407, naming proxy.username and proxy.password.
 */
import assert from "node:assert/strict";
import { dialThroughProxy } from "../lib/cloud/http_connect.ts";
import { errorReason } from "../lib/cloud/leg.ts";
import { readHttpHead } from "./harness.ts";

/** A proxy on loopback that answers every CONNECT with `status`. */
function refusingProxy(
  status: number,
): { url: string; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    for await (const conn of listener) {
      await readHttpHead(conn);
      await conn.write(
        new TextEncoder().encode(
          `HTTP/1.1 ${status} Unauthorized\r\nContent-Length: 0\r\n\r\n`,
        ),
      ).catch(() => {});
      conn.close();
    }
  })().catch(() => {});
  const port = (listener.addr as Deno.NetAddr).port;
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      listener.close();
      await served;
    },
  };
}

Deno.test("dialThroughProxy() gives a proxy's 401 to CONNECT the same hint as 407", async () => {
  for (const status of [401, 407]) {
    const proxy = refusingProxy(status);
    try {
      const error = await dialThroughProxy(
        { url: proxy.url, basicAuth: { username: "u", password: "secret-pw" } },
        "127.0.0.1",
        443,
        AbortSignal.timeout(10_000),
      ).then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof Error);
      const reason = errorReason(error);
      assert.equal(
        reason,
        `proxy ${proxy.url} refused the credentials (HTTP ${status}): check proxy.username and proxy.password`,
      );
      assert.doesNotMatch(reason, /secret-pw/);
    } finally {
      await proxy.close();
    }
  }
});
