import { LB_HASH_KEY, LB_METADATA } from './envoy-names.js';

/** One host:port of a cluster, as it goes into an LbEndpoint. */
export interface EndpointTarget {
  /** An IP, or for STRICT_DNS a name Envoy resolves. */
  readonly address: string;
  readonly port: number;
  readonly healthCheckPort: number;
  /** A terminating pod: no new sessions, but in-flight ones may finish (see lbEndpoint). */
  readonly draining: boolean;
  /** Envoy's load_balancing_weight; absent is Envoy's default, 1. */
  readonly weight?: number;
}

function compareTargets(a: EndpointTarget, b: EndpointTarget): number {
  if (a.address !== b.address) return a.address < b.address ? -1 : 1;
  if (a.port !== b.port) return a.port - b.port;
  if (a.draining !== b.draining) return a.draining ? 1 : -1;
  if (a.healthCheckPort !== b.healthCheckPort) return a.healthCheckPort - b.healthCheckPort;
  // The heavier first: a host two endpoints name takes the larger weight.
  return (b.weight ?? 1) - (a.weight ?? 1);
}

/**
 * Sorted by address then port, one per address and port: a pod that is both selected and
 * listed by address is one host to Envoy. A serving entry beats a draining one for the same
 * host, so a pod is never drained because some other endpoint also names its IP.
 */
export function normalizeTargets(targets: readonly EndpointTarget[]): EndpointTarget[] {
  const sorted = [...targets].sort(compareTargets);
  return sorted.filter((t, i) => {
    const prev = sorted[i - 1];
    return !prev || prev.address !== t.address || prev.port !== t.port;
  });
}

/**
 * The `envoy.lb` hash_key is the address alone, not address:port, so Maglev places one pod at
 * the same spot in every cluster: RTP and RTCP of one call reach the same worker though their
 * ports differ.
 *
 * A terminating pod goes as DEGRADED, not DRAINING: Envoy takes a DRAINING host for unhealthy,
 * and udp_proxy moves a session whose host is unhealthy to another host at its next datagram,
 * so DRAINING would move every call off the pod at once. A DEGRADED host keeps its sessions, and
 * gets no new ones while a healthy host is left (the assignment's overprovisioning, below).
 */
export function lbEndpoint(target: EndpointTarget, healthChecked: boolean): object {
  return {
    endpoint: {
      address: { socket_address: { address: target.address, port_value: target.port } },
      ...(healthChecked ? { health_check_config: { port_value: target.healthCheckPort } } : {}),
    },
    ...(target.draining ? { health_status: 'DEGRADED' } : {}),
    ...(target.weight !== undefined ? { load_balancing_weight: { value: target.weight } } : {}),
    metadata: { filter_metadata: { [LB_METADATA]: { fields: { [LB_HASH_KEY]: { stringValue: target.address } } } } },
  };
}

/** One locality group without a locality: gRPC clients reject endpoints outside one. */
export function localityEndpoints(targets: readonly EndpointTarget[], healthChecked: boolean): object[] {
  if (targets.length === 0) return [];
  return [{ locality: {}, lb_endpoints: targets.map((t) => lbEndpoint(t, healthChecked)) }];
}

/**
 * With a terminating (DEGRADED) pod: Envoy gives degraded hosts the share of new sessions that
 * the healthy ones, at their fraction of all hosts times the overprovisioning factor (1.4 by
 * default), do not cover: with 2 of 3 pods healthy, 7% of new calls would land on the
 * terminating one. A factor of 1,000× lets any healthy host take every new session; degraded
 * hosts get new sessions only when none is healthy. Without a terminating pod, nothing is set,
 * so those assignments stay as they were.
 */
export function assignmentPolicy(targets: readonly EndpointTarget[]): object {
  return targets.some((t) => t.draining) ? { policy: { overprovisioning_factor: { value: TERMINATING_OVERPROVISIONING } } } : {};
}

/** Envoy's overprovisioning factor is in percent: 100,000 is 1,000×. */
const TERMINATING_OVERPROVISIONING = 100_000;

export function targetsKey(targets: readonly EndpointTarget[]): string {
  return targets.map((t) => `${t.address} ${t.port} ${t.healthCheckPort}${t.draining ? ' d' : ''}${t.weight !== undefined ? ` w${t.weight}` : ''}`).join(',');
}
