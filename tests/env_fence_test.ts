import assert from "node:assert/strict";
import { AGENT_ENV, fencedEnv } from "../lib/util/agent_env.ts";
import { CONFIG_PATH_ENV, PROFILE_ENV } from "../lib/config/config.ts";
import { CHILD_ENV } from "../lib/commands/connect.ts";

Deno.test("AGENT_ENV lists every variable the agent reads", () => {
  assert.deepEqual(
    [...AGENT_ENV].sort(),
    [CHILD_ENV, CONFIG_PATH_ENV, PROFILE_ENV].sort(),
  );
});

Deno.test("fencedEnv() keeps only set, readable agent variables", () => {
  const env = fencedEnv((name) => {
    if (name === "C8Y_TUNNEL_CONNECT_CHILD") {
      throw new Deno.errors.NotCapable("no");
    }
    return name === "C8Y_TUNNEL_CONFIG" ? "/tmp/c.toml" : undefined;
  });
  assert.deepEqual(env, { C8Y_TUNNEL_CONFIG: "/tmp/c.toml" });
});

Deno.test("main.ts runs with --allow-env scoped to the agent's variables", async () => {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-read",
      `--allow-env=${AGENT_ENV.join(",")}`,
      main,
      "--version",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.match(
    new TextDecoder().decode(out.stdout),
    /^c8y-tunnel \d+\.\d+\.\d+/,
  );
});
