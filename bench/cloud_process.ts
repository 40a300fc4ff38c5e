/**
 * The cloud of the benchmark, in its own process so that its work does not
 * share a thread with the measuring client: `lib/sim`'s RemoteAccessSim with
 * one local TCP listener (like `c8y remoteaccess server`). Prints one JSON
 * line `{"url":…,"port":…}` when ready, then `key <connection key>` for each
 * accepted client connection; the driver publishes the 530 for it.
 *
 * Usage: deno run -A bench/cloud_process.ts
 *
 * @module
 */
import { RemoteAccessSim } from "../lib/sim/cloud.ts";

const encoder = new TextEncoder();
const print = (line: string): void => {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
};

const sim = await RemoteAccessSim.start();
const listener = sim.listen({ onRequest: (key) => print(`key ${key}`) });
print(JSON.stringify({ url: sim.url, port: listener.port }));

const stop = async () => {
  await listener.close();
  await sim.close();
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
