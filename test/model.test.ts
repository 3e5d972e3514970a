import { describe, expect, it } from 'vitest';
import {
  acceptedCondition,
  deepEqual,
  fromDocuments,
  parsePod,
  parseVirtualService,
  resolveConflicts,
  validateVirtualService,
  vsKey,
  type VirtualService,
} from '../src/model/index.js';

/** A raw VirtualService as a YAML file or the apiserver gives it, with the parts a test cares about. */
function raw(opts: { name?: string; namespace?: string; created?: string; selector?: object; listeners?: unknown[] } = {}): Record<string, unknown> {
  return {
    apiVersion: 'servicemesh.l7mp.io/v1',
    kind: 'VirtualService',
    metadata: {
      name: opts.name ?? 'media',
      ...(opts.namespace ? { namespace: opts.namespace } : {}),
      ...(opts.created ? { creationTimestamp: opts.created } : {}),
    },
    spec: { selector: opts.selector ?? { app: 'ingress' }, listeners: opts.listeners ?? [listener('rtp', 2000)] },
  };
}

function listener(name: string, port: number, cluster: Record<string, unknown> = edsCluster(`${name}-workers`)): Record<string, unknown> {
  return { name, udp: { port, cluster } };
}

function edsCluster(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, service_discovery: 'eds', endpoints: [{ host: { selector: { app: 'worker' } }, port: 2001 }], ...extra };
}

function parsed(obj: unknown, defaultNamespace = 'default'): VirtualService {
  const result = parseVirtualService(obj, defaultNamespace);
  if (!result.ok) throw new Error(`does not parse: ${result.message}`);
  return result.vs;
}

function rejection(obj: Record<string, unknown>): { reason: string; message: string } {
  const p = parseVirtualService(obj, 'default');
  if (!p.ok) return { reason: p.reason, message: p.message };
  const v = validateVirtualService(p.vs);
  if (v.accepted) throw new Error('accepted');
  return { reason: v.reason, message: v.message };
}

