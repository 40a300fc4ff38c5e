// Reference remote-access bridge for the c8y-tunnel benchmark, written with
// the stack other Cumulocity device agents use: Node.js, npm `ws`, npm `mqtt`.
// It plays the same role as `c8y-tunnel run`: subscribes to <prefix>/s/ds,
// and for each `530,<device>,<host>,<port>,<key>` publishes 501, opens TCP to
// host:port and a WebSocket to <url>/service/remoteaccess/device/<key>, then
// 503 once both are up (502 on failure), and copies bytes both ways with
// backpressure (ws.pause/resume and a bound on unsent bytes). It is a fair,
// carefully written bridge, not a strawman: Nagle off, no per-chunk strings.
//
// Usage: node bridge.mjs --broker mqtt://127.0.0.1:1883 --url http://127.0.0.1:8080
//        [--prefix c8y] [--client-id id]
import net from "node:net";
import mqtt from "mqtt";
import WebSocket from "ws";

const args = new Map();
for (let i = 2; i + 1 < process.argv.length; i += 2) {
  args.set(process.argv[i].replace(/^--/, ""), process.argv[i + 1]);
}
const brokerUrl = args.get("broker") ?? "mqtt://127.0.0.1:1883";
const cloudUrl = new URL(args.get("url") ?? "http://127.0.0.1:8080");
const prefix = args.get("prefix") ?? "c8y";
const clientId = args.get("client-id") ?? `node-bridge-${process.pid}`;
const wsBase = `${
  cloudUrl.protocol === "http:" ? "ws:" : "wss:"
}//${cloudUrl.host}`;
const health = "te/device/main/service/node-bridge/status/health";

/** Unsent bytes (TCP -> WebSocket) above which the TCP side is paused. */
const HIGH_WATER = 4 * 1024 * 1024;
const LOW_WATER = 1024 * 1024;

const sessions = new Set();
const client = mqtt.connect(brokerUrl, {
  clientId,
  clean: true,
  will: { topic: health, payload: '{"status":"down"}', qos: 1, retain: true },
});
client.on("connect", async () => {
  client.stream.setNoDelay?.(true); // else a status waits behind a delayed ACK
  await client.subscribeAsync(`${prefix}/s/ds`, { qos: 1 });
  await client.publishAsync(
    health,
    JSON.stringify({
      status: "up",
      pid: process.pid,
      time: Math.floor(Date.now() / 1000),
    }),
    { qos: 1, retain: true },
  );
});
client.on("error", (error) => console.error(`mqtt: ${error.message}`));
client.on("message", (_topic, payload) => {
  for (const line of payload.toString("utf8").split("\n")) {
    const fields = line.trim().split(",");
    if (fields[0] !== "530" || fields.length < 5) continue;
    const [, , host, port, key] = fields;
    serve(host, Number(port), key);
  }
});

function status(line) {
  client.publish(`${prefix}/s/us`, line, { qos: 1 });
}

function serve(host, port, key) {
  status("501,c8y_RemoteAccessConnect");
  let tcpUp = false;
  let wsUp = false;
  let ended = false;
  const tcp = net.connect({ host, port, noDelay: true });
  tcp.pause(); // hold what the target sends until the WebSocket is up
  const ws = new WebSocket(
    `${wsBase}/service/remoteaccess/device/${encodeURIComponent(key)}`,
    "binary",
    {
      perMessageDeflate: false,
    },
  );
  ws.binaryType = "nodebuffer";
  sessions.add(tcp);

  const fail = (reason) => {
    if (ended) return;
    ended = true;
    sessions.delete(tcp);
    if (!(tcpUp && wsUp)) {
      status(
        `502,c8y_RemoteAccessConnect,"${String(reason).replaceAll('"', '""')}"`,
      );
    }
    tcp.destroy();
    ws.terminate();
  };
  const bothUp = () => {
    if (!(tcpUp && wsUp) || ended) return;
    status("503,c8y_RemoteAccessConnect");
    ws.resume();
    tcp.resume();
  };

  tcp.once("connect", () => {
    tcpUp = true;
    bothUp();
  });
  ws.once("open", () => {
    wsUp = true;
    bothUp();
  });
  // Frames that arrive before the target is connected are queued by
  // net.Socket (ws cannot pause before "open"); the bound below applies.

  // Target -> cloud, paused while too many bytes are not yet on the socket.
  let unsent = 0;
  let paused = false;
  const sent = (n) => () => {
    unsent -= n;
    if (paused && unsent <= LOW_WATER) {
      paused = false;
      tcp.resume();
    }
  };
  tcp.on("data", (chunk) => {
    unsent += chunk.length;
    ws.send(chunk, { binary: true }, sent(chunk.length));
    if (unsent > HIGH_WATER && !paused) {
      paused = true;
      tcp.pause();
    }
  });
  tcp.on("end", () => {
    if (!ended) {
      ended = true;
      sessions.delete(tcp);
      ws.close(1000, "target closed");
    }
  });
  tcp.on("error", (error) => fail(`target: ${error.message}`));
  tcp.on("close", () => {
    if (!ended) fail("target closed");
  });

  // Cloud -> target, paused while the TCP socket is not draining.
  ws.on("message", (data) => {
    if (!tcp.write(data)) {
      ws.pause();
      tcp.once("drain", () => ws.resume());
    }
  });
  ws.on("close", () => {
    if (!ended) {
      ended = true;
      sessions.delete(tcp);
    }
    tcp.end();
  });
  ws.on("error", (error) => fail(`cloud: ${error.message}`));
}

const stop = () => {
  for (const tcp of sessions) tcp.destroy();
  client.publish(health, '{"status":"down"}', { qos: 1, retain: true }, () => {
    client.end(false, () => process.exit(0));
  });
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
