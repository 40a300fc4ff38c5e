/**
 * The TLS + password mosquitto used by the `mqtt.client.auth.*` tests: it
 * must really refuse what a misconfigured client would send, or those tests
 * prove nothing.
 */
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { HAVE_TLS_TOOLS, startTlsMosquitto } from "./mosquitto_tls.ts";

/** Connects once; resolves "connected" or the error's message. */
async function tryConnect(options: mqtt.IClientOptions): Promise<string> {
  const client = mqtt.connect({
    ...options,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
  });
  try {
    return await new Promise<string>((resolve) => {
      client.once("connect", () => resolve("connected"));
      client.once("error", (error) => resolve(error.message));
      client.once("close", () => resolve("closed"));
    });
  } finally {
    await client.endAsync(true);
  }
}

Deno.test({
  name:
    "startTlsMosquitto() accepts TLS with the test CA and the password, refuses the rest",
  ignore: !HAVE_TLS_TOOLS,
  async fn() {
    await using broker = await startTlsMosquitto();
    const good = broker.clientOptions();
    assert.equal(await tryConnect(good), "connected");
    assert.notEqual(
      await tryConnect({ ...good, password: "wrong" }),
      "connected",
      "a wrong password must be refused",
    );
    const { username: _u, password: _p, ...anonymous } = good;
    assert.notEqual(
      await tryConnect(anonymous),
      "connected",
      "no credentials must be refused",
    );
    assert.notEqual(
      await tryConnect({ host: "127.0.0.1", port: broker.port }),
      "connected",
      "plain MQTT must not be spoken on the TLS port",
    );
    assert.equal(
      (await Deno.readTextFile(broker.passwordFile)).trim(),
      broker.password,
    );
  },
});

Deno.test({
  name:
    "startTlsMosquitto() with requireCertificate wants the client certificate",
  ignore: !HAVE_TLS_TOOLS,
  async fn() {
    await using broker = await startTlsMosquitto({ requireCertificate: true });
    const good = broker.clientOptions();
    assert.equal(await tryConnect(good), "connected");
    const { cert: _c, key: _k, ...noCert } = good;
    assert.notEqual(await tryConnect(noCert), "connected");
  },
});
