/**
 * How long the operation parsers take on the flood's payloads (the part of
 * bench/flood.ts that the agent parses: what passes `mqtt.max_payload`),
 * in this process, without a broker: `deno run -A
 * --v8-flags=--max-semi-space-size=1 bench/parse.ts [ROUNDS]` (the agent's
 * heap setting, so that garbage collection costs what it costs there). Each
 * payload goes from its bytes as the agent takes it: decoded, then parsed.
 * Prints the time per kind of
 * payload and round; compare runs of two code versions on the same machine.
 *
 * @module
 */
import {
  jsonOperationLines,
  parseJsonOperation,
  parseSmartRest,
} from "../lib/protocol/operations.ts";
import { hostileMessages, TOPICS } from "./flood.ts";

const LIMIT = 64 * 1024; // mqtt.max_payload's default

const decoder = new TextDecoder();
const messages = [...hostileMessages(20_000)]
  .filter((m) => m.payload.length <= LIMIT);
const records = messages.filter((m) => m.kind === "records")
  .reduce(
    (n, m) => n + m.payload.filter((byte) => byte === 0x0a).length + 1,
    0,
  );
console.log(
  `${messages.length} payloads under ${LIMIT} bytes (${records} SmartREST records in the "records" ones)`,
);
const rounds = Number(Deno.args[0] ?? 5);
for (let round = 1; round <= rounds; round++) {
  const ms: Record<string, number> = {};
  for (const m of messages) {
    const started = performance.now();
    if (m.topic === TOPICS.smartRest) parseSmartRest(decoder.decode(m.payload));
    else if (m.topic === TOPICS.operations) {
      const text = decoder.decode(m.payload);
      for (const line of jsonOperationLines(text)) parseJsonOperation(line);
    }
    ms[m.kind] = (ms[m.kind] ?? 0) + performance.now() - started;
  }
  const total = Object.values(ms).reduce((a, b) => a + b, 0);
  console.log(
    `round ${round}: ${total.toFixed(0)} ms (${
      Object.entries(ms).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(", ")
    })`,
  );
}
