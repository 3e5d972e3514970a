import { createHash } from 'node:crypto';
import { canonicalJson, deepFreeze } from '../model/canonical.js';
import type { ClusterSpec, HealthCheckSpec } from '../model/types.js';
import type { ResourceInput } from '../xds/snapshot.js';
import { durationMs } from './duration.js';
import { localityEndpoints, normalizeTargets, type EndpointTarget } from './lb-endpoint.js';
import { SpecMemo, WeakValueCache } from './memo.js';

const MAX_HEALTH_CHECK_TIMEOUT_MS = 1000;

/**
 * Concurrent UDP sessions Envoy lets one cluster carry: udp_proxy counts each session against the
 * cluster's max_connections circuit breaker, whose default (1,024) silently drops every session past
 * it, and a shared cluster carries the sessions of every call that uses it.
 */
export const MAX_SESSIONS_PER_CLUSTER = 1_000_000;

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
      e.host.address === undefined
        ? []
        : [{ address: e.host.address, port: e.port, healthCheckPort: e.health_check_port ?? e.port, draining: false, ...(e.weight !== undefined ? { weight: e.weight } : {}) }],
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
      circuit_breakers: { thresholds: [{ max_connections: { value: spec.max_sessions ?? MAX_SESSIONS_PER_CLUSTER } }] },
      ...(spec.health_check ? { health_checks: [healthCheck(spec.health_check)] } : {}),
    },
  });
}

/** What buildCluster reads: EDS clusters do not depend on their endpoints (those are in the CLA). */
function clusterContent(spec: ClusterSpec): string {
  const hc = spec.health_check;
  const inline = spec.service_discovery === 'strictdns' ? addressTargets(spec).map((t) => [t.address, t.port, t.healthCheckPort, t.weight ?? null]) : [];
  return JSON.stringify([spec.name, spec.service_discovery, hc ? [hc.interval, hc.protocol] : null, inline, spec.max_sessions ?? null]);
}

const clusters = new SpecMemo(buildCluster, clusterContent, 65_536);

export function clusterResource(spec: ClusterSpec): ResourceInput {
  return clusters.get(spec);
}

/**
 * What Envoy sees of a cluster, besides its name: the hash policy belongs to the listener. A weight
 * and a session limit are added only when set, so clusters without them keep the names (and the
 * versions) they had before those fields existed.
 */
function envoyContent(spec: ClusterSpec): string {
  const hc = spec.health_check;
  const endpoints = spec.endpoints
    .map((e) =>
      canonicalJson([e.host.selector ?? null, e.host.address ?? null, e.port, hc ? (e.health_check_port ?? e.port) : null, ...(e.weight !== undefined ? [e.weight] : [])]),
    )
    .sort();
  const limit = spec.max_sessions !== undefined ? [spec.max_sessions] : [];
  return JSON.stringify([spec.service_discovery, hc ? [hc.interval, hc.protocol] : null, [...new Set(endpoints)], ...limit]);
}

const sharedByContent = new WeakValueCache<string, ClusterSpec>(65_536);
const sharedBySpec = new WeakMap<ClusterSpec, ClusterSpec>();

/**
 * The cluster Envoy is given for a user's cluster. Shared: one cluster for every user cluster of
 * the same content (discovery, health check, endpoints), named by that content, so a new call
 * whose cluster matches one the proxy runs needs no cluster to create and warm, and the proxy
 * health-checks each worker once instead of once per call. The name depends on the content only,
 * never on which VirtualService came first, so a call's listener keeps its cluster while other
 * calls come and go. The hash key lives in the listener's hash policy, not in the cluster, so
 * listeners with different keys share it and still pick their workers by their own key. A session
 * limit is content: it bounds the sessions of every listener that shares the cluster, together.
 * Not shared: the user's cluster as it is.
 */
export function envoyClusterSpec(spec: ClusterSpec, share: boolean): ClusterSpec {
  if (!share) return spec;
  const known = sharedBySpec.get(spec);
  if (known) return known;
  const content = envoyContent(spec);
  let shared = sharedByContent.get(content);
  if (!shared) {
    // A readable part (discovery, the lowest endpoint port: RTP and RTCP clusters tell apart), then the content's hash.
    const kind = spec.service_discovery === 'eds' ? 'eds' : 'dns';
    const port = Math.min(...spec.endpoints.map((e) => e.port));
    const name = `vsxds-${kind}-${Number.isFinite(port) ? port : 0}-${createHash('sha256').update(content).digest('hex').slice(0, 12)}`;
    const { hash_key: _key, hash_source_ip: _sourceIp, ...rest } = spec;
    shared = deepFreeze({ ...rest, name });
    sharedByContent.set(content, shared);
  }
  sharedBySpec.set(spec, shared);
  return shared;
}
