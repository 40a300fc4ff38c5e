/**
 * Notices QoS 1 messages that the broker numbered for this client and then
 * never sent. mosquitto numbers the QoS 1 messages it sends one client 1,
 * 2, 3, … (65535 wraps to 1) and, with its queue for the client full,
 * drops one after it was numbered; it then waits for its PUBACK for as
 * long as the connection lasts, and each such message holds one of the
 * client's in-flight slots (20 by default). A gap in the ids is how the
 * client can tell (docs/hostile-mqtt.md).
 *
 * @module
 */

/**
 * Gaps wider than this are not counted as losses: a broker that does not
 * number its messages one after the other, or one that sends a message
 * again, is not reported as losing thousands.
 */
const MAX_GAP = 1000;

/** Follows the packet ids of the QoS 1 messages from one connection, in arrival order. */
export class LostIds {
  #last = 0;

  /** How many ids were skipped before `id` (0 for the first message, or when none were). */
  next(id: number): number {
    const last = this.#last;
    this.#last = id;
    if (last === 0 || id === 0) return 0;
    const expected = last === 0xffff ? 1 : last + 1;
    // Ids run 1..65535: the distance forward from the expected one.
    const skipped = (id - expected + 0xffff) % 0xffff;
    return skipped <= MAX_GAP ? skipped : 0;
  }
}
