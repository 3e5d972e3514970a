import { nodeGroup } from '../src/xds/node-identity.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, type ResourceInput, type SnapshotInput } from '../src/xds/index.js';

/**
 * The benchmark fleet's resources for vsxds. bench/internal/fleet/fleet.go builds the same ones
 * for go-control-plane and the stub: same names, fields and values, so every server sends the
 * same configuration (the loadgen reports bytes per client, which shows it). They have the
 * shape translate/ emits for a VirtualService listener with a hash key and a TCP health check.
 */

export interface Shape {
  readonly groups: number;
  /** One listener per cluster. */
  readonly clustersPerGroup: number;
  readonly endpointsPerCluster: number;
}

export const NAMESPACE = 'bench';

const pad = (n: number, width: number): string => String(n).padStart(width, '0');

export const groupName = (g: number): string => `g${pad(g, 3)}`;
export const groupKey = (g: number): string => nodeGroup(NAMESPACE, { app: 'ingress', group: groupName(g) }).key;
export const listenerName = (g: number, k: number): string => `${groupName(g)}-l${pad(k, 5)}`;
export const clusterName = (g: number, k: number): string => `${groupName(g)}-c${pad(k, 5)}`;

export function endpointAddress(shape: Shape, g: number, k: number, e: number): string {
  const n = g * shape.clustersPerGroup + k;
  return `10.${(n >> 8) & 255}.${n & 255}.${10 + e}`;
}

/** Endpoint 0 of cluster 0 of every affected group becomes this address at change `gen`. */
export const changedAddress = (gen: number): string => `172.16.${(gen >> 8) & 255}.${gen & 255}`;

const SECOND = { seconds: 1 };

export function listenerInput(g: number, k: number): ResourceInput {
  const name = listenerName(g, k);
  const cluster = clusterName(g, k);
  return {
    name,
    references: [{ typeUrl: CLUSTER_TYPE, name: cluster }],
    resource: {
      name,
      address: { socket_address: { protocol: 'UDP', address: '0.0.0.0', port_value: 10000 + k } },
      listener_filters: [
        {
          name: 'envoy.filters.udp_listener.udp_proxy',
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig',
            stat_prefix: name,
            matcher: {
              on_no_match: {
                action: {
                  name: 'route',
                  typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route', cluster },
                },
              },
            },
            hash_policies: [{ key: 'callid' }],
          },
        },
      ],
    },
  };
}

export function clusterInput(g: number, k: number): ResourceInput {
  const name = clusterName(g, k);
  return {
    name,
    resource: {
      name,
      type: 'EDS',
      eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' } },
      connect_timeout: SECOND,
      lb_policy: 'MAGLEV',
      common_lb_config: { healthy_panic_threshold: { value: 0 } },
      health_checks: [
        {
          timeout: SECOND,
          interval: SECOND,
          no_traffic_interval: SECOND,
          unhealthy_threshold: { value: 1 },
          healthy_threshold: { value: 1 },
          tcp_health_check: {},
        },
      ],
    },
  };
}

/** `changedGen` > 0 puts changedAddress(changedGen) in place of endpoint 0. */
export function assignmentInput(shape: Shape, g: number, k: number, changedGen = 0): ResourceInput {
  const name = clusterName(g, k);
  const lbEndpoints = [];
  for (let e = 0; e < shape.endpointsPerCluster; e++) {
    const address = e === 0 && changedGen > 0 ? changedAddress(changedGen) : endpointAddress(shape, g, k, e);
    lbEndpoints.push({
      endpoint: {
        address: { socket_address: { address, port_value: 2001 } },
        health_check_config: { port_value: 1233 },
      },
      metadata: { filter_metadata: { 'envoy.lb': { fields: { hash_key: { stringValue: address } } } } },
    });
  }
  return { name, resource: { cluster_name: name, endpoints: [{ locality: {}, lb_endpoints: lbEndpoints }] } };
}

/** One group's resources, kept so a change can swap one assignment and reuse the other objects. */
export class GroupResources {
  readonly listeners: readonly ResourceInput[];
  readonly clusters: readonly ResourceInput[];
  assignments: readonly ResourceInput[];

  constructor(
    readonly shape: Shape,
    readonly g: number,
  ) {
    const ks = [...Array(shape.clustersPerGroup).keys()];
    this.listeners = ks.map((k) => listenerInput(g, k));
    this.clusters = ks.map((k) => clusterInput(g, k));
    this.assignments = ks.map((k) => assignmentInput(shape, g, k));
  }

  /** Unchanged resources stay the same objects, as translate/ hands them over, so only the changed one is encoded. */
  change(gen: number): void {
    const next = [...this.assignments];
    next[0] = assignmentInput(this.shape, this.g, 0, gen);
    this.assignments = next;
  }

  input(): SnapshotInput {
    return { [LISTENER_TYPE]: this.listeners, [CLUSTER_TYPE]: this.clusters, [ENDPOINT_TYPE]: this.assignments };
  }
}
