import pino from 'pino';
import { BehaviorSubject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { ConfigPipeline } from '../src/main/config-pipeline.js';
import type { RawObject, Source, SourceState } from '../src/sources/source.js';
import { LISTENER_TYPE, nodeGroup, SnapshotCache } from '../src/xds/index.js';

function vs(name: string, port: number): RawObject {
  return {
    apiVersion: 'servicemesh.l7mp.io/v1',
    kind: 'VirtualService',
    metadata: { name, namespace: 'default', generation: port },
    spec: {
      selector: { app: 'worker' },
      listeners: [{ name: `${name}-l`, udp: { port, cluster: { name: `${name}-c`, service_discovery: 'strictdns', endpoints: [{ host: { address: '127.0.0.1' }, port: 1 }] } } }],
    },
  };
}

function fakeSource(initial: SourceState): Source & { subject: BehaviorSubject<SourceState> } {
  const subject = new BehaviorSubject(initial);
  return { name: 'fake', subject, state$: subject.asObservable(), start: async () => {}, stop: async () => {} };
}

describe('config pipeline', () => {
  it('does not build, and the cache stays not ready, until the source has synced', async () => {
    const source = fakeSource({ virtualServices: [vs('a', 2000)], pods: [], synced: false, problems: [] });
    const cache = new SnapshotCache();
    const pipeline = new ConfigPipeline({ source, cache, log: pino({ level: 'silent' }), coalesceMs: 5 });
    cache.watch(nodeGroup('default', { app: 'worker' }), () => {});
    pipeline.start();
    await new Promise((r) => setTimeout(r, 50));
    expect(pipeline.current.builds).toBe(0);
    expect(cache.ready).toBe(false);
    source.subject.next({ ...source.subject.value, synced: true });
    await new Promise((r) => setTimeout(r, 50));
    expect(pipeline.current.builds).toBe(1);
    expect(cache.ready).toBe(true);
    expect(cache.getSnapshot('default/app=worker')?.resources(LISTENER_TYPE).names).toEqual(['a-l']);
    pipeline.stop();
  });

  it('turns a burst of 1,000 VirtualService updates into a handful of snapshot builds, ending at the last state', async () => {
    const source = fakeSource({ virtualServices: [], pods: [], synced: true, problems: [] });
    const cache = new SnapshotCache();
    const pipeline = new ConfigPipeline({ source, cache, log: pino({ level: 'silent' }), coalesceMs: 100 });
    cache.watch(nodeGroup('default', { app: 'worker' }), () => {});
    pipeline.start();
    await new Promise((r) => setTimeout(r, 150));
    const before = pipeline.current.builds;
    const list: RawObject[] = [];
    for (let i = 0; i < 1000; i++) {
      list.push(vs(`vs${i}`, 3000 + i));
      source.subject.next({ ...source.subject.value, virtualServices: [...list] });
      if (i % 50 === 0) await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 300));
    const builds = pipeline.current.builds - before;
    expect(builds).toBeGreaterThanOrEqual(1);
    expect(builds).toBeLessThanOrEqual(10);
    expect(cache.getSnapshot('default/app=worker')?.resources(LISTENER_TYPE).names).toHaveLength(1000);
    pipeline.stop();
  });

  it('rebuilds only the node groups whose VirtualServices or namespace pods changed', async () => {
    const forWorker = vs('w', 2000);
    const forIngress = { ...vs('i', 2002), spec: { ...(vs('i', 2002) as any).spec, selector: { app: 'ingress' } } } as RawObject;
    const source = fakeSource({ virtualServices: [forIngress, forWorker], pods: [], synced: true, problems: [] });
    const cache = new SnapshotCache();
    const pipeline = new ConfigPipeline({ source, cache, log: pino({ level: 'silent' }), coalesceMs: 5 });
    cache.watch(nodeGroup('default', { app: 'worker' }), () => {});
    cache.watch(nodeGroup('default', { app: 'ingress' }), () => {});
    pipeline.start();
    await new Promise((r) => setTimeout(r, 50));
    const ingressBefore = cache.getSnapshot('default/app=ingress');
    const workerBefore = cache.getSnapshot('default/app=worker');
    source.subject.next({ ...source.subject.value, virtualServices: [forIngress, vs('w', 2010)] });
    await new Promise((r) => setTimeout(r, 50));
    expect(cache.getSnapshot('default/app=ingress')).toBe(ingressBefore);
    expect(cache.getSnapshot('default/app=worker')).not.toBe(workerBefore);
    expect(cache.getSnapshot('default/app=worker')?.resources(LISTENER_TYPE).names).toEqual(['w-l']);
    expect(pipeline.current.translations.get('default/app=ingress')?.translation.contributions.has('default/i')).toBe(true);
    pipeline.stop();
  });
});