describe('parseVirtualService', () => {
  it('reads a VirtualService from a file, defaulting the namespace', () => {
    const vs = parsed(raw(), 'media');
    expect(vsKey(vs)).toBe('media/media');
    expect(vs.spec.listeners[0]?.udp.cluster.endpoints[0]?.host).toEqual({ selector: { app: 'worker' } });
    expect(Object.isFrozen(vs.spec.listeners[0]?.udp.cluster)).toBe(true);
  });

  it('keeps the namespace and metadata the apiserver gives', () => {
    const obj = raw({ namespace: 'prod', created: '2024-05-01T10:00:00Z' });
    (obj['metadata'] as Record<string, unknown>)['generation'] = 3;
    (obj['metadata'] as Record<string, unknown>)['uid'] = 'abc';
    const vs = parsed(obj, 'default');
    expect(vs.metadata).toEqual({ name: 'media', namespace: 'prod', uid: 'abc', generation: 3, creationTimestamp: '2024-05-01T10:00:00Z' });
  });

  it('accepts a creationTimestamp that client-node turned into a Date', () => {
    const obj = raw();
    (obj['metadata'] as Record<string, unknown>)['creationTimestamp'] = new Date('2024-05-01T10:00:00Z');
    expect(parsed(obj).metadata.creationTimestamp).toBe('2024-05-01T10:00:00Z');
  });

  it('defaults health_check.protocol to TCP, as the CRD does', () => {
    const vs = parsed(raw({ listeners: [listener('rtp', 2000, edsCluster('w', { health_check: { interval: 500 } }))] }));
    expect(vs.spec.listeners[0]?.udp.cluster.health_check).toEqual({ interval: 500, protocol: 'TCP' });
  });

  it('defaults an absent selector to empty (which validation rejects)', () => {
    const obj = raw();
    delete (obj['spec'] as Record<string, unknown>)['selector'];
    expect(parsed(obj).spec.selector).toEqual({});
  });

  it.each([
    ['a missing spec', { ...raw(), spec: undefined }, 'InvalidSpec', 'spec: is required'],
    ['a missing listener list', { ...raw(), spec: { selector: {} } }, 'InvalidListener', 'spec.listeners: is required'],
    ['another kind', { ...raw(), kind: 'Gateway' }, 'InvalidObject', 'kind: must be VirtualService'],
    ['a nameless object', { ...raw(), metadata: {} }, 'InvalidObject', 'metadata.name: is required'],
    ['a string port', raw({ listeners: [{ name: 'rtp', udp: { port: '2000', cluster: edsCluster('w') } }] }), 'InvalidListener', 'spec.listeners[0].udp.port: must be an integer'],
    ['a fractional port', raw({ listeners: [{ name: 'rtp', udp: { port: 20.5, cluster: edsCluster('w') } }] }), 'InvalidListener', 'spec.listeners[0].udp.port: must be an integer'],
    ['a missing cluster', raw({ listeners: [{ name: 'rtp', udp: { port: 2000 } }] }), 'InvalidCluster', 'spec.listeners[0].udp.cluster: is required'],
    ['an unknown service discovery', raw({ listeners: [listener('rtp', 2000, edsCluster('w', { service_discovery: 'dns' }))] }), 'InvalidCluster', 'spec.listeners[0].udp.cluster.service_discovery: must be one of strictdns, eds'],
    ['an HTTP health check', raw({ listeners: [listener('rtp', 2000, edsCluster('w', { health_check: { interval: 1000, protocol: 'HTTP' } }))] }), 'InvalidHealthCheck', 'spec.listeners[0].udp.cluster.health_check.protocol: must be one of TCP'],
    ['a health check without interval', raw({ listeners: [listener('rtp', 2000, edsCluster('w', { health_check: { protocol: 'TCP' } }))] }), 'InvalidHealthCheck', 'spec.listeners[0].udp.cluster.health_check.interval: is required'],
    ['a typo in a field name', raw({ listeners: [listener('rtp', 2000, edsCluster('w', { health_chek: { interval: 1 } }))] }), 'InvalidCluster', 'spec.listeners[0].udp.cluster: unknown field "health_chek"'],
    ['a selector with a number', raw({ selector: { tier: 1 } }), 'InvalidSelector', 'spec.selector.tier: must be a string'],
  ])('rejects %s, naming the path', (_what, obj, reason, message) => {
    const result = parseVirtualService(obj, 'default');
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.reason).toBe(reason);
    expect(result.message).toContain(message);
  });

  it('rejects an endpoint host with both or neither of selector and address, naming the endpoint', () => {
    const both = { ...edsCluster('w'), endpoints: [{ host: { address: '10.0.0.1' }, port: 1 }, { host: { address: '10.0.0.1', selector: { a: 'b' } }, port: 1 }] };
    const neither = { ...edsCluster('w'), endpoints: [{ host: {}, port: 1 }] };
    for (const cluster of [both, neither]) {
      const result = parseVirtualService(raw({ listeners: [listener('a', 1000), listener('b', 1001, cluster)] }), 'default');
      expect(result).toMatchObject({ ok: false, key: 'default/media', reason: 'InvalidEndpoint' });
      expect(!result.ok && result.message).toMatch(/^spec\.listeners\[1\]\.udp\.cluster\.endpoints\[\d\]\.host: exactly one of selector and address must be set$/);
    }
  });

  it('says which object failed when it has a name, so its status can carry the reason', () => {
    expect(parseVirtualService({ ...raw({ namespace: 'media' }), spec: 'x' }, 'default')).toMatchObject({ ok: false, key: 'media/media' });
  });

  it('keeps a status with the right shape and never rejects for one', () => {
    const obj = { ...raw(), status: { observedGeneration: 2, conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: '' }, 'junk'], proxies: 'x' } };
    expect(parsed(obj).status).toEqual({ observedGeneration: 2, conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: '' }] });
  });
});

