import assert from "node:assert/strict";
import { LostIds } from "../lib/mqtt/lost_ids.ts";

/** What `next()` says for each id of `ids`, in order. */
function gaps(ids: number[]): number[] {
  const lost = new LostIds();
  return ids.map((id) => lost.next(id));
}

Deno.test("LostIds: consecutive ids lose nothing; a skip says how many ids it skipped", () => {
  assert.deepEqual(gaps([1, 2, 3]), [0, 0, 0]);
  assert.deepEqual(gaps([1, 2, 5, 6, 8]), [0, 0, 2, 0, 1]);
  // The first id seen starts the count, whatever it is.
  assert.deepEqual(gaps([40, 41, 43]), [0, 0, 1]);
});

Deno.test("LostIds: ids wrap from 65535 to 1 (0 is never an id)", () => {
  assert.deepEqual(gaps([65534, 65535, 1, 2]), [0, 0, 0, 0]);
  assert.deepEqual(gaps([65534, 1]), [0, 1]); // 65535 was skipped
  assert.deepEqual(gaps([65535, 3]), [0, 2]);
});

Deno.test("LostIds: a repeated id, a jump back, or a jump of over 1000 is not counted as a loss", () => {
  assert.deepEqual(gaps([5, 5, 6]), [0, 0, 0]);
  assert.deepEqual(gaps([9, 4, 5]), [0, 0, 0]);
  assert.deepEqual(gaps([1, 1002, 1003]), [0, 1000, 0]);
  assert.deepEqual(gaps([1, 1003, 1004]), [0, 0, 0]);
});
