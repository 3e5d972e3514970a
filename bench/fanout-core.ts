/**
 * vsxds's own share of a fan-out, without gRPC and sockets: N SotW or delta ADS streams on
 * in-memory calls, driven the way the load generator drives real ones (CDS, then EDS for the
 * group's clusters, then LDS; every response ACKed). What remains is the stream logic (pump,
 * candidates, diffs, retained resources, status bookkeeping) and the snapshot build, measured
 * in CPU time of this one thread, so it can be compared before and after a change to src/xds
 * on a machine that is busy with other work, where the end-to-end latencies of B1 are not.
 *
 *   node --expose-gc --import tsx bench/fanout-core.ts [--clients 10000] [--mode sotw|delta] [--reps 7]
 *     [--scopes one,all,noop] [--one-reps 41] [--profile out.cpuprofile]
 *
 * Prints one JSON object: CPU ms per phase (median over repetitions): build (Snapshot.build of
 * the changed groups from their current snapshots, as SnapshotCache.setSnapshot builds), push
 * (setSnapshot: every stream of those groups pumps and writes), ack
 * (the streams handle the ACKs); and the heap each stream holds. Phases are given to 0.01 ms:
 * the one-group change is a fraction of a millisecond, and it is repeated --one-reps times.
 * --profile samples the measured changes (add --enable-source-maps for TypeScript positions;
 * summarize with bench/profile-summary.ts); the sampler's overhead is in the figures then.
 */
import { EventEmitter } from 'node:events';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { DeltaStream } from '../src/xds/delta-stream.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ProxyStatusRegistry, Snapshot, SnapshotCache, type SnapshotInput } from '../src/xds/index.js';
import { SotwStream } from '../src/xds/sotw-stream.js';
import { DEFAULT_LIMITS, streamLimits } from '../src/xds/ads-server.js';
import { CpuProfiler } from './profiler.js';
import { scanResponse as scan } from './response-scan.js';
import { clusterName, GroupResources, groupKey, groupName, NAMESPACE, type Shape } from './fleet.js';

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: '10000' },
    mode: { type: 'string', default: 'sotw' },
    reps: { type: 'string', default: '7' },
    /** Repetitions of the one-group change, which takes well under a millisecond: more of them for a stable median. */
    'one-reps': { type: 'string', default: '41' },
    /** Write a CPU profile of the measured changes (not of connecting) to this .cpuprofile file. */
    profile: { type: 'string' },
    scopes: { type: 'string', default: 'one,all,noop' },
  },
});
const N = Number(args.clients);
const DELTA = args.mode === 'delta';
const REPS = Number(args.reps);
const ONE_REPS = Number(args['one-reps']);
const shape: Shape = { groups: 100, clustersPerGroup: 10, endpointsPerCluster: 5 };
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

/** What grpc-js hands a stream: an emitter of requests that responses are written to. */
class MemoryCall extends EventEmitter {
  constructor(
    private readonly sink: Array<[FakeEnvoy, Buffer]>,
    readonly envoy: FakeEnvoy,
  ) {
    super();
  }
  getPeer(): string {
    return 'memory';
  }
  write(buf: Buffer): boolean {
    this.sink.push([this.envoy, buf]);
    return true;
  }
  end(): void {}
}

class FakeEnvoy {
  readonly call: MemoryCall;
  readonly names: string[];
  synced = false;
  constructor(
    readonly index: number,
    readonly group: number,
    sink: Array<[FakeEnvoy, Buffer]>,
  ) {
    this.call = new MemoryCall(sink, this);
    this.names = [...Array(shape.clustersPerGroup).keys()].map((k) => clusterName(group, k));
  }

  request(typeUrl: string, opts: { names?: string[]; version?: string; nonce?: string; node?: boolean } = {}): void {
    const node = opts.node
      ? { id: `${NAMESPACE}/${groupName(this.group)}-proxy-${this.index}`, cluster: 'bench', metadata: { namespace: NAMESPACE, labels: { app: 'ingress', group: groupName(this.group) } } }
      : undefined;
    const req = DELTA
      ? { node, typeUrl, subscribe: opts.names ?? [], unsubscribe: [], initialResourceVersions: {}, responseNonce: opts.nonce ?? '' }
      : { node, typeUrl, versionInfo: opts.version ?? '', resourceNames: opts.names ?? [], responseNonce: opts.nonce ?? '' };
    this.call.emit('data', req);
  }

  /** ACK, and subscribe to the next type while connecting, as Envoy does. */
  receive(buf: Buffer): void {
    const r = scan(buf);
    this.request(r.typeUrl, { version: r.version, nonce: r.nonce, names: r.typeUrl === ENDPOINT_TYPE && !DELTA ? this.names : undefined });
    if (this.synced) return;
    if (r.typeUrl === CLUSTER_TYPE) this.request(ENDPOINT_TYPE, { names: this.names });
    else if (r.typeUrl === ENDPOINT_TYPE) this.request(LISTENER_TYPE);
    else if (r.typeUrl === LISTENER_TYPE) this.synced = true;
  }
}

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

