import { describe, expect, it } from 'vitest';
import { parseVirtualService, type Pod, type VirtualService } from '../src/model/index.js';
import { translateAll, translateGroup, type GroupTranslation } from '../src/translate/index.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, nodeGroup, Snapshot, type ResourceInput } from '../src/xds/index.js';

// ---- small builders: a test reads as "this VirtualService, these pods, this proxy" ----

type Obj = Record<string, any>;

function virtualService(name: string, listeners: Obj[], opts: { namespace?: string; selector?: Obj; created?: string } = {}): VirtualService {
  const result = parseVirtualService(
    {
      apiVersion: 'servicemesh.l7mp.io/v1',
      kind: 'VirtualService',
      metadata: { name, namespace: opts.namespace ?? 'media', ...(opts.created ? { creationTimestamp: opts.created } : {}) },
      spec: { selector: opts.selector ?? { app: 'ingress' }, listeners },
    },
    'default',
  );
  if (!result.ok) throw new Error(result.message);
  return result.vs;
}

function listener(name: string, port: number, cluster: Obj): Obj {
  return { name, udp: { port, cluster } };
}

function eds(name: string, endpoints: Obj[], extra: Obj = {}): Obj {
  return { name, service_discovery: 'eds', endpoints, ...extra };
}

function strictdns(name: string, endpoints: Obj[], extra: Obj = {}): Obj {
  return { name, service_discovery: 'strictdns', endpoints, ...extra };
}

const selectorEndpoint = (selector: Obj, port: number, hcPort?: number): Obj => ({ host: { selector }, port, ...(hcPort ? { health_check_port: hcPort } : {}) });
const addressEndpoint = (address: string, port: number, hcPort?: number): Obj => ({ host: { address }, port, ...(hcPort ? { health_check_port: hcPort } : {}) });

function pod(name: string, ip: string | undefined, labels: Obj = { app: 'worker' }, opts: { ready?: boolean; terminating?: boolean; namespace?: string } = {}): Pod {
  return Object.freeze({
    namespace: opts.namespace ?? 'media',
    name,
    labels: Object.freeze({ ...labels }),
    ...(ip ? { ip } : {}),
    ready: opts.ready ?? true,
    terminating: opts.terminating ?? false,
  });
}

const ingress = nodeGroup('media', { app: 'ingress' });

/**
 * Translates and proves the result is a consistent snapshot of valid protos. Clusters keep the
 * user's names here, as with --share-clusters false; `describe('shared clusters')` covers the default.
 */
function translate(group = ingress, vss: readonly VirtualService[] = [], pods: readonly Pod[] = [], shareClusters = false): GroupTranslation {
  const t = translateGroup(group, vss, pods, { shareClusters });
  Snapshot.build(t.snapshot);
  return t;
}

function resource(t: GroupTranslation, typeUrl: string, name: string): Obj {
  const found = t.snapshot[typeUrl]?.find((r) => r.name === name);
  if (!found) throw new Error(`no ${typeUrl} ${name}`);
  return found.resource as Obj;
}

function input(t: GroupTranslation, typeUrl: string, name: string): ResourceInput {
  const found = t.snapshot[typeUrl]?.find((r) => r.name === name);
  if (!found) throw new Error(`no ${typeUrl} ${name}`);
  return found;
}

const names = (t: GroupTranslation, typeUrl: string): string[] => t.snapshot[typeUrl]?.map((r) => r.name) ?? [];
const lbEndpoints = (cla: Obj): Obj[] => cla['endpoints'].flatMap((l: Obj) => l['lb_endpoints']);
const addresses = (cla: Obj): string[] => lbEndpoints(cla).map((e) => `${e.endpoint.address.socket_address.address}:${e.endpoint.address.socket_address.port_value}`);

const filterConfig = (l: Obj): Obj => l['listener_filters'][0].typed_config;

const workers = [pod('w-1', '10.0.0.1'), pod('w-2', '10.0.0.2')];

