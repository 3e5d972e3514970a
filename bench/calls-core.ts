/**
 * B5 core: what one call costs vsxds's own logic, without the API server, gRPC or Envoy. The
 * per-call VirtualServices of B5 (test/support/calls.ts: one UDP listener, an EDS cluster of the
 * workers, hash key = the call) go through the Kubernetes source's ObjectStore into the real
 * ConfigPipeline (parse, validate, translate, Snapshot.build, with the ChangeTracker wired as
 * `serve` wires it), and one proxy's ADS stream (SotW or delta, on an in-memory call) receives
 * every push and ACKs it. Each call is created, built and pushed and ACKed, then an older one is
 * deleted the same way, so the group holds --concurrent calls throughout. CPU time of this one
 * process (all threads: collection and compilation included), per call created and deleted.
 *
 *   node --expose-gc bench/.build/bench/calls-core.js [--mode delta] [--concurrent 1000] [--calls 2000] [--profile out.cpuprofile]
 *
 * The status reporter (src/main/status-reporter.ts) reports twice per call, timed on its own and
 * left out of the CPU per call: once while the proxy has the new call's push in flight, once when
 * it is in step again. (In the server it reports once per window, 250 ms: about 12 calls at 50
 * calls/s.)
 *
 * Prints one JSON object. What it leaves out, B5 has: the watch events' JSON and TLS, status
 * writes, gRPC framing, and the status reporter's window.
 */
import { EventEmitter } from 'node:events';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { BehaviorSubject } from 'rxjs';
import { ChangeTracker } from '../src/main/change-tracker.js';
import { ConfigPipeline } from '../src/main/config-pipeline.js';
import { StatusReporter } from '../src/main/status-reporter.js';
import { parsePod } from '../src/model/index.js';
import { ObjectStore } from '../src/sources/object-store.js';
import type { RawObject, Source, SourceState } from '../src/sources/source.js';
import { DeltaStream } from '../src/xds/delta-stream.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, nodeGroup, ProxyStatusRegistry, SnapshotCache } from '../src/xds/index.js';
import { SotwStream } from '../src/xds/sotw-stream.js';
import { DEFAULT_LIMITS, streamLimits } from '../src/xds/ads-server.js';
import { callVirtualService } from '../test/support/calls.js';
import { CpuProfiler } from './profiler.js';
import { scanResponse } from './response-scan.js';

const { values: args } = parseArgs({
  options: {
    mode: { type: 'string', default: 'delta' },
    concurrent: { type: 'string', default: '1000' },
    calls: { type: 'string', default: '2000' },
    /** Calls set up and torn down before measuring, so that the code measured is warm, as in a long-running server. */
    warmup: { type: 'string', default: '500' },
    profile: { type: 'string' },
  },
});
const DELTA = args.mode === 'delta';
const CONCURRENT = Number(args.concurrent);
const CALLS = Number(args.calls);
const WARMUP = Number(args.warmup);
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

const PROXY_LABELS = { app: 'envoy-ingress' };
const WORKER_LABELS = { app: 'worker' };

