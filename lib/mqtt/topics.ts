/**
 * Every MQTT topic name the agent uses, built once from the config
 * (DESIGN.md §1.1-1.3): SmartREST and JSON operations in, status out, the
 * JWT exchange, the thin-edge health and service registration, and the
 * private `connect` handoff.
 *
 * @module
 */
import type { Config } from "../config/config.ts";

/** Topic names derived from one config. */
export interface Topics {
  /** SmartREST requests from the cloud (`<prefix>/s/ds`): 530 lines. */
  readonly smartRestIn: string;
  /** JSON operations from the cloud (`<prefix>/devicecontrol/notifications`). */
  readonly operationsIn: string;
  /** Publish an empty message here to ask the bridge for a JWT (`<prefix>/s/uat`). */
  readonly jwtRequest: string;
  /** The bridge's JWT answer `71,<token>` (`<prefix>/s/dat`). */
  readonly jwtResponse: string;
  /** The service's retained health (`<root>/device/main/service/<name>/status/health`). */
  readonly health: string;
  /** The service's retained registration (`<root>/device/main/service/<name>`). */
  readonly service: string;
  /**
   * Health checks the service answers by publishing its health again, as
   * thin-edge services do: its own (`<root>/device/main/service/<name>/cmd/health/check`)
   * and the device-wide one (`<root>/device/main///cmd/health/check`).
   */
  readonly healthChecks: readonly string[];
  /** Where the status of an operation for `deviceId` goes: `<prefix>/s/us`, or `<prefix>/s/us/<child id>`. */
  statusOut(deviceId: string): string;
  /** The daemon subscribes to this filter for handed-over requests (`<service name>/connect/request/+`). */
  readonly handoffRequests: string;
  /** One handed-over request (`<service name>/connect/request/<id>`). */
  handoffRequest(id: string): string;
  /** The daemon's answers to one handed-over request (`<service name>/connect/result/<id>`). */
  handoffResult(id: string): string;
}

/** Builds the topic names for `config`. */
export function topicsFor(config: Config): Topics {
  const prefix = config.mqtt.topicPrefix;
  const { topicRoot, deviceTopicId, serviceName } = config.health;
  // device/<id>// -> device/<id>/service/<name> (thin-edge's default scheme)
  const serviceId = deviceTopicId.replace(/\/\/$/, `/service/${serviceName}`);
  const service = `${topicRoot}/${serviceId}`;
  const handoff = `${config.health.serviceName}/connect`;
  const mainDevice = config.c8y.deviceId;
  return {
    smartRestIn: `${prefix}/s/ds`,
    operationsIn: `${prefix}/devicecontrol/notifications`,
    jwtRequest: `${prefix}/s/uat`,
    jwtResponse: `${prefix}/s/dat`,
    health: `${service}/status/health`,
    service,
    healthChecks: [
      `${service}/cmd/health/check`,
      `${topicRoot}/${deviceTopicId}/cmd/health/check`,
    ],
    statusOut: (deviceId) =>
      deviceId === mainDevice ? `${prefix}/s/us` : `${prefix}/s/us/${deviceId}`,
    handoffRequests: `${handoff}/request/+`,
    handoffRequest: (id) => `${handoff}/request/${id}`,
    handoffResult: (id) => `${handoff}/result/${id}`,
  };
}
