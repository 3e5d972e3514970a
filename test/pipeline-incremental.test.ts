import pino from 'pino';
import { BehaviorSubject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { ConfigPipeline } from '../src/main/config-pipeline.js';
import type { Pod } from '../src/model/types.js';
import { ObjectStore } from '../src/sources/object-store.js';
import type { RawObject, Source, SourceState } from '../src/sources/source.js';
import { translateAll, type GroupTranslation } from '../src/translate/index.js';
import { ENDPOINT_TYPE, LISTENER_TYPE, nodeGroup, Snapshot, SnapshotCache, type NodeGroup } from '../src/xds/index.js';
import { Prng } from './support/prng.js';
import { waitUntil } from './support/wait.js';

const NAMESPACES = ['red', 'blue'];
const GROUP_LABELS: Array<Record<string, string>> = [{ app: 'ingress' }, { app: 'ingress', zone: 'a' }, { app: 'ingress', zone: 'b' }, { app: 'worker' }];

function virtualService(ns: string, i: number, variant: number, selector: Record<string, string>, created: number): RawObject {
  return {
    apiVersion: 'servicemesh.l7mp.io/v1',
    kind: 'VirtualService',
    metadata: { name: `vs${i}`, namespace: ns, generation: variant + 1, creationTimestamp: new Date(Date.UTC(2025, 0, 1) + created * 1000).toISOString() },
    spec: {
      selector,
      listeners: [
        {
          name: `l${i}`,
          // Few ports, so VirtualServices collide and conflicts come and go with the changes.
          udp: {
            port: 9000 + ((i + variant) % 7),
            cluster: {
              name: `c${i}`,
              service_discovery: 'eds',
              hash_key: `key${variant % 2}`,
              endpoints: [{ name: 'w', host: { selector: { app: 'backend', tier: `t${(i + variant) % 3}` } }, port: 2000 }],
            },
          },
        },
      ],
    },
  };
}

function pod(ns: string, i: number, prng: Prng): Pod {
  return {
    namespace: ns,
    name: `p${i}`,
    labels: { app: 'backend', tier: `t${prng.int(3)}` },
    ip: prng.chance(0.9) ? `10.${NAMESPACES.indexOf(ns)}.${i >> 8}.${i & 255}` : undefined,
    ready: prng.chance(0.7),
    terminating: prng.chance(0.2),
  };
}

function storeSource(): Source & { subject: BehaviorSubject<SourceState>; store: ObjectStore; emit(): void } {
  const store = new ObjectStore();
  const subject = new BehaviorSubject<SourceState>({ virtualServices: [], pods: [], synced: false, problems: [] });
  return {
    name: 'store',
    store,
    subject,
    state$: subject.asObservable(),
    emit: () => subject.next(store.state(true)),
    start: async () => {},
    stop: async () => {},
  };
}

/** What a from-scratch translation of the whole state gives each group: its translation and versions. */
function fromScratch(groups: readonly NodeGroup[], state: SourceState, pipeline: ConfigPipeline): Map<string, { translation: GroupTranslation; versions: Record<string, string> }> {
  const accepted = state.virtualServices.flatMap((raw) => {
    const e = pipeline.evaluate(raw);
    return e.accepted && e.vs ? [e.vs] : [];
  });
  const out = new Map<string, { translation: GroupTranslation; versions: Record<string, string> }>();
  for (const [key, t] of translateAll(groups, accepted, state.pods)) out.set(key, { translation: t, versions: Snapshot.build(t.snapshot).versions() });
  return out;
}

/** Every group's snapshot has the versions a from-scratch translation gives; returns that translation. */
function expectFromScratch(groups: readonly NodeGroup[], source: { subject: BehaviorSubject<SourceState> }, cache: SnapshotCache, pipeline: ConfigPipeline, label: string): Map<string, { translation: GroupTranslation }> {
  const expected = fromScratch(groups, source.subject.value, pipeline);
  for (const g of groups) expect(cache.getSnapshot(g.key)?.versions(), `${label}, group ${g.key}`).toEqual(expected.get(g.key)?.versions);
  return expected;
}

/** A started pipeline over a store source, the groups watched, with a random generator seeded by $FUZZ_SEED (else the clock). */
function fuzzed(groups: readonly NodeGroup[]) {
  const seed = Number(process.env['FUZZ_SEED'] ?? Date.now() % 2 ** 31);
  const source = storeSource();
  const cache = new SnapshotCache();
  const pipeline = new ConfigPipeline({ source, cache, log: pino({ level: 'silent' }), coalesceMs: 1_000_000 });
  for (const g of groups) cache.watch(g, () => {});
  pipeline.start();
  return { seed, prng: new Prng(seed), source, cache, pipeline };
}

describe('incremental pipeline', () => {
  it('after any sequence of VirtualService and pod changes, every group has what a build from scratch gives', () => {
    const groups = NAMESPACES.flatMap((ns) => GROUP_LABELS.map((labels) => nodeGroup(ns, labels)));
    const { seed, prng, source, cache, pipeline } = fuzzed(groups);
    const variants = new Map<string, number>();
    let created = 0;
    const step = (): void => {
      const ns = prng.pick(NAMESPACES);
      const i = prng.int(12);
      const key = `${ns}/vs${i}`;
      if (prng.chance(0.5)) {
        if (prng.chance(0.15)) source.store.setVirtualService(key, undefined);
        else {
          const variant = (variants.get(key) ?? 0) + 1;
          variants.set(key, variant);
          source.store.setVirtualService(key, virtualService(ns, i, variant, prng.pick(GROUP_LABELS), created++ % 5));
        }
      } else {
        const p = prng.int(20);
        source.store.setPod(`${ns}/p${p}`, prng.chance(0.15) ? undefined : pod(ns, p, prng));
      }
    };
    for (let n = 0; n < 30; n++) step();
    source.emit();
    pipeline.rebuild();
    for (let round = 0; round < 150; round++) {
      // Several states between builds, as the coalescing window collects them.
      const states = 1 + prng.int(3);
      for (let s = 0; s < states; s++) {
        for (let n = 1 + prng.int(4); n > 0; n--) step();
        source.emit();
      }
      pipeline.rebuild();
      expectFromScratch(groups, source, cache, pipeline, `seed ${seed} (FUZZ_SEED replays), round ${round}`);
    }
    pipeline.stop();
  });

  it('under per-call churn (each new VirtualService the youngest, random ones deleted), every group has what a build from scratch gives', () => {
    const groups = GROUP_LABELS.map((labels) => nodeGroup('red', labels));
    const { seed, prng, source, cache, pipeline } = fuzzed(groups);
    for (let p = 0; p < 6; p++) source.store.setPod(`red/p${p}`, pod('red', p, prng));
    const live: number[] = [];
    let next = 0;
    const call = (i: number): RawObject => {
      const raw = virtualService('red', i, 0, prng.chance(0.8) ? { app: 'ingress' } : prng.pick(GROUP_LABELS), i) as any;
      const listener = raw.spec.listeners[0];
      // Ports, listener and cluster names from small pools: every kind of conflict comes and goes,
      // and calls share user cluster names (identically or not).
      listener.udp.port = 20000 + prng.int(40);
      if (prng.chance(0.1)) listener.name = `shared-l${prng.int(3)}`;
      if (prng.chance(0.3)) listener.udp.cluster.name = `pool-${prng.int(3)}`;
      listener.udp.cluster.endpoints[0].port = 2000 + prng.int(2);
      return raw;
    };
    const step = (): void => {
      if (live.length > 0 && prng.chance(0.45)) {
        const [i] = live.splice(prng.int(live.length), 1);
        source.store.setVirtualService(`red/vs${i}`, undefined);
      } else if (live.length > 0 && prng.chance(0.05)) {
        // An edit of a running call: not the youngest any more, so the group is translated whole.
        const i = prng.pick(live);
        source.store.setVirtualService(`red/vs${i}`, call(i));
      } else {
        live.push(next);
        source.store.setVirtualService(`red/vs${next}`, call(next));
        next++;
      }
      if (prng.chance(0.05)) {
        const p = prng.int(6);
        source.store.setPod(`red/p${p}`, pod('red', p, prng));
      }
    };
    source.emit();
    pipeline.rebuild();
    for (let round = 0; round < 300; round++) {
      for (let n = 1 + prng.int(3); n > 0; n--) step();
      source.emit();
      pipeline.rebuild();
      const expected = expectFromScratch(groups, source, cache, pipeline, `seed ${seed} (FUZZ_SEED replays), round ${round}`);
      const contributions = (t: GroupTranslation | undefined) => [...(t?.contributions ?? [])].map(([k, c]) => [k, c.listeners, c.conflicts.map((x) => x.message)]).sort();
      for (const g of groups) {
        const built = pipeline.current.translations.get(g.key)?.translation;
        if (built) expect(contributions(built), `seed ${seed}, round ${round}, group ${g.key}: contributions`).toEqual(contributions(expected.get(g.key)?.translation));
      }
    }
    pipeline.stop();
  });

  it('under per-call churn with calls reaching the watch out of age order, every group has what a build from scratch gives, and unchanged calls keep their contributions', () => {
    const group = nodeGroup('red', { app: 'ingress' });
    const { seed, prng, source, cache, pipeline } = fuzzed([group]);
    for (let p = 0; p < 6; p++) source.store.setPod(`red/p${p}`, pod('red', p, prng));
    const live: number[] = [];
    let next = 0;
    const call = (i: number): RawObject => {
      // Stamped up to three seconds before the calls created ahead of it (one-second timestamps,
      // creates that commit out of order); a port from a pool large enough that collisions are rare.
      const raw = virtualService('red', i, 0, { app: 'ingress' }, Math.max(0, i - prng.int(4))) as any;
      raw.spec.listeners[0].udp.port = 20000 + prng.int(400);
      return raw;
    };
    source.emit();
    pipeline.rebuild();
    for (let round = 0; round < 300; round++) {
      const before = pipeline.current.translations.get(group.key)?.translation;
      const touched = new Set<string>();
      for (let n = 1 + prng.int(3); n > 0; n--) {
        if (live.length > 20 && prng.chance(0.45)) {
          const [i] = live.splice(prng.int(live.length), 1);
          source.store.setVirtualService(`red/vs${i}`, undefined);
          touched.add(`red/vs${i}`);
        } else {
          live.push(next);
          source.store.setVirtualService(`red/vs${next}`, call(next));
          touched.add(`red/vs${next}`);
          next++;
        }
      }
      source.emit();
      pipeline.rebuild();
      const expected = expectFromScratch([group], source, cache, pipeline, `seed ${seed} (FUZZ_SEED replays), round ${round}`);
      const built = pipeline.current.translations.get(group.key)?.translation;
      const contributions = (t: GroupTranslation | undefined) => [...(t?.contributions ?? [])].map(([k, c]) => [k, c.listeners, c.conflicts.map((x) => x.message)]).sort();
      expect(contributions(built), `seed ${seed}, round ${round}: contributions`).toEqual(contributions(expected.get(group.key)?.translation));
      // A call neither added nor removed whose part is unchanged keeps the very object.
      for (const [key, c] of before?.contributions ?? []) {
        const now = built?.contributions.get(key);
        if (touched.has(key) || !now || JSON.stringify([now.listeners, [...now.clusters], now.conflicts]) !== JSON.stringify([c.listeners, [...c.clusters], c.conflicts])) continue;
        expect(now, `seed ${seed}, round ${round}: ${key}'s contribution`).toBe(c);
      }
    }
    pipeline.stop();
  });

  it('a changed pod rebuilds only the groups with a cluster selecting it, and only their endpoints', () => {
    const source = storeSource();
    const cache = new SnapshotCache();
    // The clusters keep their own names (c0, c1) here, so the test can name them.
    const pipeline = new ConfigPipeline({ source, cache, log: pino({ level: 'silent' }), coalesceMs: 1_000_000, translate: { shareClusters: false } });
    const zoneA = nodeGroup('red', { app: 'ingress', zone: 'a' });
    const zoneB = nodeGroup('red', { app: 'ingress', zone: 'b' });
    cache.watch(zoneA, () => {});
    cache.watch(zoneB, () => {});
    pipeline.start();
    const prng = new Prng(1);
    source.store.setVirtualService('red/vs0', virtualService('red', 0, 0, { zone: 'a' }, 0)); // tier t0
    source.store.setVirtualService('red/vs1', virtualService('red', 1, 0, { zone: 'b' }, 1)); // tier t1
    const base = { ...pod('red', 1, prng), ip: '10.0.0.1', ready: true, terminating: false };
    source.store.setPod('red/p1', { ...base, labels: { app: 'backend', tier: 't0' } });
    source.emit();
    pipeline.rebuild();
    const a = cache.getSnapshot(zoneA.key) as Snapshot;
    const b = cache.getSnapshot(zoneB.key) as Snapshot;
    expect(a.resources(ENDPOINT_TYPE).get('c0')).toBeDefined();

    // A new pod for tier t1: zone b's cluster selects it, zone a's does not.
    source.store.setPod('red/p2', { ...base, name: 'p2', ip: '10.0.0.2', labels: { app: 'backend', tier: 't1' } });
    source.emit();
    pipeline.rebuild();
    expect(pipeline.current.lastBuildGroups).toBe(1);
    expect(cache.getSnapshot(zoneA.key)).toBe(a);
    const b2 = cache.getSnapshot(zoneB.key) as Snapshot;
    expect(b2).not.toBe(b);
    expect(b2.versions()[LISTENER_TYPE]).toBe(b.versions()[LISTENER_TYPE]);
    expect(b2.versions()[ENDPOINT_TYPE]).not.toBe(b.versions()[ENDPOINT_TYPE]);

    // A pod no cluster selects rebuilds nothing.
    source.store.setPod('red/p3', { ...base, name: 'p3', ip: '10.0.0.3', labels: { app: 'other' } });
    source.emit();
    pipeline.rebuild();
    expect(pipeline.current.lastBuildGroups).toBe(0);
    expect(cache.getSnapshot(zoneB.key)).toBe(b2);

    // Relabelled from t0 to t1: both groups' assignments change.
    source.store.setPod('red/p1', { ...base, labels: { app: 'backend', tier: 't1' } });
    source.emit();
    pipeline.rebuild();
    expect(pipeline.current.lastBuildGroups).toBe(2);
    pipeline.stop();
  });

  it('a changed VirtualService rebuilds the groups it selected before and after, no others', () => {
    const source = storeSource();
    const cache = new SnapshotCache();
    const pipeline = new ConfigPipeline({ source, cache, log: pino({ level: 'silent' }), coalesceMs: 1_000_000 });
    const groups = ['a', 'b', 'c'].map((zone) => nodeGroup('red', { app: 'ingress', zone }));
    for (const g of groups) cache.watch(g, () => {});
    pipeline.start();
    source.store.setVirtualService('red/vs0', virtualService('red', 0, 0, { zone: 'a' }, 0));
    source.emit();
    pipeline.rebuild();
    const c = cache.getSnapshot(groups[2]!.key);
    source.store.setVirtualService('red/vs0', virtualService('red', 0, 1, { zone: 'b' }, 0));
    source.emit();
    pipeline.rebuild();
    expect(pipeline.current.lastBuildGroups).toBe(2);
    expect(cache.getSnapshot(groups[0]!.key)?.resources(LISTENER_TYPE).names).toEqual([]);
    expect(cache.getSnapshot(groups[1]!.key)?.resources(LISTENER_TYPE).names).toEqual(['l0']);
    expect(cache.getSnapshot(groups[2]!.key)).toBe(c);
    pipeline.stop();
  });
});

describe('pipeline builds', () => {
  it('only from a synced state, also when asked to rebuild right away', () => {
    const source = storeSource();
    const cache = new SnapshotCache();
    const pipeline = new ConfigPipeline({ source, cache, log: pino({ level: 'silent' }), coalesceMs: 1_000_000 });
    cache.watch(nodeGroup('red', { app: 'ingress' }), () => {});
    pipeline.start();
    source.store.setVirtualService('red/vs0', virtualService('red', 0, 0, { app: 'ingress' }, 0));
    source.subject.next(source.store.state(false));
    pipeline.rebuild();
    expect(pipeline.current.builds).toBe(0);
    expect(cache.ready).toBe(false);
    source.subject.next(source.store.state(true));
    pipeline.rebuild();
    expect(pipeline.current.builds).toBe(1);
    expect(cache.getSnapshot('red/app=ingress')?.resources(LISTENER_TYPE).names).toEqual(['l0']);
    pipeline.stop();
  });
});

describe('object store', () => {
  it('gives states that stay true to their moment and say what changed since the previous one', () => {
    const store = new ObjectStore();
    const a = virtualService('red', 1, 0, { app: 'ingress' }, 0);
    store.setVirtualService('red/vs1', a);
    const first = store.state(true);
    expect(first.changes).toBeUndefined();
    const b = virtualService('red', 2, 0, { app: 'ingress' }, 0);
    store.setVirtualService('red/vs2', b);
    store.setVirtualService('red/vs1', undefined);
    expect(store.setVirtualService('red/vs9', undefined)).toBe(false);
    const second = store.state(true);
    expect([...(second.changes?.virtualServices ?? [])]).toEqual([
      ['red/vs2', b],
      ['red/vs1', undefined],
    ]);
    expect(first.virtualServices).toEqual([a]);
    expect(second.virtualServices).toEqual([b]);
    expect(store.state(true).changes?.virtualServices.size).toBe(0);
  });
});

describe('deletions alone wait for the next change (--coalesce-deletions-ms)', () => {
  const group = nodeGroup('red', { app: 'ingress' });
  const listeners = (cache: SnapshotCache) => cache.getSnapshot(group.key)?.resources(LISTENER_TYPE).names;
  const turns = () => new Promise((resolve) => setTimeout(resolve, 50));
  const start = (deletionDelayMs: number) => {
    const source = storeSource();
    const cache = new SnapshotCache();
    cache.watch(group, () => {});
    for (const i of [1, 2]) source.store.setVirtualService(`red/vs${i}`, virtualService('red', i, 0, { app: 'ingress' }, i));
    source.emit();
    const pipeline = new ConfigPipeline({ source, cache, log: pino({ level: 'silent' }), coalesceMs: 0, deletionDelayMs });
    pipeline.start();
    return { source, cache, pipeline };
  };

  it('an ended call rides on the next call’s build: one build for both', async () => {
    const { source, cache, pipeline } = start(60_000);
    await waitUntil(() => listeners(cache)?.length === 2, 'the first build');
    const builds = pipeline.current.builds;
    source.store.setVirtualService('red/vs1', undefined);
    source.emit();
    await turns();
    expect(pipeline.current.builds).toBe(builds);
    expect(listeners(cache)).toEqual(['l1', 'l2']);
    source.store.setVirtualService('red/vs3', virtualService('red', 3, 0, { app: 'ingress' }, 3));
    source.emit();
    await waitUntil(() => pipeline.current.builds > builds, 'a build for the new VirtualService');
    expect(pipeline.current.builds).toBe(builds + 1);
    expect(listeners(cache)).toEqual(['l2', 'l3']);
    pipeline.stop();
  });

  it('with nothing else coming, a deletion is built once its delay is out; 0 builds it at once', async () => {
    for (const delay of [50, 0]) {
      const { source, cache, pipeline } = start(delay);
      await waitUntil(() => listeners(cache)?.length === 2, 'the first build');
      source.store.setVirtualService('red/vs1', undefined);
      source.emit();
      await waitUntil(() => listeners(cache)?.length === 1, `the deletion built (delay ${delay} ms)`);
      expect(listeners(cache)).toEqual(['l2']);
      pipeline.stop();
    }
  });
});