function pod(name: string, ip: string, labels: Record<string, string>) {
  const parsed = parsePod({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default', uid: `uid-${name}`, labels }, status: { podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] } });
  if (!parsed.ok) throw new Error(parsed.message);
  return parsed.pod;
}

let created = 0;
/** The VirtualService of call i, as the API server would hand it over (uid, generation, creation time). */
function call(i: number): RawObject {
  const o = callVirtualService(`call-${i}`, 20_000 + (i % 40_000), { proxySelector: PROXY_LABELS, workerSelector: WORKER_LABELS, sinkPort: 2001, healthPort: 1233 }) as {
    metadata: Record<string, unknown>;
  };
  o.metadata['uid'] = `uid-call-${i}`;
  o.metadata['generation'] = 1;
  o.metadata['creationTimestamp'] = new Date(Date.UTC(2026, 0, 1) + created++ * 1000).toISOString();
  return o as unknown as RawObject;
}

// The pipeline as `serve` wires it, fed by the Kubernetes source's store; every build is an
// explicit rebuild() right after the change, instead of after the coalescing timer.
const store = new ObjectStore();
const states = new BehaviorSubject<SourceState>({ virtualServices: [], pods: [], synced: false, problems: [] });
const source: Source = { name: 'bench', state$: states.asObservable(), start: async () => {}, stop: async () => {} } as unknown as Source;
const cache = new SnapshotCache();
const registry = new ProxyStatusRegistry();
const tracker = new ChangeTracker();
registry.tracer = tracker;
const pipeline = new ConfigPipeline({ source, cache, log: pino({ level: 'silent' }), coalesceMs: 2 ** 30, tracker: { tracker, registry } });
pipeline.start();
for (const [i, ip] of ['127.0.0.2', '127.0.0.3', '127.0.0.4'].entries()) store.setPod(`default/worker-${i}`, pod(`worker-${i}`, ip, WORKER_LABELS));
store.setPod('default/envoy-ingress', pod('envoy-ingress', '127.0.0.1', PROXY_LABELS));

function build(): void {
  states.next(store.state(true));
  pipeline.rebuild();
}

/** What grpc-js hands a stream: an emitter of requests that responses are written to. */
class MemoryCall extends EventEmitter {
  readonly out: Buffer[] = [];
  getPeer(): string {
    return 'memory';
  }
  write(buf: Buffer): boolean {
    this.out.push(buf);
    return true;
  }
  end(): void {}
}

// The stream context as the ADS server makes it, with its default limits (no request rate limit here).
const ctx = { cache, status: registry, log: pino({ level: 'silent' }), nodeAuth: 'none', ...streamLimits(DEFAULT_LIMITS), maxRequestsPerSecond: 0, onClose: () => {} };
const proxy = new MemoryCall();
if (DELTA) new DeltaStream(proxy as never, ctx as never, 'delta');
else new SotwStream(proxy as never, ctx as never, 'sotw');
const node = { id: 'default/envoy-ingress', cluster: 'ingress', metadata: { namespace: 'default', labels: PROXY_LABELS } };
let edsNames: string[] = [];
let responses = 0;
let bytes = 0;

function request(typeUrl: string, o: { node?: boolean; names?: string[]; version?: string; nonce?: string } = {}): void {
  proxy.emit(
    'data',
    DELTA
      ? { node: o.node ? node : undefined, typeUrl, subscribe: o.names ?? [], unsubscribe: [], initialResourceVersions: {}, responseNonce: o.nonce ?? '' }
      : { node: o.node ? node : undefined, typeUrl, versionInfo: o.version ?? '', resourceNames: o.names ?? [], responseNonce: o.nonce ?? '' },
  );
}

/** ACKs every response written, and those the ACKs cause, until all is quiet. */
function ackAll(): void {
  while (proxy.out.length > 0) {
    for (const buf of proxy.out.splice(0)) {
      responses++;
      bytes += buf.length;
      const r = scanResponse(buf);
      request(r.typeUrl, { version: r.version, nonce: r.nonce, names: r.typeUrl === ENDPOINT_TYPE && !DELTA ? edsNames : undefined });
    }
  }
}

// Connect as Envoy does (CDS with the node, EDS for the clusters, then LDS) with the first calls in place.
let next = 0;
for (; next < CONCURRENT; next++) store.setVirtualService(`default/call-${next}`, call(next));
request(CLUSTER_TYPE, { node: true });
build();
ackAll();
edsNames = [...(cache.getSnapshot(nodeGroup('default', PROXY_LABELS).key)?.resources(ENDPOINT_TYPE).names ?? [])];
request(ENDPOINT_TYPE, { names: edsNames });
ackAll();
request(LISTENER_TYPE);
ackAll();
const listenersAtStart = cache.getSnapshot(nodeGroup('default', PROXY_LABELS).key)?.resources(LISTENER_TYPE).names.length ?? 0;
if (listenersAtStart !== CONCURRENT) throw new Error(`the proxy's group has ${listenersAtStart} listeners, not ${CONCURRENT}`);

// Statuses computed as the leader does, not written anywhere.
const reporter = new StatusReporter(pipeline, registry, undefined, pino({ level: 'silent' }));
reporter.report();
if (reporter.current().size !== CONCURRENT) throw new Error(`${reporter.current().size} statuses for ${CONCURRENT} VirtualServices`);
const reports: number[] = [];
let reportCpu = 0;
/** One status report, timed. */
function report(): void {
  const c = cpuMs();
  const t = performance.now();
  reporter.report();
  reports.push(performance.now() - t);
  reportCpu += cpuMs() - c;
}

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** One call set up (created, built, pushed, ACKed) and the oldest one torn down the same way. */
function churn(phases: { build: number; ack: number }): void {
  const a = cpuMs();
  store.setVirtualService(`default/call-${next}`, call(next));
  next++;
  build();
  const b = cpuMs();
  report();
  const b2 = cpuMs();
  ackAll();
  const c = cpuMs();
  store.setVirtualService(`default/call-${next - CONCURRENT - 1}`, undefined);
  build();
  const d = cpuMs();
  ackAll();
  phases.build += b - a + (d - c);
  phases.ack += c - b2 + (cpuMs() - d);
  report();
}

/** Between calls the event loop turns, as in the server: objects held for the duration of a job (WeakRef targets among them) are let go. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const ignored = { build: 0, ack: 0 };
for (let i = 0; i < WARMUP; i++) {
  churn(ignored);
  await turn();
}
gc();
responses = 0;
bytes = 0;
reports.length = 0;
reportCpu = 0;
const profiler = args.profile ? new CpuProfiler() : undefined;
await profiler?.start();
const phases = { build: 0, ack: 0 };
const cpu0 = cpuMs();
const wall0 = performance.now();
const heapAt = (): number => {
  gc();
  return process.memoryUsage().heapUsed / 2 ** 20;
};
let heapHalfway = 0;
for (let i = 0; i < CALLS; i++) {
  churn(phases);
  await turn();
  if (i === Math.floor(CALLS / 2)) heapHalfway = heapAt();
}
const cpu = cpuMs() - cpu0 - reportCpu;
const pending = [...reporter.current().values()].filter((st) => st.conditions?.find((c) => c.type === 'Synced')?.status !== 'True').length;
if (reporter.current().size !== CONCURRENT || pending !== 0) throw new Error(`${reporter.current().size} statuses for ${CONCURRENT} VirtualServices, ${pending} not Synced`);
reports.sort((x, y) => x - y);
const reportAt = (q: number): number => reports[Math.min(reports.length - 1, Math.floor(q * reports.length))] ?? NaN;
const wall = performance.now() - wall0;
if (profiler && args.profile) await profiler.stop(args.profile);
const listenersAtEnd = cache.getSnapshot(nodeGroup('default', PROXY_LABELS).key)?.resources(LISTENER_TYPE).names.length ?? 0;
if (listenersAtEnd !== CONCURRENT) throw new Error(`the proxy's group ended with ${listenersAtEnd} listeners, not ${CONCURRENT}`);
if (responses < 2 * CALLS) throw new Error(`${responses} responses for ${CALLS} calls: the proxy was not sent every change`);

console.log(
  JSON.stringify({
    mode: DELTA ? 'delta' : 'sotw',
    concurrent: CONCURRENT,
    calls: CALLS,
    cpuMsPerCall: cpu / CALLS,
    /** Main thread only, split: the change built and pushed; the proxy's ACKs handled. */
    buildAndPushMsPerCall: phases.build / CALLS,
    ackMsPerCall: phases.ack / CALLS,
    wallMsPerCall: wall / CALLS,
    /** One status report of every VirtualService (wall ms; two per call, see the header). */
    statusReportMs: { p50: reportAt(0.5), p99: reportAt(0.99) },
    responsesPerCall: responses / CALLS,
    bytesPerCall: bytes / CALLS,
    /** After a full collection, halfway and at the end: what stays per call would show as growth. */
    heapMB: { halfway: heapHalfway, end: heapAt() },
  }),
);
process.exit(0);
