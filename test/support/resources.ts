import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, type ResourceInput, type SnapshotInput } from '../../src/xds/index.js';

/** Small builders for snapshot inputs, so tests read as "this listener, these clusters". */

export function udpListener(name: string, port: number, cluster: string): ResourceInput {
  return {
    name,
    references: [{ typeUrl: CLUSTER_TYPE, name: cluster }],
    resource: {
      name,
      address: { socket_address: { protocol: 'UDP', address: '0.0.0.0', port_value: port } },
      listener_filters: [
        {
          name: 'envoy.filters.udp_listener.udp_proxy',
          typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig', stat_prefix: name, cluster },
        },
      ],
    },
  };
}

/** An EDS cluster that grpc-js-xds accepts (round robin). */
export function edsCluster(name: string, lbPolicy = 'ROUND_ROBIN'): ResourceInput {
  return {
    name,
    resource: {
      name,
      type: 'EDS',
      eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' } },
      lb_policy: lbPolicy,
      connect_timeout: { seconds: 1 },
    },
  };
}

export function endpoints(cluster: string, addresses: string[], port = 1234): ResourceInput {
  return {
    name: cluster,
    resource: {
      cluster_name: cluster,
      endpoints: [
        {
          locality: {},
          lb_endpoints: addresses.map((a) => ({ endpoint: { address: { socket_address: { address: a, port_value: port } } } })),
        },
      ],
    },
  };
}

export interface Pipeline {
  listeners?: ResourceInput[];
  clusters?: ResourceInput[];
  endpoints?: ResourceInput[];
}

export function snapshotInput(p: Pipeline): SnapshotInput {
  return { [LISTENER_TYPE]: p.listeners ?? [], [CLUSTER_TYPE]: p.clusters ?? [], [ENDPOINT_TYPE]: p.endpoints ?? [] };
}

/** One listener → one EDS cluster → its endpoints. */
export function simplePipeline(name: string, port: number, addresses: string[], lbPolicy = 'ROUND_ROBIN'): Required<Pipeline> {
  return {
    listeners: [udpListener(`${name}-listener`, port, name)],
    clusters: [edsCluster(name, lbPolicy)],
    endpoints: [endpoints(name, addresses)],
  };
}
