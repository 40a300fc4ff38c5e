/**
 * The environment fence: npm packages see only the variables the agent
 * itself reads (lib/util/agent_env.ts). npm `mqtt` loads `debug`, which lists the
 * whole environment (`Object.keys(process.env)`) when it is loaded, and Deno
 * allows that only with an unscoped `--allow-env`. Replacing Node's
 * `process.env` with a plain object of the agent's own variables lets the
 * agent run with `--allow-env` scoped to them.
 *
 * Importing this module is the whole effect: main.ts imports it first,
 * before anything that loads npm code.
 *
 * @module
 */
import process from "node:process";
import { fencedEnv } from "./agent_env.ts";

Object.defineProperty(process, "env", {
  value: fencedEnv((name) => Deno.env.get(name)),
  configurable: true,
  enumerable: true,
  writable: true,
});