const cache = new SnapshotCache();
const groups = [...Array(shape.groups).keys()].map((g) => new GroupResources(shape, g));
for (const gr of groups) cache.setSnapshot(groupKey(gr.g), gr.input());
cache.markReady();
// The stream context is internal to src/xds and still changing: fields it gains take their
// defaults here (0 = no request rate limit), and a missing one fails this bench, not the build.
type StreamContext = ConstructorParameters<typeof SotwStream>[1];
const ctx = {
  cache,
  status: new ProxyStatusRegistry(),
  log: pino({ level: 'silent' }),
  nodeAuth: 'none',
  ...streamLimits(DEFAULT_LIMITS),
  maxRequestsPerSecond: 0,
  onClose: () => {},
} as unknown as StreamContext;

const sink: Array<[FakeEnvoy, Buffer]> = [];
let bytes = 0;
let responses = 0;
/** Delivers every response written so far, and those its ACKs cause, until all is quiet. */
function drain(): void {
  for (let i = 0; i < sink.length; i++) {
    const [envoy, buf] = sink[i] as [FakeEnvoy, Buffer];
    bytes += buf.length;
    responses++;
    envoy.receive(buf);
  }
  sink.length = 0;
}

gc();
const heap0 = process.memoryUsage().heapUsed;
const connectCpu0 = cpuMs();
const envoys: FakeEnvoy[] = [];
for (let i = 0; i < N; i++) {
  const envoy = new FakeEnvoy(i, i % shape.groups, sink);
  envoys.push(envoy);
  if (DELTA) new DeltaStream(envoy.call as never, ctx, 'delta');
  else new SotwStream(envoy.call as never, ctx, 'sotw');
  envoy.request(CLUSTER_TYPE, { node: true });
}
drain();
const connectMs = cpuMs() - connectCpu0;
if (envoys.some((e) => !e.synced)) throw new Error(`${envoys.filter((e) => !e.synced).length} streams did not sync`);
gc();
const heapPerStreamKB = (process.memoryUsage().heapUsed - heap0) / N / 1024;

interface Phase {
  buildMs: number;
  pushMs: number;
  ackMs: number;
  responses: number;
  bytes: number;
}

let gen = 1;
function change(scope: 'one' | 'all' | 'noop'): Phase {
  const affected = scope === 'one' ? groups.slice(0, 1) : groups;
  const inputs = affected.map((gr) => {
    if (scope !== 'noop') gr.change(gen);
    return gr.input();
  });
  gen++;
  responses = 0;
  bytes = 0;
  let buildMs = 0;
  let pushMs = 0;
  for (let i = 0; i < affected.length; i++) {
    const gr = affected[i] as GroupResources;
    const a = cpuMs();
    // As setSnapshot builds it: from the group's current snapshot, whose unchanged sets it keeps.
    const snapshot = Snapshot.build(inputs[i] as SnapshotInput, cache.getSnapshot(groupKey(gr.g)));
    const b = cpuMs();
    // Every stream of the group is notified and writes its response synchronously.
    cache.setSnapshot(groupKey(gr.g), snapshot);
    buildMs += b - a;
    pushMs += cpuMs() - b;
  }
  const t1 = cpuMs();
  drain();
  const ackMs = cpuMs() - t1;
  return { buildMs, pushMs, ackMs, responses, bytes };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? NaN;
const round2 = (x: number): number => Math.round(x * 100) / 100;
const summarize = (ps: Phase[]) => ({
  buildMs: round2(median(ps.map((p) => p.buildMs))),
  pushMs: round2(median(ps.map((p) => p.pushMs))),
  ackMs: round2(median(ps.map((p) => p.ackMs))),
  totalMs: round2(median(ps.map((p) => p.buildMs + p.pushMs + p.ackMs))),
  minTotalMs: round2(Math.min(...ps.map((p) => p.buildMs + p.pushMs + p.ackMs))),
  perResponseUs: Math.round((median(ps.map((p) => p.pushMs + p.ackMs)) * 1000) / Math.max(1, ps[0]?.responses ?? 1)),
  responses: ps[0]?.responses ?? 0,
  bytes: ps[0]?.bytes ?? 0,
});

const scopes = args.scopes.split(',') as Array<'one' | 'all' | 'noop'>;
// One unmeasured change of each kind first, so no scope pays for the others' first compilation.
for (const scope of scopes) change(scope);
const profiler = new CpuProfiler();
if (args.profile) await profiler.start();
const results: Record<string, ReturnType<typeof summarize>> = {};
for (const scope of scopes) {
  const phases: Phase[] = [];
  const reps = scope === 'one' ? ONE_REPS : REPS;
  for (let r = 0; r < reps; r++) phases.push(change(scope));
  results[scope] = summarize(phases);
}

if (args.profile) await profiler.stop(args.profile);
console.log(JSON.stringify({ mode: args.mode, clients: N, connectCpuMs: Math.round(connectMs), heapPerStreamKB: Math.round(heapPerStreamKB * 10) / 10, ...results }));
