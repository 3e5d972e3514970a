import { deepFreeze } from '../model/canonical.js';
import type { ListenerSpec } from '../model/types.js';
import type { ResourceInput } from '../xds/snapshot.js';
import { CLUSTER_TYPE } from '../xds/type-urls.js';
import { UDP_PROXY_CONFIG_TYPE, UDP_PROXY_FILTER, UDP_PROXY_ROUTE_TYPE } from './envoy-names.js';
import { durationMs } from './duration.js';
import { SpecMemo } from './memo.js';
import { sessionAccessLog } from './session-log.js';

/**
 * A UDP listener on every address of the proxy, whose udp_proxy filter routes everything to
 * the listener's cluster. The route goes through the matcher because UdpProxyConfig.cluster is
 * deprecated. With a hash_key, one constant-key hash policy makes Maglev pick by the endpoints'
 * own hash keys, so every stream of a call lands on the same worker; with hash_source_ip, the
 * client's IP is the key. The session options are written only when set: a listener without them
 * is what it was before they existed.
 */
function buildListener({ spec, clusterName }: ListenerInput): ResourceInput {
  const { name } = spec;
  const { port, cluster, idle_timeout_ms: idleTimeout, per_packet_load_balancing: perPacket, access_log: accessLog } = spec.udp;
  return deepFreeze({
    name,
    references: [{ typeUrl: CLUSTER_TYPE, name: clusterName }],
    resource: {
      name,
      address: { socket_address: { protocol: 'UDP', address: '0.0.0.0', port_value: port } },
      listener_filters: [
        {
          name: UDP_PROXY_FILTER,
          typed_config: {
            '@type': UDP_PROXY_CONFIG_TYPE,
            stat_prefix: name,
            matcher: {
              on_no_match: {
                action: { name: 'route', typed_config: { '@type': UDP_PROXY_ROUTE_TYPE, cluster: clusterName } },
              },
            },
            ...hashPolicies(cluster),
            ...(idleTimeout !== undefined ? { idle_timeout: durationMs(idleTimeout) } : {}),
            ...(perPacket ? { use_per_packet_load_balancing: true } : {}),
            ...(accessLog ? sessionAccessLog(name, accessLog) : {}),
          },
        },
      ],
    },
  });
}

function hashPolicies(cluster: ListenerSpec['udp']['cluster']): object {
  if (cluster.hash_key) return { hash_policies: [{ key: cluster.hash_key }] };
  return cluster.hash_source_ip ? { hash_policies: [{ source_ip: true }] } : {};
}

interface ListenerInput {
  readonly spec: ListenerSpec;
  /** The Envoy cluster it routes to (see envoyClusterSpec). */
  readonly clusterName: string;
}

// Listeners change only when VirtualServices do; this covers a large fleet's worth.
const listeners = new SpecMemo<ListenerInput, ResourceInput>(
  buildListener,
  ({ spec: l, clusterName }) => {
    const { port, cluster, idle_timeout_ms: idle, per_packet_load_balancing: perPacket, access_log: log } = l.udp;
    return JSON.stringify([l.name, port, clusterName, cluster.hash_key ?? '', cluster.hash_source_ip === true, idle ?? null, perPacket === true, log ?? null]);
  },
  65_536,
);
const inputs = new WeakMap<ListenerSpec, ListenerInput>();

export function listenerResource(spec: ListenerSpec, clusterName: string): ResourceInput {
  let input = inputs.get(spec);
  if (input?.clusterName !== clusterName) inputs.set(spec, (input = { spec, clusterName }));
  return listeners.get(input);
}
