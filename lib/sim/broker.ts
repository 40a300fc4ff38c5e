/**
 * Embedded MQTT broker (npm `aedes` on `node:net`) for the demo, tests and
 * benchmarks: a real broker in-process, so nothing has to be installed.
 *
 * @module
 */
import { Aedes } from "aedes";
import { createServer, type Server, type Socket } from "node:net";

/** A running in-process MQTT broker; `close()` frees every socket and timer. */
export interface EmbeddedBroker extends AsyncDisposable {
  /** Address the broker listens on, e.g. `127.0.0.1`. */
  readonly host: string;
  /** TCP port the broker listens on (chosen by the OS when started with 0). */
  readonly port: number;
  /** `mqtt://<host>:<port>`, ready for `mqtt.connect()`. */
  readonly url: string;
  /** Disconnects every client and stops listening. Safe to call twice. */
  close(): Promise<void>;
}

/** Options of {@linkcode startBroker}. */
export interface StartBrokerOptions {
  /** Address to listen on. Default `127.0.0.1`. */
  hostname?: string;
  /** Port to listen on. Default 0 (any free port). */
  port?: number;
}

/**
 * Starts an aedes MQTT broker on a loopback TCP port, so tests and `demo` get a
 * real broker without installing mosquitto.
 *
 * @example
 * ```ts
 * await using broker = await startBroker();
 * const client = mqtt.connect(broker.url);
 * ```
 */
export async function startBroker(
  options: StartBrokerOptions = {},
): Promise<EmbeddedBroker> {
  const hostname = options.hostname ?? "127.0.0.1";
  const aedes = await Aedes.createBroker();
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.once("close", () => sockets.delete(socket));
    aedes.handle(socket);
  });
  // A client that vanishes mid-packet makes aedes emit errors; they concern
  // that client only, not the broker.
  aedes.on("clientError", () => {});
  aedes.on("connectionError", () => {});

  try {
    await listen(server, hostname, options.port ?? 0);
  } catch (error) {
    await closeAedes(aedes);
    throw new Error(
      `Cannot start the embedded MQTT broker on ${hostname}:${
        options.port ?? 0
      }: ${errorMessage(error)}`,
      { cause: error },
    );
  }
  const address = server.address();
  const port = typeof address === "object" && address !== null
    ? address.port
    : 0;
  const host = hostname;
  const url = `mqtt://${host.includes(":") ? `[${host}]` : host}:${port}`;

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      const serverClosed = new Promise<void>((resolve) =>
        server.close(() => resolve())
      );
      await closeAedes(aedes);
      // Connections that never sent CONNECT are unknown to aedes.
      for (const socket of sockets) socket.destroy();
      await serverClosed;
    })();
    return closing;
  };

  return {
    host,
    port,
    url,
    close,
    [Symbol.asyncDispose]: close,
  };
}

function listen(server: Server, hostname: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    server.once("error", onError);
    server.listen(port, hostname, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

function closeAedes(aedes: Aedes): Promise<void> {
  return new Promise((resolve) => aedes.close(() => resolve()));
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
