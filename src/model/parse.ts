import { FieldReader, isObject, type Json } from './fields.js';
import { deepFreeze } from './canonical.js';
import { summarize } from './problems.js';
import { timestampText } from './time.js';
import {
  API_VERSION,
  KIND,
  type AccessLogSpec,
  type ClusterSpec,
  type Condition,
  type EndpointSpec,
  type HealthCheckSpec,
  type ListenerSpec,
  type ObjectMeta,
  type VirtualService,
  type VirtualServiceSpec,
  type VirtualServiceStatus,
} from './types.js';

export type ParseResult =
  | { readonly ok: true; readonly vs: VirtualService }
  | {
      readonly ok: false;
      /** `namespace/name`, when the object got far enough to have one (so its status can say why). */
      readonly key?: string;
      readonly reason: string;
      readonly message: string;
    };

const SERVICE_DISCOVERY = ['strictdns', 'eds'] as const;
const HEALTH_CHECK_PROTOCOLS = ['TCP'] as const;
const ACCESS_LOG_DESTINATIONS = ['stdout', 'stderr'] as const;

/**
 * Reads a VirtualService as the apiserver or a YAML file gives it into the model's shape,
 * checking structure and types (not values: that is validate.ts). The result is deeply frozen,
 * so later stages can cache on its objects. `defaultNamespace` fills in a missing
 * metadata.namespace, as kubectl does for files.
 */
export function parseVirtualService(obj: unknown, defaultNamespace?: string): ParseResult {
  const r = new FieldReader();
  const root = r.object(obj, '');
  if (!root) return { ok: false, ...summarize([{ path: '', message: 'a VirtualService must be an object' }]) };

  const apiVersion = root['apiVersion'];
  if (apiVersion !== undefined && apiVersion !== API_VERSION) r.add('apiVersion', `must be ${API_VERSION}, got ${JSON.stringify(apiVersion)}`);
  const kind = root['kind'];
  if (kind !== undefined && kind !== KIND) r.add('kind', `must be ${KIND}, got ${JSON.stringify(kind)}`);

  const metadata = parseMetadata(r, root['metadata'], defaultNamespace);
  const key = metadata ? `${metadata.namespace}/${metadata.name}` : undefined;
  const spec = parseSpec(r, root['spec']);
  if (r.problems.length > 0 || !metadata || !spec) {
    return { ok: false, ...(key ? { key } : {}), ...summarize(r.problems) };
  }
  const status = parseStatus(root['status']);
  const vs: VirtualService = { apiVersion: API_VERSION, kind: KIND, metadata, spec, ...(status ? { status } : {}) };
  return { ok: true, vs: deepFreeze(vs) };
}

function parseMetadata(r: FieldReader, value: unknown, defaultNamespace: string | undefined): ObjectMeta | undefined {
  const m = r.object(value, 'metadata');
  if (!m) return undefined;
  const name = r.string(m, 'name', 'metadata', true);
  if (name === '') r.add('metadata.name', 'must not be empty');
  const namespace = r.string(m, 'namespace', 'metadata') || defaultNamespace;
  if (!namespace) r.add('metadata.namespace', 'is required');
  if (!name || !namespace) return undefined;
  const uid = r.string(m, 'uid', 'metadata');
  const generation = r.integer(m, 'generation', 'metadata');
  const resourceVersion = r.string(m, 'resourceVersion', 'metadata');
  const creationTimestamp = timestampText(m['creationTimestamp']);
  const labels = r.stringMap(m, 'labels', 'metadata');
  return {
    name,
    namespace,
    ...(uid ? { uid } : {}),
    ...(generation !== undefined ? { generation } : {}),
    ...(resourceVersion ? { resourceVersion } : {}),
    ...(creationTimestamp ? { creationTimestamp } : {}),
    ...(labels ? { labels } : {}),
  };
}

function parseSpec(r: FieldReader, value: unknown): VirtualServiceSpec | undefined {
  const s = r.object(value, 'spec');
  if (!s) return undefined;
  r.onlyKeys(s, ['selector', 'listeners'], 'spec');
  const selector = r.stringMap(s, 'selector', 'spec') ?? {};
  const rawListeners = r.list(s, 'listeners', 'spec', true) ?? [];
  const listeners = rawListeners.map((l, i) => parseListener(r, l, `spec.listeners[${i}]`));
  if (!listeners.every((l): l is ListenerSpec => l !== undefined)) return undefined;
  return { selector, listeners };
}