describe('validateVirtualService', () => {
  it('rejects an empty or absent proxy selector, which would select every proxy of the namespace, workers included', () => {
    const absent = raw();
    delete (absent['spec'] as Record<string, unknown>)['selector'];
    for (const obj of [raw({ selector: {} }), absent]) {
      expect(rejection(obj)).toMatchObject({
        reason: 'InvalidSelector',
        message: "spec.selector: must name at least one label of the proxies' pods (an empty selector would select every proxy in the namespace)",
      });
    }
  });

  it('accepts the original operator pipeline', () => {
    const vs = parsed(
      raw({
        listeners: [
          listener('ingress-rtp', 2000, edsCluster('worker-rtp', { hash_key: 'callid', health_check: { interval: 1000, protocol: 'TCP' } })),
          listener('worker-rtp', 2001, { name: 'app', service_discovery: 'strictdns', endpoints: [{ host: { address: 'app.media.svc.cluster.local' }, port: 1234 }] }),
        ],
      }),
    );
    expect(validateVirtualService(vs)).toEqual({ accepted: true });
  });

  it.each([
    ['a port out of range', [listener('rtp', 70000)], 'InvalidListener', 'spec.listeners[0].udp.port: 70000 must be a port number (1-65535)'],
    ['port 0', [listener('rtp', 0)], 'InvalidListener', 'spec.listeners[0].udp.port: 0 must be a port number'],
    ['a listener name Envoy-unsafe', [listener('RTP_1', 2000)], 'InvalidListener', 'spec.listeners[0].name: "RTP_1" must be a DNS-1123 label'],
    ['a too long listener name', [listener('a'.repeat(64), 2000)], 'InvalidListener', 'spec.listeners[0].name'],
    ['a duplicate listener name', [listener('rtp', 2000), listener('rtp', 2001, edsCluster('other'))], 'InvalidListener', 'spec.listeners[1].name: "rtp" is also the name of spec.listeners[0]'],
    ['a duplicate port', [listener('rtp', 2000), listener('rtcp', 2000)], 'InvalidListener', 'spec.listeners[1].udp.port: UDP port 2000 is also used by spec.listeners[0]'],
    ['one cluster name defined two ways', [listener('rtp', 2000, edsCluster('w')), listener('rtcp', 2001, edsCluster('w', { hash_key: 'x' }))], 'InvalidCluster', 'spec.listeners[1].udp.cluster: cluster "w" is also defined by spec.listeners[0] differently'],
    ['a bad cluster name', [listener('rtp', 2000, edsCluster('Workers'))], 'InvalidCluster', 'spec.listeners[0].udp.cluster.name: "Workers"'],
    ['an empty hash_key', [listener('rtp', 2000, edsCluster('w', { hash_key: '' }))], 'InvalidCluster', 'spec.listeners[0].udp.cluster.hash_key: must not be empty'],
    ['a zero interval', [listener('rtp', 2000, edsCluster('w', { health_check: { interval: 0, protocol: 'TCP' } }))], 'InvalidHealthCheck', 'spec.listeners[0].udp.cluster.health_check.interval: 0 must be between 1 and 3600000 milliseconds'],
    ['an interval over an hour', [listener('rtp', 2000, edsCluster('w', { health_check: { interval: 3_600_001, protocol: 'TCP' } }))], 'InvalidHealthCheck', 'health_check.interval: 3600001'],
    ['no endpoints', [listener('rtp', 2000, edsCluster('w', { endpoints: [] }))], 'InvalidCluster', 'spec.listeners[0].udp.cluster.endpoints: must have at least one endpoint'],
    ['a DNS name in an EDS cluster', [listener('rtp', 2000, edsCluster('w', { endpoints: [{ host: { address: 'app.example.com' }, port: 1 }] }))], 'InvalidEndpoint', 'spec.listeners[0].udp.cluster.endpoints[0].host.address: "app.example.com" is a DNS name, but EDS carries IP addresses: use strictdns for DNS names'],
    ['a pod selector in a strictdns cluster', [listener('rtp', 2000, edsCluster('w', { service_discovery: 'strictdns' }))], 'InvalidEndpoint', 'spec.listeners[0].udp.cluster.endpoints[0].host.selector: pod selectors are delivered through EDS: use service_discovery: eds'],
    ['an empty pod selector', [listener('rtp', 2000, edsCluster('w', { endpoints: [{ host: { selector: {} }, port: 1 }] }))], 'InvalidEndpoint', 'endpoints[0].host.selector: must name at least one label'],
    ['a malformed address', [listener('rtp', 2000, edsCluster('w', { endpoints: [{ host: { address: '10.0.0.300' }, port: 1 }] }))], 'InvalidEndpoint', '"10.0.0.300" is neither an IP address nor a DNS name'],
    ['an address with a port', [listener('rtp', 2000, edsCluster('w', { service_discovery: 'strictdns', endpoints: [{ host: { address: 'app:80' }, port: 1 }] }))], 'InvalidEndpoint', '"app:80" is neither'],
    ['a health check port out of range', [listener('rtp', 2000, edsCluster('w', { endpoints: [{ host: { address: '10.0.0.1' }, port: 1, health_check_port: 65536 }] }))], 'InvalidEndpoint', 'endpoints[0].health_check_port: 65536 must be a port number'],
    ['hash_key with hash_source_ip', [listener('rtp', 2000, edsCluster('w', { hash_key: 'k', hash_source_ip: true }))], 'InvalidCluster', 'spec.listeners[0].udp.cluster: hash_key and hash_source_ip: true exclude each other'],
    ['max_sessions 0', [listener('rtp', 2000, edsCluster('w', { max_sessions: 0 }))], 'InvalidCluster', 'spec.listeners[0].udp.cluster.max_sessions: 0 must be between 1 and 4294967295 sessions'],
    ['max_sessions past uint32', [listener('rtp', 2000, edsCluster('w', { max_sessions: 4_294_967_296 }))], 'InvalidCluster', 'max_sessions: 4294967296 must be between 1 and 4294967295'],
    ['an endpoint weight 0', [listener('rtp', 2000, edsCluster('w', { endpoints: [{ host: { address: '10.0.0.1' }, port: 1, weight: 0 }] }))], 'InvalidEndpoint', 'spec.listeners[0].udp.cluster.endpoints[0].weight: 0 must be between 1 and 1000'],
    ['an endpoint weight over 1000', [listener('rtp', 2000, edsCluster('w', { endpoints: [{ host: { address: '10.0.0.1' }, port: 1, weight: 1001 }] }))], 'InvalidEndpoint', 'endpoints[0].weight: 1001 must be between 1 and 1000'],
    ['an idle timeout of 0', [{ name: 'rtp', udp: { port: 2000, idle_timeout_ms: 0, cluster: edsCluster('w') } }], 'InvalidListener', 'spec.listeners[0].udp.idle_timeout_ms: 0 must be between 1 and 86400000 milliseconds'],
    ['an idle timeout over a day', [{ name: 'rtp', udp: { port: 2000, idle_timeout_ms: 86_400_001, cluster: edsCluster('w') } }], 'InvalidListener', 'udp.idle_timeout_ms: 86400001'],
    ['an access log flushed more than once a second', [{ name: 'rtp', udp: { port: 2000, access_log: { destination: 'stdout', flush_interval_ms: 999 }, cluster: edsCluster('w') } }], 'InvalidListener', 'spec.listeners[0].udp.access_log.flush_interval_ms: 999 must be between 1000 and 86400000 milliseconds'],
    ['an access log to a file', [{ name: 'rtp', udp: { port: 2000, access_log: { destination: '/etc/passwd' }, cluster: edsCluster('w') } }], 'InvalidListener', 'spec.listeners[0].udp.access_log.destination: must be one of stdout, stderr, got string "/etc/passwd"'],
    ['an access log with a path', [{ name: 'rtp', udp: { port: 2000, access_log: { destination: 'stdout', path: '/tmp/x' }, cluster: edsCluster('w') } }], 'InvalidListener', 'spec.listeners[0].udp.access_log: unknown field "path"'],
    ['an access log without a destination', [{ name: 'rtp', udp: { port: 2000, access_log: {}, cluster: edsCluster('w') } }], 'InvalidListener', 'spec.listeners[0].udp.access_log.destination: is required (one of stdout, stderr)'],
    ['per_packet_load_balancing as a string', [{ name: 'rtp', udp: { port: 2000, per_packet_load_balancing: 'yes', cluster: edsCluster('w') } }], 'InvalidListener', 'spec.listeners[0].udp.per_packet_load_balancing: must be true or false, got string "yes"'],
    ['hash_source_ip as a string', [listener('rtp', 2000, edsCluster('w', { hash_source_ip: 'true' }))], 'InvalidCluster', 'spec.listeners[0].udp.cluster.hash_source_ip: must be true or false'],
    ['a fractional weight', [listener('rtp', 2000, edsCluster('w', { endpoints: [{ host: { address: '10.0.0.1' }, port: 1, weight: 1.5 }] }))], 'InvalidEndpoint', 'endpoints[0].weight: must be an integer, got number 1.5'],
    ['no listeners', [], 'InvalidListener', 'spec.listeners: must have at least one listener'],
    ['too many listeners', Array.from({ length: 65 }, (_, i) => listener(`l${i}`, 1000 + i)), 'InvalidListener', 'spec.listeners: must have at most 64 listeners'],
  ])('rejects %s, naming the path', (_what, listeners, reason, message) => {
    const r = rejection(raw({ listeners }));
    expect(r.reason).toBe(reason);
    expect(r.message).toContain(message);
  });

  it('accepts every session control, and hash_source_ip: false next to a hash_key', () => {
    const vs = parsed(
      raw({
        listeners: [
          {
            name: 'rtp',
            udp: {
              port: 2000,
              idle_timeout_ms: 86_400_000,
              per_packet_load_balancing: false,
              access_log: { destination: 'stdout', flush_interval_ms: 1_000 },
              cluster: edsCluster('w', { hash_key: 'k', hash_source_ip: false, max_sessions: 4_294_967_295, endpoints: [{ host: { address: '10.0.0.1' }, port: 1, weight: 1_000 }] }),
            },
          },
        ],
      }),
    );
    expect(validateVirtualService(vs)).toEqual({ accepted: true });
    expect(vs.spec.listeners[0]?.udp).toMatchObject({ idle_timeout_ms: 86_400_000, per_packet_load_balancing: false, access_log: { destination: 'stdout', flush_interval_ms: 1_000 } });
    expect(vs.spec.listeners[0]?.udp.cluster).toMatchObject({ hash_source_ip: false, max_sessions: 4_294_967_295, endpoints: [{ weight: 1_000 }] });
  });

  it('classifies a selector problem by where the selector is, whatever its label key says', () => {
    expect(rejection(raw({ selector: { 'cluster.health_check': 'not ok' } }))).toMatchObject({ reason: 'InvalidSelector' });
  });

  it('rejects a bad selector label value', () => {
    expect(rejection(raw({ selector: { app: 'not ok' } }))).toMatchObject({ reason: 'InvalidSelector', message: expect.stringContaining('spec.selector.app: label value "not ok"') });
  });

  it('accepts IPv6 endpoints in EDS and IP literals in strictdns', () => {
    const vs = parsed(
      raw({
        listeners: [
          listener('a', 1000, edsCluster('a', { endpoints: [{ host: { address: 'fd00::1' }, port: 1 }] })),
          listener('b', 1001, edsCluster('b', { service_discovery: 'strictdns', endpoints: [{ host: { address: '10.0.0.1' }, port: 1 }] })),
        ],
      }),
    );
    expect(validateVirtualService(vs)).toEqual({ accepted: true });
  });

  it('lets two listeners share a cluster they define identically', () => {
    const vs = parsed(raw({ listeners: [listener('rtp', 2000, edsCluster('w')), listener('rtcp', 2001, edsCluster('w'))] }));
    expect(validateVirtualService(vs)).toEqual({ accepted: true });
  });

  it('names every problem, not only the first', () => {
    const r = rejection(raw({ listeners: [listener('rtp', 0), listener('rtp', 2001, edsCluster('Bad'))] }));
    expect(r.message).toContain('spec.listeners[0].udp.port');
    expect(r.message).toContain('spec.listeners[1].name');
    expect(r.message).toContain('spec.listeners[1].udp.cluster.name');
  });
});

