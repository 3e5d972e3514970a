import pino from 'pino';
import { BehaviorSubject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { ConfigPipeline } from '../src/main/config-pipeline.js';
import { StatusReporter } from '../src/main/status-reporter.js';
import type { VirtualServiceStatus } from '../src/model/types.js';
import type { RawObject, SourceState, StatusWriter } from '../src/sources/source.js';
import { LISTENER_TYPE, nodeGroup, ProxyStatusRegistry, SnapshotCache, type ProxyInfo } from '../src/xds/index.js';

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
});