function parseListener(r: FieldReader, value: unknown, path: string): ListenerSpec | undefined {
  const l = r.object(value, path);
  if (!l) return undefined;
  r.onlyKeys(l, ['name', 'udp'], path);
  const name = r.string(l, 'name', path, true);
  const udp = r.object(l['udp'], `${path}.udp`);
  if (!udp) return undefined;
  const udpPath = `${path}.udp`;
  r.onlyKeys(udp, ['port', 'cluster', 'idle_timeout_ms', 'per_packet_load_balancing', 'access_log'], udpPath);
  const port = r.integer(udp, 'port', udpPath, true);
  const cluster = parseCluster(r, udp['cluster'], `${udpPath}.cluster`);
  const idleTimeout = r.integer(udp, 'idle_timeout_ms', udpPath);
  const perPacket = r.boolean(udp, 'per_packet_load_balancing', udpPath);
  const accessLog = present(udp, 'access_log') ? parseAccessLog(r, udp['access_log'], `${udpPath}.access_log`) : undefined;
  const optionalOk = [
    !present(udp, 'idle_timeout_ms') || idleTimeout !== undefined,
    !present(udp, 'per_packet_load_balancing') || perPacket !== undefined,
    !present(udp, 'access_log') || accessLog !== undefined,
  ].every(Boolean);
  if (name === undefined || port === undefined || !cluster || !optionalOk) return undefined;
  return {
    name,
    udp: {
      port,
      cluster,
      ...(idleTimeout !== undefined ? { idle_timeout_ms: idleTimeout } : {}),
      ...(perPacket !== undefined ? { per_packet_load_balancing: perPacket } : {}),
      ...(accessLog ? { access_log: accessLog } : {}),
    },
  };
}

/** Set to something: absent and null are the same (YAML writes an empty field as null). */
function present(obj: Json, key: string): boolean {
  return obj[key] !== undefined && obj[key] !== null;
}

function parseAccessLog(r: FieldReader, value: unknown, path: string): AccessLogSpec | undefined {
  const a = r.object(value, path);
  if (!a) return undefined;
  r.onlyKeys(a, ['destination', 'flush_interval_ms'], path);
  const destination = r.oneOf(a, 'destination', path, ACCESS_LOG_DESTINATIONS, true);
  const flushInterval = r.integer(a, 'flush_interval_ms', path);
  if (!destination || (present(a, 'flush_interval_ms') && flushInterval === undefined)) return undefined;
  return { destination, ...(flushInterval !== undefined ? { flush_interval_ms: flushInterval } : {}) };
}

function parseCluster(r: FieldReader, value: unknown, path: string): ClusterSpec | undefined {
  const c = r.object(value, path);
  if (!c) return undefined;
  r.onlyKeys(c, ['name', 'service_discovery', 'health_check', 'hash_key', 'hash_source_ip', 'max_sessions', 'endpoints'], path);
  const name = r.string(c, 'name', path, true);
  const serviceDiscovery = r.oneOf(c, 'service_discovery', path, SERVICE_DISCOVERY, true);
  const hashKey = r.string(c, 'hash_key', path);
  const hashSourceIp = r.boolean(c, 'hash_source_ip', path);
  const maxSessions = r.integer(c, 'max_sessions', path);
  const optionalOk = (!present(c, 'hash_source_ip') || hashSourceIp !== undefined) && (!present(c, 'max_sessions') || maxSessions !== undefined);
  let healthCheck: HealthCheckSpec | undefined;
  let healthCheckOk = true;
  if (c['health_check'] !== undefined && c['health_check'] !== null) {
    healthCheck = parseHealthCheck(r, c['health_check'], `${path}.health_check`);
    healthCheckOk = healthCheck !== undefined;
  }
  const rawEndpoints = r.list(c, 'endpoints', path, true) ?? [];
  const endpoints = rawEndpoints.map((e, i) => parseEndpoint(r, e, `${path}.endpoints[${i}]`));
  if (name === undefined || !serviceDiscovery || !healthCheckOk || !optionalOk || !endpoints.every((e): e is EndpointSpec => e !== undefined)) {
    return undefined;
  }
  return {
    name,
    service_discovery: serviceDiscovery,
    ...(healthCheck ? { health_check: healthCheck } : {}),
    ...(hashKey !== undefined ? { hash_key: hashKey } : {}),
    ...(hashSourceIp !== undefined ? { hash_source_ip: hashSourceIp } : {}),
    ...(maxSessions !== undefined ? { max_sessions: maxSessions } : {}),
    endpoints,
  };
}

