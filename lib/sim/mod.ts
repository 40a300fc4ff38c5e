/**
 * Local stand-ins for the two services the agent talks to: an embedded MQTT
 * broker and a simulator of Cumulocity's remote-access service. Used by
 * `c8y-tunnel demo`, the tests and the benchmarks.
 *
 * @module
 */
export {
  type EmbeddedBroker,
  startBroker,
  type StartBrokerOptions,
} from "./broker.ts";
export {
  type ClientListener,
  type ClientSession,
  type CloseInfo,
  type DeviceHandshake,
  type ListenOptions,
  RemoteAccessSim,
  type RemoteAccessSimOptions,
  smartRest530,
} from "./cloud.ts";
