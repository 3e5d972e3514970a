/**
 * B3: translation at scale, through the real model → translate → Snapshot path.
 *
 *   node --expose-gc --import tsx bench/translate-scale.ts --vs 10000 [--shards 10] [--churn-seconds 10]
 *   [--profile-dir DIR, with node --enable-source-maps: CPU profiles of the cold build, the
 *   one-VirtualService changes and the churn]
 *
 * Prints one JSON object. The fleet: `--vs` VirtualServices in 10 namespaces, selecting
 * 10 × `--shards` ingress node groups (`--shards` per namespace, 10 by default: 100 groups);
 * each has an RTP and an RTCP listener whose EDS clusters select the same 5 worker pods, so
 * 10,000 VirtualServices make 20,000 listeners, 20,000 clusters and 100,000 endpoints (50,000
 * pods).
 *
 * The objects go through the store the Kubernetes source keeps (src/sources/object-store.ts:
 * one object set per informer event, a state with what changed) into the real ConfigPipeline
 * (parse, validate, translate, SnapshotCache.setSnapshot for what it decides to rebuild),
 * whose build is run with `rebuild()` right after the state instead of after the coalescing
 * timer. Every group has a watcher, as if proxies were connected.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { BehaviorSubject } from 'rxjs';
import { ConfigPipeline } from '../src/main/config-pipeline.js';
import { parsePod, type Pod } from '../src/model/index.js';
import { podKey } from '../src/model/types.js';
import { ObjectStore } from '../src/sources/object-store.js';
import type { RawObject, Source, SourceState } from '../src/sources/source.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, nodeGroup, SnapshotCache, type NodeGroup } from '../src/xds/index.js';
import { CpuProfiler } from './profiler.js';

const { values: args } = parseArgs({
  options: {
    vs: { type: 'string', default: '10000' },
    shards: { type: 'string', default: '10' },
    'churn-seconds': { type: 'string', default: '10' },
    'churn-rate': { type: 'string', default: '1000' },
    'coalesce-ms': { type: 'string', default: '100' },
    'change-reps': { type: 'string', default: '20' },
    'profile-dir': { type: 'string' },
  },
});

const VS_COUNT = Number(args.vs);
const NAMESPACES = 10;
const SHARDS = Number(args.shards);
const PODS_PER_VS = 5;
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});


const pad = (n: number): string => String(n).padStart(5, '0');
const vsName = (i: number): string => `vs-${pad(i)}`;
const namespaceOf = (i: number): string => `ns-${i % NAMESPACES}`;
const shardOf = (i: number): string => `s${Math.floor(i / NAMESPACES) % SHARDS}`;

function rawVirtualService(i: number, revision = 0): RawObject {
  const j = Math.floor(i / (NAMESPACES * SHARDS));
  const cluster = (kind: string, port: number): Record<string, unknown> => ({
    name: `${vsName(i)}-${kind}`,
    service_discovery: 'eds',
    hash_key: revision ? `callid-${revision}` : 'callid',
    health_check: { interval: 1000 + revision, protocol: 'TCP' },
    endpoints: [{ name: 'worker', host: { selector: { app: 'worker', vs: vsName(i) } }, port, health_check_port: 1233 }],
  });
  return {
    apiVersion: 'servicemesh.l7mp.io/v1',
    kind: 'VirtualService',
    metadata: {
      name: vsName(i),
      namespace: namespaceOf(i),
      uid: `uid-${i}`,
      generation: 1 + revision,
      creationTimestamp: new Date(Date.UTC(2024, 0, 1) + i * 1000).toISOString(),
    },
    spec: {
      selector: { app: 'ingress', shard: shardOf(i) },
      listeners: [
        { name: `${vsName(i)}-rtp`, udp: { port: 10000 + 2 * j, cluster: cluster('rtp', 2001) } },
        { name: `${vsName(i)}-rtcp`, udp: { port: 10001 + 2 * j, cluster: cluster('rtcp', 2003) } },
      ],
    },
  };
}

let nextIp = 0;
function freshIp(): string {
  const n = nextIp++;
  return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
}

function pod(i: number, p: number, incarnation = 0): Pod {
  const parsed = parsePod({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `worker-${pad(i)}-${p}-${incarnation}`, namespace: namespaceOf(i), uid: `pod-${i}-${p}-${incarnation}`, labels: { app: 'worker', vs: vsName(i) } },
    status: { podIP: freshIp(), conditions: [{ type: 'Ready', status: 'True' }] },
  });
  if (!parsed.ok) throw new Error(parsed.message);
  return parsed.pod;
}

const groups: NodeGroup[] = [];
for (let n = 0; n < NAMESPACES; n++) for (let s = 0; s < SHARDS; s++) groups.push(nodeGroup(`ns-${n}`, { app: 'ingress', shard: `s${s}` }));

// The real pipeline, fed through the Kubernetes source's store and built synchronously: its
// build is what the coalescing window triggers, without the window's timer in the measurement.
const store = new ObjectStore();
const states = new BehaviorSubject<SourceState>({ virtualServices: [], pods: [], synced: false, problems: [] });
const source: Source = { name: 'bench', state$: states.asObservable(), start: async () => {}, stop: async () => {} };
const cache = new SnapshotCache();
// A group is built only while some proxy watches it.
for (const group of groups) cache.watch(group, () => {});
// The window never ends on its own: every build below is an explicit rebuild().
const pipeline = new ConfigPipeline({ source, cache, log: pino({ level: 'silent' }), coalesceMs: 2 ** 30 });
pipeline.start();

// setSnapshot (Snapshot.build, then notifying the group's watchers), timed and counted.
let snapshotMs = 0;
let groupsBuilt = 0;
const setSnapshot = cache.setSnapshot.bind(cache);
cache.setSnapshot = (key, input) => {
  const t = performance.now();
  try {
    return setSnapshot(key, input);
  } finally {
    snapshotMs += performance.now() - t;
    groupsBuilt++;
  }
};

interface BuildTimes {
  totalMs: number;
  snapshotMs: number;
  groups: number;
}

/** Takes the store's state (what changed since the last) and builds from it. */
function build(): BuildTimes {
  snapshotMs = 0;
  groupsBuilt = 0;
  const t0 = performance.now();
  states.next(store.state(true));
  pipeline.rebuild();
  return { totalMs: performance.now() - t0, snapshotMs, groups: groupsBuilt };
}