function parseHealthCheck(r: FieldReader, value: unknown, path: string): HealthCheckSpec | undefined {
  const h = r.object(value, path);
  if (!h) return undefined;
  r.onlyKeys(h, ['interval', 'protocol'], path);
  const interval = r.integer(h, 'interval', path, true);
  // TCP is the only protocol, and the CRD defaults it; a file may leave it out too.
  const protocol = r.oneOf(h, 'protocol', path, HEALTH_CHECK_PROTOCOLS, false);
  const protocolOk = h['protocol'] === undefined || h['protocol'] === null || protocol !== undefined;
  if (interval === undefined || !protocolOk) return undefined;
  return { interval, protocol: protocol ?? 'TCP' };
}

function parseEndpoint(r: FieldReader, value: unknown, path: string): EndpointSpec | undefined {
  const e = r.object(value, path);
  if (!e) return undefined;
  r.onlyKeys(e, ['name', 'host', 'port', 'health_check_port', 'weight'], path);
  const name = r.string(e, 'name', path);
  const port = r.integer(e, 'port', path, true);
  const healthCheckPort = r.integer(e, 'health_check_port', path);
  const weight = r.integer(e, 'weight', path);
  const hcPortOk = (!present(e, 'health_check_port') || healthCheckPort !== undefined) && (!present(e, 'weight') || weight !== undefined);
  const hostPath = `${path}.host`;
  const h = r.object(e['host'], hostPath);
  if (!h) return undefined;
  r.onlyKeys(h, ['selector', 'address'], hostPath);
  const selector = r.stringMap(h, 'selector', hostPath);
  const address = r.string(h, 'address', hostPath);
  const hasSelector = h['selector'] !== undefined && h['selector'] !== null;
  const hasAddress = h['address'] !== undefined && h['address'] !== null;
  if (hasSelector === hasAddress) {
    r.add(hostPath, 'exactly one of selector and address must be set');
    return undefined;
  }
  if (port === undefined || !hcPortOk || (hasSelector && !selector) || (hasAddress && address === undefined)) return undefined;
  return {
    ...(name !== undefined ? { name } : {}),
    host: selector ? { selector } : { address: address as string },
    port,
    ...(healthCheckPort !== undefined ? { health_check_port: healthCheckPort } : {}),
    ...(weight !== undefined ? { weight } : {}),
  };
}

/** Status is vsxds's own writing: keep what has the right shape, never reject the object for it. */
function parseStatus(value: unknown): VirtualServiceStatus | undefined {
  if (!isObject(value)) return undefined;
  const out: { -readonly [K in keyof VirtualServiceStatus]: VirtualServiceStatus[K] } = {};
  if (typeof value['observedGeneration'] === 'number') out.observedGeneration = value['observedGeneration'];
  if (Array.isArray(value['conditions'])) out.conditions = value['conditions'].filter(isCondition).map(copyCondition);
  if (typeof value['listeners'] === 'number') out.listeners = value['listeners'];
  const proxies = value['proxies'];
  if (isObject(proxies) && [proxies['matched'], proxies['synced'], proxies['nacked']].every((n) => typeof n === 'number')) {
    out.proxies = {
      matched: proxies['matched'] as number,
      synced: proxies['synced'] as number,
      nacked: proxies['nacked'] as number,
      ...(typeof proxies['summary'] === 'string' ? { summary: proxies['summary'] } : {}),
    };
  }
  if (typeof value['nackMessage'] === 'string') out.nackMessage = value['nackMessage'];
  return out;
}

function isCondition(c: unknown): c is Json {
  return isObject(c) && typeof c['type'] === 'string' && (c['status'] === 'True' || c['status'] === 'False' || c['status'] === 'Unknown');
}

function copyCondition(c: Json): Condition {
  const lastTransitionTime = timestampText(c['lastTransitionTime']);
  return {
    type: c['type'] as string,
    status: c['status'] as Condition['status'],
    reason: typeof c['reason'] === 'string' ? c['reason'] : '',
    message: typeof c['message'] === 'string' ? c['message'] : '',
    ...(typeof c['observedGeneration'] === 'number' ? { observedGeneration: c['observedGeneration'] } : {}),
    ...(lastTransitionTime ? { lastTransitionTime } : {}),
  };
}
