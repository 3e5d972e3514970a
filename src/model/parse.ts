import { FieldReader, isObject, type Json } from './fields.js';
import { specStructureProblems, withoutNulls } from './schema.js';
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

/**
 * Reads a VirtualService as the apiserver or a YAML file gives it into the model's shape,
 * checking structure and types against the CRD's schema (not values: that is validate.ts). The result is deeply frozen,
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

/**
 * The spec: its structure checked against the CRD's own schema (src/model/schema.ts), then read
 * into typed values, which the check made safe to take as they are.
 */
function parseSpec(r: FieldReader, value: unknown): VirtualServiceSpec | undefined {
  if (value === undefined || value === null) {
    r.add('spec', 'is required');
    return undefined;
  }
  const spec = withoutNulls(value);
  const problems = specStructureProblems(spec);
  for (const p of problems) r.add(p.path, p.message);
  if (problems.length > 0) return undefined;
  const s = spec as Json;
  const listeners = (s['listeners'] as Json[]).map((l, i) => listener(r, l, `spec.listeners[${i}]`));
  if (!listeners.every((l): l is ListenerSpec => l !== undefined)) return undefined;
  return { selector: stringMap(s['selector']), listeners };
}

/** Set (the spec read here has no nulls: see withoutNulls). */
function present(obj: Json, key: string): boolean {
  return obj[key] !== undefined;
}

function stringMap(v: unknown): Record<string, string> {
  return isObject(v) ? ({ ...v } as Record<string, string>) : {};
}

function listener(r: FieldReader, l: Json, path: string): ListenerSpec | undefined {
  const udp = l['udp'] as Json;
  const cluster = clusterOf(r, udp['cluster'] as Json, `${path}.udp.cluster`);
  if (!cluster) return undefined;
  const log = present(udp, 'access_log') ? (udp['access_log'] as Json) : undefined;
  return {
    name: l['name'] as string,
    udp: {
      port: udp['port'] as number,
      cluster,
      ...(present(udp, 'idle_timeout_ms') ? { idle_timeout_ms: udp['idle_timeout_ms'] as number } : {}),
      ...(present(udp, 'per_packet_load_balancing') ? { per_packet_load_balancing: udp['per_packet_load_balancing'] as boolean } : {}),
      ...(log
        ? { access_log: { destination: log['destination'] as AccessLogSpec['destination'], ...(present(log, 'flush_interval_ms') ? { flush_interval_ms: log['flush_interval_ms'] as number } : {}) } }
        : {}),
    },
  };
}

function clusterOf(r: FieldReader, c: Json, path: string): ClusterSpec | undefined {
  const endpoints = (c['endpoints'] as Json[]).map((e, i) => endpoint(r, e, `${path}.endpoints[${i}]`));
  if (!endpoints.every((e): e is EndpointSpec => e !== undefined)) return undefined;
  const hc = present(c, 'health_check') ? (c['health_check'] as Json) : undefined;
  // TCP is the only protocol, and the CRD defaults it; a file may leave it out.
  const healthCheck: HealthCheckSpec | undefined = hc ? { interval: hc['interval'] as number, protocol: (present(hc, 'protocol') ? hc['protocol'] : 'TCP') as HealthCheckSpec['protocol'] } : undefined;
  return {
    name: c['name'] as string,
    service_discovery: c['service_discovery'] as ClusterSpec['service_discovery'],
    ...(healthCheck ? { health_check: healthCheck } : {}),
    ...(present(c, 'hash_key') ? { hash_key: c['hash_key'] as string } : {}),
    ...(present(c, 'hash_source_ip') ? { hash_source_ip: c['hash_source_ip'] as boolean } : {}),
    ...(present(c, 'max_sessions') ? { max_sessions: c['max_sessions'] as number } : {}),
    endpoints,
  };
}

function endpoint(r: FieldReader, e: Json, path: string): EndpointSpec | undefined {
  const h = e['host'] as Json;
  const hasSelector = present(h, 'selector');
  if (hasSelector === present(h, 'address')) {
    r.add(`${path}.host`, 'exactly one of selector and address must be set');
    return undefined;
  }
  return {
    ...(present(e, 'name') ? { name: e['name'] as string } : {}),
    host: hasSelector ? { selector: stringMap(h['selector']) } : { address: h['address'] as string },
    port: e['port'] as number,
    ...(present(e, 'health_check_port') ? { health_check_port: e['health_check_port'] as number } : {}),
    ...(present(e, 'weight') ? { weight: e['weight'] as number } : {}),
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