function pipeline(extra: Obj = {}): VirtualService {
  return virtualService('ingress', [
    listener('rtp', 2000, eds('worker-rtp', [selectorEndpoint({ app: 'worker' }, 2001, 1233)], { hash_key: 'callid', health_check: { interval: 1000, protocol: 'TCP' }, ...extra })),
    listener('rtcp', 2002, eds('worker-rtcp', [selectorEndpoint({ app: 'worker' }, 2003, 1233)], { hash_key: 'callid', health_check: { interval: 1000, protocol: 'TCP' }, ...extra })),
  ]);
}

// ---- domain rules ----

describe('listeners', () => {
  it('listens on UDP 0.0.0.0:<port> with udp_proxy routing to the cluster through the matcher', () => {
    const t = translate(ingress, [pipeline()], workers);
    const l = resource(t, LISTENER_TYPE, 'rtp');
    expect(l['address']).toEqual({ socket_address: { protocol: 'UDP', address: '0.0.0.0', port_value: 2000 } });
    expect(l['listener_filters']).toHaveLength(1);
    const filter = l['listener_filters'][0];
    expect(filter.name).toBe('envoy.filters.udp_listener.udp_proxy');
    expect(filter.typed_config).toMatchObject({
      '@type': 'type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig',
      stat_prefix: 'rtp',
      matcher: { on_no_match: { action: { name: 'route', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route', cluster: 'worker-rtp' } } } },
    });
    expect(filter.typed_config).not.toHaveProperty('cluster');
    expect(input(t, LISTENER_TYPE, 'rtp').references).toEqual([{ typeUrl: CLUSTER_TYPE, name: 'worker-rtp' }]);
  });

  it('has one constant-key hash policy when the cluster has hash_key, and none otherwise', () => {
    const t = translate(ingress, [
      virtualService('vs', [listener('hashed', 2000, eds('a', [addressEndpoint('10.0.0.1', 1)], { hash_key: 'callid' })), listener('plain', 2001, eds('b', [addressEndpoint('10.0.0.1', 1)]))]),
    ]);
    expect(resource(t, LISTENER_TYPE, 'hashed')['listener_filters'][0].typed_config.hash_policies).toEqual([{ key: 'callid' }]);
    expect(resource(t, LISTENER_TYPE, 'plain')['listener_filters'][0].typed_config).not.toHaveProperty('hash_policies');
  });
});

describe('clusters', () => {
  it('balance with Maglev and a panic threshold of 0', () => {
    const c = resource(translate(ingress, [pipeline()], workers), CLUSTER_TYPE, 'worker-rtp');
    expect(c['lb_policy']).toBe('MAGLEV');
    expect(c['common_lb_config']).toEqual({ healthy_panic_threshold: { value: 0 } });
    expect(c['connect_timeout']).toEqual({ seconds: 1 });
  });

  it('health check over TCP (not HTTP) at the configured interval, with one check deciding', () => {
    const t = translate(ingress, [
      virtualService('vs', [
        listener('a', 2000, eds('slow', [addressEndpoint('10.0.0.1', 1)], { health_check: { interval: 2500, protocol: 'TCP' } })),
        listener('b', 2001, eds('fast', [addressEndpoint('10.0.0.1', 1)], { health_check: { interval: 200, protocol: 'TCP' } })),
      ]),
    ]);
    const [slow] = resource(t, CLUSTER_TYPE, 'slow')['health_checks'];
    expect(slow).toEqual({
      interval: { seconds: 2, nanos: 500_000_000 },
      no_traffic_interval: { seconds: 2, nanos: 500_000_000 },
      timeout: { seconds: 1 },
      unhealthy_threshold: { value: 1 },
      healthy_threshold: { value: 1 },
      tcp_health_check: {},
    });
    expect(slow).not.toHaveProperty('http_health_check');
    const [fast] = resource(t, CLUSTER_TYPE, 'fast')['health_checks'];
    expect(fast).toMatchObject({ interval: { nanos: 200_000_000 }, timeout: { nanos: 200_000_000 } });
  });

  it('have no health checks when none is configured', () => {
    const t = translate(ingress, [virtualService('vs', [listener('a', 2000, eds('c', [addressEndpoint('10.0.0.1', 1)]))])]);
    expect(resource(t, CLUSTER_TYPE, 'c')).not.toHaveProperty('health_checks');
    expect(lbEndpoints(resource(t, ENDPOINT_TYPE, 'c'))[0]?.endpoint).not.toHaveProperty('health_check_config');
  });

  it('are STRICT_DNS with inline endpoints for strictdns, and EDS over ADS with a ClusterLoadAssignment for eds', () => {
    const t = translate(ingress, [
      virtualService('vs', [
        listener('dns', 2000, strictdns('app', [addressEndpoint('app.media.svc.cluster.local', 1234), addressEndpoint('127.0.0.1', 1235)])),
        listener('pods', 2001, eds('workers', [selectorEndpoint({ app: 'worker' }, 2001)])),
      ]),
    ], workers);
    const dns = resource(t, CLUSTER_TYPE, 'app');
    expect(dns['type']).toBe('STRICT_DNS');
    expect(dns).not.toHaveProperty('eds_cluster_config');
    expect(dns['load_assignment'].cluster_name).toBe('app');
    expect(addresses(dns['load_assignment'])).toEqual(['127.0.0.1:1235', 'app.media.svc.cluster.local:1234']);
    const e = resource(t, CLUSTER_TYPE, 'workers');
    expect(e['type']).toBe('EDS');
    expect(e['eds_cluster_config']).toEqual({ eds_config: { ads: {}, resource_api_version: 'V3' } });
    expect(e).not.toHaveProperty('load_assignment');
    expect(names(t, ENDPOINT_TYPE)).toEqual(['workers']);
  });

  it('are sent once when two listeners share one', () => {
    const shared = eds('workers', [selectorEndpoint({ app: 'worker' }, 2001)]);
    const t = translate(ingress, [virtualService('vs', [listener('a', 2000, shared), listener('b', 2001, shared)])], workers);
    expect(names(t, CLUSTER_TYPE)).toEqual(['workers']);
    expect(names(t, ENDPOINT_TYPE)).toEqual(['workers']);
  });
});

describe('endpoints', () => {
  it('are health checked on their health_check_port, defaulting to the traffic port', () => {
    const t = translate(ingress, [
      virtualService('vs', [listener('a', 2000, eds('c', [addressEndpoint('10.0.0.1', 2001, 1233), addressEndpoint('10.0.0.2', 2001)], { health_check: { interval: 1000, protocol: 'TCP' } }))]),
    ]);
    expect(lbEndpoints(resource(t, ENDPOINT_TYPE, 'c')).map((e) => e.endpoint.health_check_config)).toEqual([{ port_value: 1233 }, { port_value: 2001 }]);
  });

  it('carry envoy.lb hash_key = their address, the same in every cluster whatever the port', () => {
    const t = translate(ingress, [pipeline()], workers);
    const keysOf = (cluster: string) =>
      lbEndpoints(resource(t, ENDPOINT_TYPE, cluster)).map((e) => e.metadata.filter_metadata['envoy.lb'].fields.hash_key.stringValue);
    expect(keysOf('worker-rtp')).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(keysOf('worker-rtcp')).toEqual(keysOf('worker-rtp'));
    expect(addresses(resource(t, ENDPOINT_TYPE, 'worker-rtcp'))).toEqual(['10.0.0.1:2003', '10.0.0.2:2003']);
  });

  it('come from ready pods with an IP in the VirtualService namespace only', () => {
    const pods = [
      pod('ready', '10.0.0.1'),
      pod('not-ready', '10.0.0.2', { app: 'worker' }, { ready: false }),
      pod('no-ip', undefined),
      pod('elsewhere', '10.0.0.4', { app: 'worker' }, { namespace: 'other' }),
    ];
    const t = translate(ingress, [pipeline()], pods);
    expect(addresses(resource(t, ENDPOINT_TYPE, 'worker-rtp'))).toEqual(['10.0.0.1:2001']);
  });

  it('keep terminating pods as DEGRADED, ready or not, until they are gone, with healthy hosts taking every new session', () => {
    const pods = [pod('w-1', '10.0.0.1'), pod('leaving', '10.0.0.2', { app: 'worker' }, { terminating: true }), pod('leaving-unready', '10.0.0.3', { app: 'worker' }, { ready: false, terminating: true })];
    const cla = resource(translate(ingress, [pipeline()], pods), ENDPOINT_TYPE, 'worker-rtp');
    expect(lbEndpoints(cla).map((e) => [e.endpoint.address.socket_address.address, e.health_status])).toEqual([
      ['10.0.0.1', undefined],
      ['10.0.0.2', 'DEGRADED'],
      ['10.0.0.3', 'DEGRADED'],
    ]);
    // Envoy's udp_proxy moves a session off a DRAINING host (it counts as unhealthy); a degraded
    // one keeps its sessions, and gets new ones only when no healthy host is left.
    expect((cla as any).policy).toEqual({ overprovisioning_factor: { value: 100_000 } });
    const serving = resource(translate(ingress, [pipeline()], [pod('w-1', '10.0.0.1')]), ENDPOINT_TYPE, 'worker-rtp');
    expect((serving as any).policy).toBeUndefined();
  });

  it('select pods that carry ALL of the selector labels (not any, the old operator bug)', () => {
    const vs = virtualService('vs', [listener('a', 2000, eds('c', [selectorEndpoint({ app: 'worker', tier: 'media' }, 1)]))]);
    const pods = [pod('both', '10.0.0.1', { app: 'worker', tier: 'media', extra: 'x' }), pod('app-only', '10.0.0.2', { app: 'worker' }), pod('tier-only', '10.0.0.3', { tier: 'media' })];
    expect(addresses(resource(translate(ingress, [vs], pods), ENDPOINT_TYPE, 'c'))).toEqual(['10.0.0.1:1']);
  });

  it('are one locality group, sorted by address then port, without duplicates', () => {
    const vs = virtualService('vs', [
      listener('a', 2000, eds('c', [addressEndpoint('10.0.0.2', 5), selectorEndpoint({ app: 'worker' }, 5), addressEndpoint('10.0.0.1', 7), addressEndpoint('10.0.0.1', 5)])),
    ]);
    const cla = resource(translate(ingress, [vs], [pod('w-2', '10.0.0.2'), pod('w-1', '10.0.0.1')]), ENDPOINT_TYPE, 'c');
    expect(cla['endpoints']).toHaveLength(1);
    expect(cla['endpoints'][0].locality).toEqual({});
    expect(addresses(cla)).toEqual(['10.0.0.1:5', '10.0.0.1:7', '10.0.0.2:5']);
  });

  it('give an empty assignment, not a missing one, when no pod matches', () => {
    const t = translate(ingress, [pipeline()], []);
    expect(resource(t, ENDPOINT_TYPE, 'worker-rtp')).toEqual({ cluster_name: 'worker-rtp', endpoints: [] });
  });
});

describe('which VirtualServices apply', () => {
  it('only to proxies in their own namespace', () => {
    const t = translate(nodeGroup('other', { app: 'ingress' }), [pipeline()], workers);
    expect(names(t, LISTENER_TYPE)).toEqual([]);
    expect(t.contributions.size).toBe(0);
  });

  it('only to proxies carrying all of the selector labels; an empty selector matches every proxy', () => {
    const picky = virtualService('picky', [listener('a', 2000, eds('c1', [addressEndpoint('10.0.0.1', 1)]))], { selector: { app: 'ingress', zone: 'a' } });
    const everyone = virtualService('everyone', [listener('b', 2001, eds('c2', [addressEndpoint('10.0.0.1', 1)]))], { selector: {} });
    expect(names(translate(nodeGroup('media', { app: 'ingress' }), [picky, everyone]), LISTENER_TYPE)).toEqual(['b']);
    expect(names(translate(nodeGroup('media', { app: 'ingress', zone: 'a', pod: 'x' }), [picky, everyone]), LISTENER_TYPE)).toEqual(['a', 'b']);
  });

  it('always gives all three resource types, empty for a proxy nothing selects', () => {
    expect(translate(nodeGroup('media', { app: 'nothing' }), [pipeline()], workers).snapshot).toEqual({ [LISTENER_TYPE]: [], [CLUSTER_TYPE]: [], [ENDPOINT_TYPE]: [] });
  });
});

describe('conflicts', () => {
  it('drop the younger VirtualService\'s clashing listener and say so in its contribution', () => {
    const older = virtualService('older', [listener('rtp', 2000, eds('a', [addressEndpoint('10.0.0.1', 1)]))], { created: '2024-01-01T00:00:00Z' });
    const younger = virtualService('younger', [listener('rtp2', 2000, eds('b', [addressEndpoint('10.0.0.1', 1)])), listener('ok', 2001, eds('c', [addressEndpoint('10.0.0.1', 1)]))], {
      created: '2024-02-01T00:00:00Z',
    });
    const t = translate(ingress, [younger, older]);
    expect(names(t, LISTENER_TYPE)).toEqual(['ok', 'rtp']);
    expect(names(t, CLUSTER_TYPE)).toEqual(['a', 'c']);
    expect(t.contributions.get('media/older')).toEqual({ listeners: ['rtp'], clusters: new Map([['a', 'a']]), conflicts: [] });
    expect(t.contributions.get('media/younger')).toEqual({
      listeners: ['ok'],
      clusters: new Map([['c', 'c']]),
      conflicts: [expect.objectContaining({ listener: 'rtp2', kind: 'Port', winner: 'media/older' })],
    });
  });

  it('share a cluster two VirtualServices define identically', () => {
    const cluster = eds('workers', [selectorEndpoint({ app: 'worker' }, 2001)]);
    const t = translate(ingress, [virtualService('a', [listener('a', 2000, cluster)]), virtualService('b', [listener('b', 2001, cluster)])], workers);
    expect(names(t, CLUSTER_TYPE)).toEqual(['workers']);
    expect([...t.contributions.values()].flatMap((c) => c.conflicts)).toEqual([]);
  });
});

describe('caching and determinism', () => {
  it('on pod churn, returns the very same listener and cluster objects and changes only the affected assignments', () => {
    const rtcpOnly = virtualService('other', [listener('other', 3000, eds('others', [selectorEndpoint({ app: 'other' }, 1)]))]);
    const vss = [pipeline(), rtcpOnly];
    const before = translate(ingress, vss, [...workers, pod('o-1', '10.0.1.1', { app: 'other' })]);
    const after = translate(ingress, vss, [...workers, pod('w-3', '10.0.0.3'), pod('o-1', '10.0.1.1', { app: 'other' })]);
    for (const typeUrl of [LISTENER_TYPE, CLUSTER_TYPE]) {
      after.snapshot[typeUrl]!.forEach((r, i) => expect(r.resource).toBe(before.snapshot[typeUrl]![i]!.resource));
    }
    expect(resource(after, ENDPOINT_TYPE, 'worker-rtp')).not.toBe(resource(before, ENDPOINT_TYPE, 'worker-rtp'));
    expect(addresses(resource(after, ENDPOINT_TYPE, 'worker-rtp'))).toContain('10.0.0.3:2001');
    expect(resource(after, ENDPOINT_TYPE, 'others')).toBe(resource(before, ENDPOINT_TYPE, 'others'));
  });

  it('returns the same objects for an equal VirtualService read again (a status write makes a new object)', () => {
    const before = translate(ingress, [pipeline()], workers);
    const after = translate(ingress, [pipeline()], [...workers]);
    for (const typeUrl of [LISTENER_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE]) {
      after.snapshot[typeUrl]!.forEach((r, i) => expect(r.resource).toBe(before.snapshot[typeUrl]![i]!.resource));
    }
  });

  it('keeps the listener object when only its cluster\'s endpoints change', () => {
    const before = translate(ingress, [pipeline()], workers);
    const after = translate(ingress, [pipeline({ endpoints: [selectorEndpoint({ app: 'worker' }, 2001, 1234)] })], workers);
    expect(resource(after, LISTENER_TYPE, 'rtp')).toBe(resource(before, LISTENER_TYPE, 'rtp'));
    expect(resource(after, CLUSTER_TYPE, 'worker-rtp')).toBe(resource(before, CLUSTER_TYPE, 'worker-rtp'));
  });

  it('gives equal output, and equal versions, for shuffled input', () => {
    const vss = [
      pipeline(),
      virtualService('b', [listener('dns', 3000, strictdns('app', [addressEndpoint('b.example.com', 1), addressEndpoint('a.example.com', 1)]))], { created: '2024-01-01T00:00:00Z' }),
      virtualService('c', [listener('dns2', 3000, strictdns('app2', [addressEndpoint('c.example.com', 1)]))], { created: '2024-01-01T00:00:00Z' }),
    ];
    const pods = [...workers, pod('w-3', '10.0.0.3', { app: 'worker' }, { terminating: true }), pod('w-0', '10.0.0.10')];
    const one = translateGroup(ingress, vss, pods);
    const two = translateGroup(ingress, [...vss].reverse(), [...pods].reverse());
    expect(two.snapshot).toEqual(one.snapshot);
    expect([...two.contributions]).toEqual([...one.contributions]);
    expect(Snapshot.build(two.snapshot).versions()).toEqual(Snapshot.build(one.snapshot).versions());
  });

  it('never mutates its input', () => {
    const vss = Object.freeze([pipeline()]);
    const pods = Object.freeze([...workers]);
    const before = JSON.stringify([vss, pods]);
    translateGroup(ingress, vss, pods);
    expect(JSON.stringify([vss, pods])).toBe(before);
  });
});

describe('shared clusters (the default)', () => {
  const hc = { health_check: { interval: 500, protocol: 'TCP' } };
  /** One VirtualService per call, as media controllers create them: own port, own cluster name, the call id as hash key. */
  const call = (id: string, port: number, extra: Obj = hc, created?: string) =>
    virtualService(id, [listener(`${id}-l`, port, eds(`${id}-c`, [selectorEndpoint({ app: 'worker' }, 2001, 1233)], { hash_key: id, ...extra }))], { created });
  const shared = (vss: VirtualService[], pods: readonly Pod[] = workers) => translate(ingress, vss, pods, true);
  const route = (t: GroupTranslation, name: string) => filterConfig(resource(t, LISTENER_TYPE, name));

  it('give calls whose clusters have the same endpoints and health check one Envoy cluster, named by that content', () => {
    const t = shared([call('call-1', 20000), call('call-2', 20001), call('call-3', 20002)]);
    expect(names(t, LISTENER_TYPE)).toEqual(['call-1-l', 'call-2-l', 'call-3-l']);
    const [name] = names(t, CLUSTER_TYPE);
    expect(names(t, CLUSTER_TYPE)).toEqual([name]);
    expect(name).toMatch(/^vsxds-eds-2001-[0-9a-f]{12}$/);
    expect(names(t, ENDPOINT_TYPE)).toEqual([name]);
    expect(resource(t, ENDPOINT_TYPE, name!).cluster_name).toBe(name);
    expect(addresses(resource(t, ENDPOINT_TYPE, name!))).toEqual(['10.0.0.1:2001', '10.0.0.2:2001']);
    for (const id of ['call-1', 'call-2', 'call-3']) {
      // Each listener routes to the shared cluster and keeps its own call's hash key.
      expect(route(t, `${id}-l`).matcher.on_no_match.action.typed_config.cluster).toBe(name);
      expect(route(t, `${id}-l`).hash_policies).toEqual([{ key: id }]);
      expect(t.contributions.get(`media/${id}`)?.clusters).toEqual(new Map([[`${id}-c`, name]]));
    }
  });

  it('name the shared cluster by content alone: the same whichever call came first or is still there', () => {
    const first = shared([call('call-1', 20000, hc, '2024-01-01T00:00:00Z'), call('call-2', 20001, hc, '2024-01-02T00:00:00Z')]);
    const afterFirstEnded = shared([call('call-2', 20001, hc, '2024-01-02T00:00:00Z'), call('call-3', 20002, hc, '2024-01-03T00:00:00Z')]);
    expect(names(afterFirstEnded, CLUSTER_TYPE)).toEqual(names(first, CLUSTER_TYPE));
    // So the listener of a call that outlives others is the very same resource.
    expect(resource(afterFirstEnded, LISTENER_TYPE, 'call-2-l')).toBe(resource(first, LISTENER_TYPE, 'call-2-l'));
  });

  it('keep clusters apart that differ in health check, endpoints or discovery', () => {
    const t = shared([
      call('a', 20000),
      call('b', 20001, { health_check: { interval: 1000, protocol: 'TCP' } }),
      call('c', 20002, {}),
      virtualService('d', [listener('d-l', 20003, eds('d-c', [selectorEndpoint({ app: 'worker' }, 2003, 1233)]))]),
      virtualService('e', [listener('e-l', 20004, strictdns('e-c', [addressEndpoint('10.0.0.1', 2001, 1233)], hc))]),
    ]);
    expect(names(t, CLUSTER_TYPE)).toHaveLength(5);
    expect(names(t, CLUSTER_TYPE).filter((n) => n.startsWith('vsxds-dns-'))).toHaveLength(1);
    expect(names(t, ENDPOINT_TYPE)).toHaveLength(4);
  });

  it('let every shared cluster carry far more than Envoy\'s default of 1,024 concurrent UDP sessions', () => {
    const t = shared([call('call-1', 20000)]);
    const [name] = names(t, CLUSTER_TYPE);
    expect(resource(t, CLUSTER_TYPE, name!).circuit_breakers.thresholds[0].max_connections.value).toBeGreaterThanOrEqual(1_000_000);
  });

  it('keep the session limit and the weights as cluster content: a different limit or weight is another Envoy cluster', () => {
    const limited = (id: string, port: number, max: number) => call(id, port, { ...hc, max_sessions: max });
    const plain = shared([call('a', 20000)]);
    const t = shared([call('a', 20000), limited('b', 20001, 5_000), limited('c', 20002, 5_000), limited('d', 20003, 6_000)]);
    const clusterOf = (id: string) => route(t, `${id}-l`).matcher.on_no_match.action.typed_config.cluster as string;
    // Without max_sessions the name is what it was before the field existed.
    expect(clusterOf('a')).toBe(names(plain, CLUSTER_TYPE)[0]);
    expect(clusterOf('b')).toBe(clusterOf('c'));
    expect(new Set(['a', 'b', 'd'].map(clusterOf)).size).toBe(3);
    const limitOf = (id: string) => resource(t, CLUSTER_TYPE, clusterOf(id)).circuit_breakers.thresholds[0].max_connections.value;
    expect(['a', 'b', 'd'].map(limitOf)).toEqual([1_000_000, 5_000, 6_000]);
    expect(t.contributions.get('media/b')?.sessionLimits).toEqual(new Map([['b-c', 5_000]]));
    expect(t.contributions.get('media/a')?.sessionLimits).toBeUndefined();

    const weighted = (id: string, port: number, weight: number) =>
      virtualService(id, [listener(`${id}-l`, port, eds(`${id}-c`, [{ ...selectorEndpoint({ app: 'worker' }, 2001, 1233), weight }], { hash_key: id, ...hc }))]);
    const w = shared([call('a', 20000), weighted('e', 20004, 2), weighted('f', 20005, 3)]);
    expect(names(w, CLUSTER_TYPE)).toHaveLength(3);
    const weightsOf = (id: string) => {
      const cluster = filterConfig(resource(w, LISTENER_TYPE, `${id}-l`)).matcher.on_no_match.action.typed_config.cluster as string;
      return resource(w, ENDPOINT_TYPE, cluster).endpoints[0].lb_endpoints.map((e: Obj) => e.load_balancing_weight?.value);
    };
    expect(weightsOf('a')).toEqual([undefined, undefined]);
    expect(weightsOf('e')).toEqual([2, 2]);
    expect(weightsOf('f')).toEqual([3, 3]);
  });

  it('write the session options into the listener, and a listener without them as before', () => {
    const before = route(shared([call('a', 20000)]), 'a-l');
    const t = shared([
      call('a', 20000),
      virtualService('b', [
        {
          name: 'b-l',
          udp: {
            port: 20001,
            idle_timeout_ms: 1_500,
            per_packet_load_balancing: true,
            access_log: { destination: 'stderr', flush_interval_ms: 2_000 },
            cluster: eds('b-c', [selectorEndpoint({ app: 'worker' }, 2001, 1233)], { hash_source_ip: true, ...hc }),
          },
        },
      ]),
    ]);
    expect(route(t, 'a-l')).toEqual(before);
    expect(Object.keys(before).sort()).toEqual(['@type', 'hash_policies', 'matcher', 'stat_prefix']);
    const b = route(t, 'b-l');
    expect(b).toMatchObject({
      hash_policies: [{ source_ip: true }],
      idle_timeout: { seconds: 1, nanos: 500_000_000 },
      use_per_packet_load_balancing: true,
      access_log_options: { access_log_flush_interval: { seconds: 2 } },
    });
    expect(b.access_log).toHaveLength(1);
    expect(b.access_log[0].name).toBe('envoy.access_loggers.stderr');
    expect(b.access_log[0].typed_config['@type']).toBe('type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog');
    // No path anywhere: the stream loggers take none.
    expect(JSON.stringify(b.access_log)).not.toMatch(/"path"/);
    // Source-IP hashing shares the cluster of a constant key: the hash policy is the listener's.
    expect(b.matcher.on_no_match.action.typed_config.cluster).toBe(before.matcher.on_no_match.action.typed_config.cluster);
  });

  it('are the same for RTP and RTCP of a call on different ports only when their endpoints are', () => {
    const rtpRtcp = virtualService('call', [
      listener('rtp', 20000, eds('rtp-c', [selectorEndpoint({ app: 'worker' }, 2001, 1233)], { hash_key: 'call', ...hc })),
      listener('rtcp', 20001, eds('rtcp-c', [selectorEndpoint({ app: 'worker' }, 2003, 1233)], { hash_key: 'call', ...hc })),
    ]);
    const t = shared([rtpRtcp]);
    expect(names(t, CLUSTER_TYPE)).toHaveLength(2);
    // Maglev picks by the endpoints' address-only hash keys, so both land on the same worker.
    const hashKeys = names(t, ENDPOINT_TYPE).map((n) => resource(t, ENDPOINT_TYPE, n).endpoints[0].lb_endpoints.map((e: Obj) => e.metadata.filter_metadata['envoy.lb'].fields.hash_key.stringValue));
    expect(hashKeys[0]).toEqual(hashKeys[1]);
  });
});

describe('translateAll', () => {
  it('translates every group, by group key', () => {
    const worker = nodeGroup('media', { app: 'worker' });
    const sidecar = virtualService('worker', [listener('worker-rtp', 2001, strictdns('app', [addressEndpoint('127.0.0.1', 1234)]))], { selector: { app: 'worker' } });
    const all = translateAll([worker, ingress], [pipeline(), sidecar], workers);
    expect([...all.keys()]).toEqual([ingress.key, worker.key]);
    expect(names(all.get(worker.key)!, LISTENER_TYPE)).toEqual(['worker-rtp']);
    expect(names(all.get(ingress.key)!, LISTENER_TYPE)).toEqual(['rtcp', 'rtp']);
  });
});