function resourceCounts(): { listeners: number; clusters: number; assignments: number } {
  const count = (typeUrl: string): number => groups.reduce((n, g) => n + (cache.getSnapshot(g.key)?.resources(typeUrl).names.length ?? 0), 0);
  return { listeners: count(LISTENER_TYPE), clusters: count(CLUSTER_TYPE), assignments: count(ENDPOINT_TYPE) };
}

function memory(): { heapMB: number; rssMB: number } {
  gc();
  gc();
  const m = process.memoryUsage();
  return { heapMB: m.heapUsed / 2 ** 20, rssMB: m.rss / 2 ** 20 };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const p99 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * 0.99) - 1)] ?? 0;
const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;

const profiler = new CpuProfiler();
async function profileStart(): Promise<void> {
  if (args['profile-dir']) await profiler.start();
}
async function profileStop(name: string): Promise<void> {
  if (args['profile-dir']) await profiler.stop(path.join(args['profile-dir'], `b3-${VS_COUNT}-${name}.cpuprofile`));
}

for (let i = 0; i < VS_COUNT; i++) store.setVirtualService(`${namespaceOf(i)}/${vsName(i)}`, rawVirtualService(i));
const pods: Pod[] = [];
for (let i = 0; i < VS_COUNT; i++) for (let p = 0; p < PODS_PER_VS; p++) pods.push(pod(i, p));
for (const p of pods) store.setPod(podKey(p), p);
const before = memory();

// Cold: nothing memoized yet, every group built.
await profileStart();
const cold = build();
await profileStop('cold');
const afterCold = memory();
const resources = resourceCounts();

// One VirtualService changes (its hash key and health-check interval: a listener and a
// cluster), over and over, a different one each time.
const reps = Number(args['change-reps']);
const changes: BuildTimes[] = [];
await profileStart();
for (let r = 1; r <= reps; r++) {
  const i = (r * 7919) % VS_COUNT;
  store.setVirtualService(`${namespaceOf(i)}/${vsName(i)}`, rawVirtualService(i, r));
  changes.push(build());
}
await profileStop('change');

// Pod churn: pods are replaced (a new pod with a new IP takes an old one's place) at
// `churn-rate` per second; like the pipeline, changes within `coalesce-ms` are built together.
const churnSeconds = Number(args['churn-seconds']);
const rate = Number(args['churn-rate']);
const tick = Number(args['coalesce-ms']);
const churnBuilds: BuildTimes[] = [];
let replaced = 0;
let incarnation = 1;
let cursor = 0;
await profileStart();
const cpu0 = process.cpuUsage();
const start = performance.now();
while (performance.now() - start < churnSeconds * 1000) {
  const tickStart = performance.now();
  const due = Math.floor(((tickStart - start) / 1000) * rate);
  if (due > replaced) {
    for (; replaced < due; replaced++) {
      const slot = cursor++ % pods.length;
      const old = pods[slot] as Pod;
      const fresh = pod(Number(old.labels['vs']?.slice(3)), slot % PODS_PER_VS, incarnation++);
      pods[slot] = fresh;
      // A replacement is two informer events: the old pod deleted, the new one added.
      store.setPod(podKey(old), undefined);
      store.setPod(podKey(fresh), fresh);
    }
    churnBuilds.push(build());
  }
  const left = tick - (performance.now() - tickStart);
  if (left > 0) await new Promise((r) => setTimeout(r, left));
}
const wallS = (performance.now() - start) / 1000;
const cpu = process.cpuUsage(cpu0);
await profileStop('churn');
const afterAll = memory();
pipeline.stop();

const summarize = (xs: BuildTimes[]) => ({
  medianMs: round(median(xs.map((x) => x.totalMs)), 2),
  p99Ms: round(p99(xs.map((x) => x.totalMs)), 2),
  snapshotMs: round(median(xs.map((x) => x.snapshotMs)), 2),
  groupsRebuilt: median(xs.map((x) => x.groups)),
});

console.log(
  JSON.stringify({
    virtualServices: VS_COUNT,
    groups: groups.length,
    virtualServicesPerGroup: VS_COUNT / groups.length,
    pods: pods.length,
    resources: { ...resources, endpoints: resources.assignments * PODS_PER_VS },
    cold: {
      totalMs: round(cold.totalMs),
      snapshotMs: round(cold.snapshotMs),
      heapMB: round(afterCold.heapMB - before.heapMB),
      rssMB: round(afterCold.rssMB - before.rssMB),
    },
    changeOne: summarize(changes),
    churn: {
      targetPodsPerSecond: rate,
      builds: churnBuilds.length,
      ...summarize(churnBuilds),
      cpuShareOfOneCore: round((cpu.user + cpu.system) / 1e6 / wallS, 3),
    },
    heapAfterMB: round(afterAll.heapMB),
    peakRssMB: round(process.resourceUsage().maxRSS / 1024),
  }),
);
