import { deepFreeze } from '../model/canonical.js';
import type { ClusterSpec, HealthCheckSpec } from '../model/types.js';
import type { ResourceInput } from '../xds/snapshot.js';
import { durationMs } from './duration.js';
import { localityEndpoints, normalizeTargets, type EndpointTarget } from './lb-endpoint.js';
import { SpecMemo } from './memo.js';

const MAX_HEALTH_CHECK_TIMEOUT_MS = 1000;

/**
 * A TCP connect check (the old operator sent HTTP by mistake). One failure marks a host
 * unhealthy and one success brings it back: with the panic threshold at 0 that is what moves
 * calls off a dead worker fast. The timeout is the interval, capped at 1 s, so at most one
 * check per host is in flight. no_traffic_interval is the interval too: Envoy counts traffic
 * in upstream connections, which UDP sessions never open, so it would otherwise check every
 * 60 s forever.
 */
function healthCheck(hc: HealthCheckSpec): object {
  return {
    timeout: durationMs(Math.min(hc.interval, MAX_HEALTH_CHECK_TIMEOUT_MS)),
    interval: durationMs(hc.interval),
    no_traffic_interval: durationMs(hc.interval),
    unhealthy_threshold: { value: 1 },
    healthy_threshold: { value: 1 },
    tcp_health_check: {},
  };
}

/** Endpoints written into a STRICT_DNS cluster, which Envoy resolves itself. */
export function addressTargets(spec: ClusterSpec): EndpointTarget[] {
  return normalizeTargets(
    spec.endpoints.flatMap((e) =>
      e.host.address === undefined ? [] : [{ address: e.host.address, port: e.port, healthCheckPort: e.health_check_port ?? e.port, draining: false }],
    ),
  );
}

/**
 * Maglev (consistent hashing that moves few calls when workers come and go) with the panic
 * threshold at 0, so Envoy never falls back to sending traffic to hosts it knows are down.
 */
function buildCluster(spec: ClusterSpec): ResourceInput {
  const discovery =
    spec.service_discovery === 'eds'
      ? { type: 'EDS', eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' } } }
      : {
          type: 'STRICT_DNS',
          load_assignment: { cluster_name: spec.name, endpoints: localityEndpoints(addressTargets(spec), spec.health_check !== undefined) },
        };
  return deepFreeze({
    name: spec.name,
    resource: {
      name: spec.name,
      ...discovery,
      connect_timeout: { seconds: 1 },
      lb_policy: 'MAGLEV',
      common_lb_config: { healthy_panic_threshold: { value: 0 } },
      ...(spec.health_check ? { health_checks: [healthCheck(spec.health_check)] } : {}),
    },
  });
}

/** What buildCluster reads: EDS clusters do not depend on their endpoints (those are in the CLA). */
function clusterContent(spec: ClusterSpec): string {
  const hc = spec.health_check;
  const inline = spec.service_discovery === 'strictdns' ? addressTargets(spec).map((t) => [t.address, t.port, t.healthCheckPort]) : [];
  return JSON.stringify([spec.name, spec.service_discovery, hc ? [hc.interval, hc.protocol] : null, inline]);
}

const clusters = new SpecMemo(buildCluster, clusterContent, 65_536);

export function clusterResource(spec: ClusterSpec): ResourceInput {
  return clusters.get(spec);
}