describe('acceptedCondition', () => {
  const now = new Date('2024-05-01T10:00:00.123Z');

  it('is True with reason Accepted for a valid VirtualService', () => {
    expect(acceptedCondition({ accepted: true }, 4, now)).toEqual({
      type: 'Accepted',
      status: 'True',
      reason: 'Accepted',
      message: 'the VirtualService is valid',
      observedGeneration: 4,
      lastTransitionTime: '2024-05-01T10:00:00Z',
    });
  });

  it('is False with the validation reason and message', () => {
    const c = acceptedCondition({ accepted: false, reason: 'InvalidListener', message: 'spec.listeners[0].udp.port: 0 must be a port number (1-65535)' }, 1, now);
    expect(c).toMatchObject({ status: 'False', reason: 'InvalidListener', message: expect.stringContaining('spec.listeners[0].udp.port') });
  });
});

describe('resolveConflicts', () => {
  const older = parsed(raw({ name: 'older', namespace: 'media', created: '2024-01-01T00:00:00Z', listeners: [listener('rtp', 2000, edsCluster('w'))] }));

  it('keeps the older VirtualService on a port clash and drops only the younger one\'s clashing listener', () => {
    const younger = parsed(
      raw({ name: 'younger', namespace: 'media', created: '2024-02-01T00:00:00Z', listeners: [listener('rtp2', 2000, edsCluster('w2')), listener('rtcp', 2001, edsCluster('w3'))] }),
    );
    const { kept, conflicts } = resolveConflicts([younger, older]);
    expect([...kept.keys()]).toEqual(['media/older', 'media/younger']);
    expect(kept.get('media/older')?.map((l) => l.name)).toEqual(['rtp']);
    expect(kept.get('media/younger')?.map((l) => l.name)).toEqual(['rtcp']);
    expect(conflicts).toEqual([
      {
        vs: 'media/younger',
        listener: 'rtp2',
        kind: 'Port',
        winner: 'media/older',
        message: 'listener "rtp2" (UDP port 2000) conflicts with VirtualService media/older on port 2000; the oldest VirtualService wins',
      },
    ]);
  });

  it('detects a listener name clash', () => {
    const younger = parsed(raw({ name: 'younger', namespace: 'media', created: '2024-02-01T00:00:00Z', listeners: [listener('rtp', 3000, edsCluster('x'))] }));
    expect(resolveConflicts([older, younger]).conflicts).toMatchObject([{ vs: 'media/younger', kind: 'ListenerName', winner: 'media/older', listener: 'rtp' }]);
  });

  it('detects a cluster name defined differently, and shares one defined identically', () => {
    const clash = parsed(raw({ name: 'clash', namespace: 'media', created: '2024-02-01T00:00:00Z', listeners: [listener('other', 3000, edsCluster('w', { hash_key: 'k' }))] }));
    const same = parsed(raw({ name: 'same', namespace: 'media', created: '2024-03-01T00:00:00Z', listeners: [listener('third', 3001, edsCluster('w'))] }));
    const { kept, conflicts } = resolveConflicts([same, clash, older]);
    expect(conflicts).toEqual([
      expect.objectContaining({ vs: 'media/clash', kind: 'ClusterName', winner: 'media/older', message: expect.stringContaining('cluster "w", which it defines differently') }),
    ]);
    expect(kept.get('media/same')?.map((l) => l.name)).toEqual(['third']);
  });

  it('orders by creationTimestamp, then namespace/name, with no timestamp last', () => {
    const at = (name: string, created?: string) => parsed(raw({ name, namespace: 'media', ...(created ? { created } : {}), listeners: [listener('rtp', 2000)] }));
    const unstamped = at('a-unstamped');
    const tieB = at('b', '2024-01-01T00:00:00Z');
    const tieC = at('c', '2024-01-01T00:00:00Z');
    const oldest = at('z', '2023-12-31T23:59:59Z');
    const { kept, conflicts } = resolveConflicts([unstamped, tieC, tieB, oldest]);
    expect([...kept.keys()]).toEqual(['media/z', 'media/b', 'media/c', 'media/a-unstamped']);
    expect(conflicts.map((c) => [c.vs, c.winner])).toEqual([
      ['media/b', 'media/z'],
      ['media/c', 'media/z'],
      ['media/a-unstamped', 'media/z'],
    ]);
  });

  it('incrementally: a newcomer older than the youngest is added only when its age decides nothing', () => {
    const at = (name: string, created: string, port: number, cluster = `${name}-c`) => parsed(raw({ name, namespace: 'media', created, listeners: [listener(`${name}-l`, port, edsCluster(cluster))] }));
    const { state } = resolveConflicts([at('call-2', '2024-01-01T00:00:02Z', 2002)]);
    // Reached the watch after call-2 but stamped before it: touches nothing call-2 holds.
    expect(state.addYoungest(at('call-1', '2024-01-01T00:00:01Z', 2001))).toEqual({ keep: [expect.objectContaining({ name: 'call-1-l' })], conflicts: [] });
    // Older and on a held port, listener name or cluster name: who wins depends on age, so no.
    expect(state.addYoungest(at('call-0', '2024-01-01T00:00:00Z', 2002))).toBeUndefined();
    expect(state.addYoungest(at('call-0', '2024-01-01T00:00:00Z', 2000, 'call-2-c'))).toBeUndefined();
    // A younger one that collides loses, and from then on a conflict is held: an older newcomer
    // could change whom it lost to, so none is added incrementally.
    expect(state.addYoungest(at('call-3', '2024-01-01T00:00:03Z', 2001))?.conflicts).toMatchObject([{ vs: 'media/call-3', winner: 'media/call-1', kind: 'Port' }]);
    expect(state.addYoungest(at('call-00', '2024-01-01T00:00:00Z', 2100))).toBeUndefined();
    expect(state.addYoungest(at('call-4', '2024-01-01T00:00:04Z', 2100))).toEqual({ keep: [expect.objectContaining({ name: 'call-4-l' })], conflicts: [] });
  });

  it('does not mutate its input', () => {
    const input = [older];
    const before = JSON.stringify(input);
    resolveConflicts(input);
    expect(JSON.stringify(input)).toBe(before);
  });
});

