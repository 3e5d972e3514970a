/**
 * How the leader adds up what the other replicas' proxies say: two status reporters over one
 * source, each with proxies of its own, exchanging what they publish as the ConfigMaps would
 * (test/kubernetes-replica-status.test.ts runs the same through a real kube-apiserver).
 */
import pino from 'pino';
import { BehaviorSubject, Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { ConfigPipeline } from '../src/main/config-pipeline.js';
import { LocalTallies, parseContribution } from '../src/main/replica-counts.js';
import { StatusReporter } from '../src/main/status-reporter.js';
import type { RawObject, ReplicaExchange, SourceState } from '../src/sources/source.js';
import { CLUSTER_TYPE, nodeGroup, ProxyStatusRegistry, SnapshotCache, type ProxyInfo } from '../src/xds/index.js';

const silent = pino({ level: 'silent' });

function vs(name: string, generation: number, port: number): RawObject {
  return {
    apiVersion: 'servicemesh.l7mp.io/v1',
    kind: 'VirtualService',
    metadata: { name, namespace: 'default', generation },
    spec: {
      selector: { app: 'ingress' },
      listeners: [{ name: `${name}-l`, udp: { port, cluster: { name: `${name}-c`, service_discovery: 'strictdns', endpoints: [{ host: { address: '127.0.0.1' }, port: 1 }] } } }],
    },
  };
}

class FakeExchange implements ReplicaExchange {
  readonly others = new Map<string, string>();
  private readonly subject = new Subject<void>();
  readonly peers$ = this.subject.asObservable();
  build?: () => string;
  readonly writes = 0;
  publish(build: () => string): void {
    this.build = build;
  }
  peers(): ReadonlyMap<string, string> {
    return this.others;
  }
}

const group = nodeGroup('default', { app: 'ingress' });

/** A replica: its own pipeline over the shared source state, its own proxies, its own reporter. */
function replica(state: BehaviorSubject<SourceState>) {
  const cache = new SnapshotCache();
  const pipeline = new ConfigPipeline({ source: { name: 'test', state$: state.asObservable(), start: async () => {}, stop: async () => {} }, cache, log: silent, coalesceMs: 2 ** 30 });
  cache.watch(group, () => {});
  pipeline.start();
  pipeline.rebuild();
  const registry = new ProxyStatusRegistry();
  const exchange = new FakeExchange();
  const reporter = new StatusReporter(pipeline, registry, undefined, silent, 2 ** 30, undefined, undefined, exchange);
  let streams = 0;
  const proxy = (synced = true): ProxyInfo => {
    const p: ProxyInfo = { streamId: ++streams, nodeId: `n${streams}`, mode: 'sotw', peer: 'test', types: new Map(), synced };
    registry.connected(p);
    registry.grouped(p, group);
    return p;
  };
  const status = (key: string) => reporter.current().get(key);
  const synced = (key: string) => status(key)?.conditions?.find((c) => c.type === 'Synced');
  return { pipeline, cache, registry, exchange, reporter, proxy, status, synced };
}

/** A leader and a follower over one source of call-1, and the follower's contribution handed to the leader as its ConfigMap would. */
function twoReplicas() {
  const state = new BehaviorSubject<SourceState>({ virtualServices: [vs('call-1', 1, 2000)], pods: [], synced: true, problems: [] });
  const leader = replica(state);
  const follower = replica(state);
  const handOver = () => {
    follower.reporter.report();
    leader.exchange.others.set('vsxds-replica-b', follower.exchange.build?.() as string);
    leader.reporter.report();
  };
  const stop = () => {
    leader.pipeline.stop();
    follower.pipeline.stop();
  };
  return { state, leader, follower, handOver, stop };
}

describe('replica counts', () => {
  it('the leader adds the follower’s proxies to its own, NACKs with their message included', () => {
    const { leader, follower, handOver, stop } = twoReplicas();
    leader.proxy();
    follower.proxy();
    follower.proxy();
    handOver();
    expect(leader.status('default/call-1')?.proxies).toEqual({ matched: 3, synced: 3, nacked: 0, summary: '3/3' });
    // The leader publishes its own proxies only: no replica counts another's twice.
    expect(parseContribution(leader.exchange.build?.() as string)).toMatchObject({ vs: new Map([['default/call-1', [1, 1, 1, 0]]]) });

    const nacking = follower.proxy(false);
    follower.registry.nack(nacking, CLUSTER_TYPE, 'v1', 'cluster call-1-c: bad');
    handOver();
    expect(leader.status('default/call-1')).toMatchObject({ proxies: { matched: 4, synced: 3, nacked: 1 }, nackMessage: 'cluster call-1-c: bad' });
    expect(leader.synced('default/call-1')).toMatchObject({ status: 'False', reason: 'Rejected', message: '1 of 4 proxies rejected the configuration: cluster call-1-c: bad' });

    // The follower no longer counts (gone, or not renewed): only the leader's proxy.
    leader.exchange.others.clear();
    leader.reporter.report();
    expect(leader.status('default/call-1')?.proxies).toEqual({ matched: 1, synced: 1, nacked: 0, summary: '1/1' });
    stop();
  });

  it('counts the follower’s proxies as matched and not synced for a VirtualService it has not reported on at this generation', () => {
    const { state, leader, follower, handOver, stop } = twoReplicas();
    leader.proxy();
    follower.proxy();
    handOver();

    // call-1 changes and call-2 is created; the leader sees both before the follower reported on them.
    state.next({ ...state.value, virtualServices: [vs('call-1', 2, 2004), vs('call-2', 1, 2002)] });
    leader.pipeline.rebuild();
    leader.reporter.report();
    for (const key of ['default/call-1', 'default/call-2']) {
      expect(leader.status(key)?.proxies, key).toEqual({ matched: 2, synced: 1, nacked: 0, summary: '1/2' });
      expect(leader.synced(key), key).toMatchObject({ status: 'False', reason: 'Pending' });
    }

    // The follower caught up: both Synced.
    follower.pipeline.rebuild();
    handOver();
    for (const key of ['default/call-1', 'default/call-2']) expect(leader.synced(key)?.status, key).toBe('True');
    stop();
  });

  it('ignores a contribution that does not parse, and counts the rest', () => {
    const { leader, stop } = twoReplicas();
    leader.proxy();
    for (const bad of ['{', '{"v":2}', '{"v":1,"groups":[],"messages":[],"vs":{"default/call-1":[1,1,5,0]}}', '{"v":1,"groups":[["default",{"app":1},3]],"messages":[],"vs":{}}']) {
      expect(typeof parseContribution(bad), bad).toBe('string');
      leader.exchange.others.set('vsxds-replica-bad', bad);
      leader.reporter.report();
      expect(leader.status('default/call-1')?.proxies, bad).toEqual({ matched: 1, synced: 1, nacked: 0, summary: '1/1' });
    }
    stop();
  });

  it('stays small at 2,000 VirtualServices and 100 node groups, and keeps only the groups past a ConfigMap’s size', () => {
    const tallies = new LocalTallies(silent);
    const proxies: ProxyInfo[] = [];
    for (let g = 0; g < 100; g++) {
      const p: ProxyInfo = { streamId: g, nodeId: `n${g}`, mode: 'sotw', peer: 'test', types: new Map(), synced: true, group: nodeGroup('media', { app: 'ingress', zone: `zone-${g}` }) };
      proxies.push(p);
    }
    for (let i = 0; i < 2_000; i++) tallies.set(`media/call-${String(i).padStart(8, '0')}-rtp`, 1, { matched: 3, synced: 3, nacked: 0 });
    const text = tallies.encode(proxies);
    // 2,000 entries and 100 groups: under a tenth of the 1 MiB a ConfigMap holds.
    expect(Buffer.byteLength(text)).toBeLessThan(100_000);
    const parsed = parseContribution(text);
    expect(typeof parsed === 'string' ? parsed : parsed.vs.size).toBe(2_000);

    for (let i = 0; i < 40_000; i++) tallies.set(`media/call-${String(i).padStart(8, '0')}-rtp`, 1, { matched: 3, synced: 3, nacked: 0 });
    const groupsOnly = parseContribution(tallies.encode(proxies));
    expect(typeof groupsOnly === 'string' ? groupsOnly : [groupsOnly.vs.size, groupsOnly.groups.length]).toEqual([0, 100]);
  });
});
