import pino from 'pino';
import { BehaviorSubject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { ConfigPipeline } from '../src/main/config-pipeline.js';
import { StatusReporter } from '../src/main/status-reporter.js';
import type { VirtualServiceStatus } from '../src/model/types.js';
import type { RawObject, SourceState, StatusWriter } from '../src/sources/source.js';
import { CLUSTER_TYPE, LISTENER_TYPE, nodeGroup, ProxyStatusRegistry, SnapshotCache, type ProxyInfo } from '../src/xds/index.js';
import { nodeFor, RawAdsStream } from './support/ads-client.js';
import { startAds } from './support/ads-harness.js';
import { fuzzSeed, Prng } from './support/prng.js';

function vs(name: string, zone: string, port: number): RawObject {
  return {
    apiVersion: 'servicemesh.l7mp.io/v1',
    kind: 'VirtualService',
    metadata: { name, namespace: 'default', generation: 1 },
    spec: {
      selector: { zone },
      listeners: [{ name: `${name}-l`, udp: { port, cluster: { name: `${name}-c`, service_discovery: 'strictdns', endpoints: [{ host: { address: '127.0.0.1' }, port: 1 }] } } }],
    },
  };
}

describe('status reporter', () => {
  it('writes a status when its VirtualService or the proxies of its groups change, and only then', () => {
    const subject = new BehaviorSubject<SourceState>({ virtualServices: [vs('a', 'a', 2000), vs('b', 'b', 2000)], pods: [], synced: true, problems: [] });
    const cache = new SnapshotCache();
    const pipeline = new ConfigPipeline({ source: { name: 'test', state$: subject.asObservable(), start: async () => {}, stop: async () => {} }, cache, log: pino({ level: 'silent' }), coalesceMs: 2 ** 30 });
    const groupA = nodeGroup('default', { zone: 'a' });
    const groupB = nodeGroup('default', { zone: 'b' });
    cache.watch(groupA, () => {});
    cache.watch(groupB, () => {});
    pipeline.start();
    pipeline.rebuild();
    const registry = new ProxyStatusRegistry();
    const proxy = (streamId: number, group = groupA): ProxyInfo => {
      const p: ProxyInfo = { streamId, nodeId: `n${streamId}`, mode: 'sotw', peer: 'test', types: new Map(), synced: true };
      registry.connected(p);
      registry.grouped(p, group);
      return p;
    };
    const inA = proxy(1);
    proxy(2, groupB);
    const writes: Array<[string, VirtualServiceStatus]> = [];
    const writer: StatusWriter = { write: (key, _generation, status) => writes.push([key, status]), forget: () => {}, writes: 0 };
    const reporter = new StatusReporter(pipeline, registry, writer, pino({ level: 'silent' }), 2 ** 30);
    const synced = (key: string) => reporter.current().get(key)?.conditions?.find((c) => c.type === 'Synced');

    reporter.report();
    expect(writes.map(([k]) => k).sort()).toEqual(['default/a', 'default/b']);
    expect(synced('default/a')?.status).toBe('True');

    // Nothing changed: nothing written.
    writes.length = 0;
    reporter.report();
    expect(writes).toEqual([]);

    // The proxy of group a rejects a-l: a's status changes, b's is not touched.
    const version = cache.getSnapshot(groupA.key)?.versions()[LISTENER_TYPE] ?? '';
    registry.nack(inA, LISTENER_TYPE, version, 'Error adding/updating listener(s) a-l: cannot bind');
    inA.synced = false;
    reporter.report();
    expect(writes.map(([k]) => k)).toEqual(['default/a']);
    expect(synced('default/a')).toMatchObject({ status: 'False', reason: 'Rejected' });

    // A second proxy joins group b: b's counts change.
    writes.length = 0;
    proxy(3, groupB);
    reporter.report();
    expect(writes.map(([k]) => k)).toEqual(['default/b']);
    expect(reporter.current().get('default/b')?.proxies?.summary).toBe('2/2');

    // b moves to group a (another port): group a's translation changed, so a's status is computed
    // again but is the same (not written); b now counts group a's rejecting proxy as not synced.
    writes.length = 0;
    subject.next({ ...subject.value, virtualServices: [vs('a', 'a', 2000), vs('b', 'a', 2002)] });
    pipeline.rebuild();
    reporter.report();
    expect(writes.map(([k]) => k).sort()).toEqual(['default/b']);
    expect(reporter.current().get('default/b')?.proxies?.summary).toBe('0/1');
    pipeline.stop();
  });

  it('keeps a VirtualService Synced while its proxy, busy with another one\'s change, runs its listeners and clusters', () => {
    const subject = new BehaviorSubject<SourceState>({ virtualServices: [vs('call-1', 'a', 2000)], pods: [], synced: true, problems: [] });
    const cache = new SnapshotCache();
    const pipeline = new ConfigPipeline({ source: { name: 'test', state$: subject.asObservable(), start: async () => {}, stop: async () => {} }, cache, log: pino({ level: 'silent' }), coalesceMs: 2 ** 30 });
    const group = nodeGroup('default', { zone: 'a' });
    cache.watch(group, () => {});
    pipeline.start();
    pipeline.rebuild();
    const registry = new ProxyStatusRegistry();
    // What the proxy runs: the versions of the snapshot it last took, as a stream would say.
    let running = cache.getSnapshot(group.key) as NonNullable<ReturnType<SnapshotCache['getSnapshot']>>;
    const p: ProxyInfo = {
      streamId: 1,
      nodeId: 'n1',
      mode: 'delta',
      peer: 'test',
      types: new Map(),
      synced: true,
      runs: (typeUrl, name) => running.resources(typeUrl).get(name)?.version,
    };
    registry.connected(p);
    registry.grouped(p, group);
    const writes: string[] = [];
    const writer: StatusWriter = { write: (key) => writes.push(key), forget: () => {}, writes: 0 };
    const reporter = new StatusReporter(pipeline, registry, writer, pino({ level: 'silent' }), 2 ** 30);
    const synced = (key: string) => reporter.current().get(key)?.conditions?.find((c) => c.type === 'Synced');
    reporter.report();
    expect(synced('default/call-1')?.status).toBe('True');

    // A second call arrives: the proxy is not in step with the group until it ACKs call-2's listener.
    writes.length = 0;
    subject.next({ ...subject.value, virtualServices: [vs('call-1', 'a', 2000), vs('call-2', 'a', 2002)] });
    pipeline.rebuild();
    p.synced = false;
    reporter.report();
    expect(synced('default/call-1')?.status).toBe('True');
    expect(synced('default/call-2')).toMatchObject({ status: 'False', reason: 'Pending' });
    expect(writes).toEqual(['default/call-2']);

    // It ACKs: call-2 is Synced; call-1 is not written again.
    writes.length = 0;
    running = cache.getSnapshot(group.key) as typeof running;
    registry.ack(p, LISTENER_TYPE, running.versions()[LISTENER_TYPE] ?? '');
    reporter.report();
    expect(synced('default/call-2')?.status).toBe('True');
    expect(writes).toEqual(['default/call-2']);
    pipeline.stop();
  });

  // A reporter looks again only at the statuses whose inputs may have changed since its last
  // report; one made afresh looks at every one. After any sequence of changes, builds,
  // pushes, ACKs and NACKs the two must agree.
  for (const shareClusters of [false, true]) {
    it(`computes the same statuses as a fresh reporter after any sequence of changes (${shareClusters ? 'shared' : 'own'} clusters)`, () => {
      const seed = fuzzSeed();
      const rng = new Prng(seed);
      const objects = new Map<string, RawObject>();
      const subject = new BehaviorSubject<SourceState>({ virtualServices: [], pods: [], synced: true, problems: [] });
      const cache = new SnapshotCache();
      const log = pino({ level: 'silent' });
      const pipeline = new ConfigPipeline({ source: { name: 'test', state$: subject.asObservable(), start: async () => {}, stop: async () => {} }, cache, log, coalesceMs: 2 ** 30, translate: { shareClusters } });
      const groups = ['a', 'b', 'c'].map((zone) => nodeGroup('default', { zone }));
      pipeline.start();
      pipeline.rebuild();
      const registry = new ProxyStatusRegistry();
      // `lds`: Envoy subscribes to listeners only once its clusters are ready, so a proxy can be
      // in step with what it subscribed to (clusters) and run no listener yet; it runs listeners
      // from its first ACK of them (`ldsAcked`).
      type Proxy = ProxyInfo & { running?: ReturnType<SnapshotCache['getSnapshot']>; unwatch?: () => void; lds: boolean; ldsAcked?: boolean };
      let streams = 0;
      const watch = (p: Proxy, group: (typeof groups)[number]) => {
        p.unwatch?.();
        registry.grouped(p, group);
        // As a stream does: a new snapshot puts the proxy out of step until it ACKs it.
        p.unwatch = cache.watch(group, (snapshot) => {
          if (snapshot !== p.running) p.synced = false;
        });
      };
      const connect = (group: (typeof groups)[number]): Proxy => {
        const p: Proxy = { streamId: ++streams, nodeId: `n${streams}`, mode: 'delta', peer: 'test', types: new Map(), synced: false, lds: rng.chance(0.5) };
        p.runs = (typeUrl, name) => (typeUrl === LISTENER_TYPE && !p.ldsAcked ? undefined : p.running?.resources(typeUrl).get(name)?.version);
        registry.connected(p);
        watch(p, group);
        return p;
      };
      const proxies: Proxy[] = groups.slice(0, 2).map(connect);
      const writer: StatusWriter = { write: () => {}, forget: () => {}, writes: 0 };
      const reporter = new StatusReporter(pipeline, registry, writer, log, 2 ** 30);
      const strip = (statuses: ReadonlyMap<string, VirtualServiceStatus>) =>
        Object.fromEntries([...statuses].map(([k, st]) => [k, { ...st, conditions: st.conditions?.map(({ lastTransitionTime: _t, ...c }) => c) }]));
      let generation = 0;
      for (let step = 0; step < 1500; step++) {
        const op = rng.int(12);
        const names = [...objects.keys()];
        if (op <= 2 || names.length === 0) {
          const name = `call-${rng.int(40)}`;
          const o = vs(name, rng.pick(['a', 'a', 'b', 'c']), 2000 + rng.int(12));
          // Two endpoint sets: calls with the same one share a cluster when clusters are shared.
          (o.spec as { listeners: Array<{ udp: { cluster: { endpoints: unknown[] } } }> }).listeners[0]!.udp.cluster.endpoints = [{ host: { address: '127.0.0.1' }, port: 1 + rng.int(2) }];
          objects.set(name, { ...o, metadata: { ...o.metadata, generation: ++generation } });
        } else if (op === 3) {
          objects.delete(rng.pick(names));
        } else if (op === 4) {
          // A build, with whatever changed since the last one.
          subject.next({ ...subject.value, virtualServices: [...objects.values()] });
          pipeline.rebuild();
        } else if (proxies.length === 0) {
          proxies.push(connect(rng.pick(groups)));
        } else {
          const p = rng.pick(proxies);
          const snapshot = p.group ? cache.getSnapshot(p.group.key) : undefined;
          const version = snapshot?.versions()[LISTENER_TYPE] ?? '';
          if (op === 5) {
            p.synced = false;
          } else if (op === 6) {
            // It takes the current snapshot; in step, or still waiting for another type.
            p.running = snapshot;
            p.synced = rng.chance(0.7);
            registry.ack(p, CLUSTER_TYPE, snapshot?.versions()[CLUSTER_TYPE] ?? '');
            if (p.lds) {
              p.ldsAcked = true;
              registry.ack(p, LISTENER_TYPE, version);
            }
          } else if (op === 7 && names.length > 0) {
            registry.nack(p, LISTENER_TYPE, version, `Error adding/updating listener(s) ${rng.pick(names)}-l: cannot bind`);
            p.synced = false;
          } else if (op === 8) {
            if (proxies.length < 4) proxies.push(connect(rng.pick(groups)));
          } else if (op === 10) {
            // Its pod's labels changed: the same stream serves another group, and what the proxy
            // runs is the old group's until it takes the new one's.
            watch(p, rng.pick(groups));
            p.synced = false;
          } else if (op === 11) {
            if (!p.lds) {
              p.lds = true;
              p.synced = false;
            }
          } else if (proxies.length > 0) {
            // The last proxy of a group leaving takes the group away at the next build.
            const gone = proxies.splice(rng.int(proxies.length), 1)[0] as Proxy;
            gone.unwatch?.();
            registry.disconnected(gone);
          }
        }
        if (rng.chance(0.6)) {
          reporter.report();
          const fresh = new StatusReporter(pipeline, registry, undefined, log, 2 ** 30);
          fresh.report();
          expect(strip(reporter.current()), `seed ${seed}, step ${step}`).toEqual(strip(fresh.current()));
        }
      }
      pipeline.stop();
    });
  }

  it('a proxy in step with its clusters only is Pending for the listener it is then sent (Envoy subscribes to listeners after its clusters)', async () => {
    const ads = await startAds();
    const subject = new BehaviorSubject<SourceState>({ virtualServices: [vs('x', 'a', 2000)], pods: [], synced: true, problems: [] });
    const log = pino({ level: 'silent' });
    const pipeline = new ConfigPipeline({ source: { name: 'test', state$: subject.asObservable(), start: async () => {}, stop: async () => {} }, cache: ads.cache, log, coalesceMs: 2 ** 30 });
    pipeline.start();
    const stream = new RawAdsStream(ads.address, 'delta');
    const registry = ads.server.status;
    const proxy = () => registry.list()[0] as ProxyInfo;
    try {
      stream.send({ node: nodeFor('default', { zone: 'a' }, 'default/p1'), type_url: CLUSTER_TYPE, initial_resource_versions: {} });
      await stream.until(() => registry.list().some((p) => p.group), 2000, 'the proxy grouped');
      pipeline.rebuild();
      stream.ack(await stream.next());
      await stream.until(() => proxy().types.get(CLUSTER_TYPE)?.acked !== undefined && proxy().synced, 2000, 'the clusters ACKed');
      const reporter = new StatusReporter(pipeline, registry, undefined, log, 2 ** 30);
      const synced = () => reporter.current().get('default/x')?.conditions?.find((c) => c.type === 'Synced');
      reporter.report();
      // In step with all it subscribed to: Synced, as the proxy counts go.
      expect(synced()?.status).toBe('True');
      stream.send({ type_url: LISTENER_TYPE, initial_resource_versions: {} });
      await stream.next();
      await stream.until(() => !proxy().synced, 2000, 'the listener in flight');
      reporter.report();
      expect(synced()).toMatchObject({ status: 'False', reason: 'Pending' });
    } finally {
      stream.close();
      pipeline.stop();
      await ads.stop();
    }
  });
});