describe('parsePod', () => {
  it('reads labels, IP, readiness and termination', () => {
    const pod = parsePod(
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'w-1', uid: 'u1', labels: { app: 'worker' }, deletionTimestamp: '2024-01-01T00:00:00Z' },
        status: { podIP: '10.0.0.5', conditions: [{ type: 'Ready', status: 'True' }] },
      },
      'media',
    );
    expect(pod).toEqual({ ok: true, pod: { namespace: 'media', name: 'w-1', uid: 'u1', labels: { app: 'worker' }, ip: '10.0.0.5', ready: true, terminating: true } });
  });

  it('is not ready without a Ready=True condition', () => {
    const result = parsePod({ metadata: { name: 'w', namespace: 'm' }, status: { conditions: [{ type: 'Ready', status: 'False' }] } });
    expect(result).toMatchObject({ ok: true, pod: { ready: false, terminating: false } });
    expect(result.ok && result.pod.ip).toBeUndefined();
  });
});

describe('fromDocuments', () => {
  it('splits VirtualServices and Pods, sorted, and reports bad documents without dropping the rest', () => {
    const docs = [
      raw({ name: 'zeta' }),
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'w-1', labels: { app: 'worker' } }, status: { podIP: '10.0.0.1' } },
      null,
      raw({ name: 'alpha' }),
      { ...raw({ name: 'broken' }), spec: { listeners: 'nope' } },
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } },
      raw({ name: 'alpha', selector: { app: 'other' } }),
    ];
    const out = fromDocuments(docs, 'default');
    expect(out.virtualServices.map(vsKey)).toEqual(['default/alpha', 'default/zeta']);
    expect(out.virtualServices[0]?.spec.selector).toEqual({ app: 'ingress' });
    expect(out.pods.map((p) => `${p.namespace}/${p.name}`)).toEqual(['default/w-1']);
    expect(out.problems).toEqual([
      { subject: 'default/broken', message: 'VirtualService: spec.listeners: must be a list, got string "nope"' },
      { subject: 'document 6', message: 'ignored: v1/ConfigMap is neither servicemesh.l7mp.io/v1 VirtualService nor v1 Pod' },
      { subject: 'default/alpha', message: 'VirtualService defined more than once; the first definition is used' },
    ]);
  });

  it('reads the items of a List', () => {
    const out = fromDocuments([{ apiVersion: 'v1', kind: 'List', items: [raw({ name: 'a' }), raw({ name: 'b' })] }], 'ns');
    expect(out.virtualServices.map(vsKey)).toEqual(['ns/a', 'ns/b']);
  });
});

describe('deepEqual', () => {
  it('compares parsed values by structure, whatever the key order, and tells apart what JSON cannot', () => {
    expect(deepEqual({ a: 1, b: [1, { c: 'x' }] }, { b: [1, { c: 'x' }], a: 1 })).toBe(true);
    expect(deepEqual({ a: 1, b: undefined }, { a: 1 })).toBe(true);
    expect(deepEqual({ a: [1, 2] }, { a: [2, 1] })).toBe(false);
    expect(deepEqual({ interval: Number.POSITIVE_INFINITY }, { interval: null })).toBe(false);
    expect(deepEqual([Number.NaN], [null])).toBe(false);
    expect(deepEqual([Number.NaN], [Number.NaN])).toBe(true);
  });
});
