/**
 * B5 "calls": the calls-at-scale workload through real components, as a user runs them.
 *
 * A real etcd + kube-apiserver (test/support/kube-env.ts), vsxds as a process of its own from
 * its CLI (`node dist/main/cli.js serve --source kubernetes`, default flags except its ports),
 * one real ingress Envoy (node metadata namespace default, labels app=envoy-ingress, flags
 * ENVOY_FLAGS), three worker pods (127.0.0.2-4, app=worker, Ready through the status
 * subresource) whose UDP sinks on <ip>:2001 and TCP health ports on <ip>:1233 this process
 * serves, and the calls of test/support/calls.ts: one VirtualService per call, created and
 * deleted through the API with @kubernetes/client-node.
 *
 * Scenarios, per ADS mode: one call at a time, then arrivals at a fixed rate with a fixed
 * lifetime. Each scenario gets a fresh vsxds and Envoy; the API server is shared.
 *
 * Prints one JSON object on stdout (bench/run.ts makes the table); progress goes to stderr.
 * Runs under tsx (bench/run.ts starts it with `node --import tsx`): it is the rig, and what it
 * measures (vsxds) runs as tsc output from dist/.
 *
 *   --quick                    a short subset
 *   --modes sotw,delta         ADS modes (Envoy api_type GRPC, DELTA_GRPC)
 *   --sequential 30            calls in the one-at-a-time scenario (0: skip it)
 *   --rates 10,50,100          arrival rates (calls/s)
 *   --lifetime-s 20            lifetime of a call in the rate scenarios
 *   --arrivals-s 30            how long calls arrive in the rate scenarios
 *   --warmup-s 30              before a rate scenario is measured, calls arrive at its rate for
 *                              this long (each living 5 s): a server runs warm, and a fresh
 *                              process spends its first few hundred calls compiling (0: none)
 *   --envoy-flags=...          Envoy flags instead of ENVOY_FLAGS, split at spaces and commas
 *                              (e.g. --envoy-flags=--drain-time-s,1; "" for none)
 *   --envoy-concurrency 2      Envoy's worker threads (2: its default on this machine)
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { CallLoad, now, ownFirstAt, PortPool, quantile, runArrivals, runSequential, summarize, WorkerSinks, type CallPlan, type CallSummary } from '../test/support/calls.js';
import { EVENT_LOOP_SAMPLE_S } from '../src/admin/metrics.js';
import { breakdown, type Breakdown } from './calls-breakdown.js';
import { UdpDropMonitor, type UdpDrops } from './udp-drops.js';
import { ChangeLog, childPids, cpuSeconds, deleteAllVirtualServices, HEALTH_PORT, kubeGet, PROXY_LABELS, SINK_PORT, sleep, startVsxds, sumMetric, WORKER_LABELS, WORKERS } from './calls-rig.js';
import { adsBootstrap, ensureEnvoy, INGRESS_ENVOY_FLAGS, parseStats, startEnvoy, type AdsApiType, type Envoy } from '../test/support/envoy.js';
import { startKubeEnv, type KubeEnv } from '../test/support/kube-env.js';
import { freePorts } from '../test/support/udp.js';
import { installCrd, readyPod } from '../test/support/vsxds-kube.js';

/** The Envoy flags the README recommends for the ingress (test/support/envoy.ts INGRESS_ENVOY_FLAGS). */
export const ENVOY_FLAGS: readonly string[] = INGRESS_ENVOY_FLAGS;

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    modes: { type: 'string' },
    sequential: { type: 'string' },
    rates: { type: 'string' },
    'lifetime-s': { type: 'string' },
    'arrivals-s': { type: 'string' },
    'warmup-s': { type: 'string' },
    'envoy-flags': { type: 'string' },
    'envoy-concurrency': { type: 'string' },
  },
});
const QUICK = args.quick === true;
const MODES = (args.modes ?? 'sotw,delta').split(',') as Array<'sotw' | 'delta'>;
const SEQUENTIAL = Number(args.sequential ?? (QUICK ? 10 : 30));
const RATES = (args.rates ?? (QUICK ? '10,50' : '10,50,100')).split(',').filter(Boolean).map(Number);
const LIFETIME_S = Number(args['lifetime-s'] ?? (QUICK ? 5 : 20));
const ARRIVALS_S = Number(args['arrivals-s'] ?? (QUICK ? 10 : 30));
const WARMUP_S = Number(args['warmup-s'] ?? (QUICK ? 5 : 30));
const WARMUP_LIFETIME_S = 5;
/** Seconds of idleness over which vsxds's CPU with no calls is measured before each scenario. */
const IDLE_S = QUICK ? 3 : 10;
const IDLE_SETTLE_S = QUICK ? 2 : 5;
/** Envoy's own default is one worker per core; the rig says so explicitly (startEnvoy defaults to 1). */
const ENVOY_CONCURRENCY = Number(args['envoy-concurrency'] ?? 2);
const EXTRA_FLAGS = args['envoy-flags'] !== undefined ? args['envoy-flags'].split(/[\s,]+/).filter(Boolean) : ENVOY_FLAGS;

function log(msg: string): void {
  process.stderr.write(`[B5 ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------
// API writes

interface ApiWrites {
  /** VirtualService status subresource writes (PUT/PATCH). */
  status: number;
  /** Event writes (core and events.k8s.io; POST/PUT/PATCH). */
  events: number;
  /** Lease writes (leader election; the API server's own leases too). */
  leases: number;
  /** The rig's own VirtualService creates and deletes. */
  rig: number;
  /** Every other write. */
  other: number;
}

/** Write requests the API server counted (apiserver_request_total), by what they wrote. */
async function apiWrites(kube: KubeEnv): Promise<ApiWrites> {
  const text = await kubeGet(kube, '/metrics');
  const w: ApiWrites = { status: 0, events: 0, leases: 0, rig: 0, other: 0 };
  for (const line of text.split('\n')) {
    const m = /^apiserver_request_total\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[1] as string).matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    const verb = labels['verb'] ?? '';
    if (!['POST', 'PUT', 'PATCH', 'DELETE', 'DELETECOLLECTION', 'APPLY'].includes(verb)) continue;
    const n = Number(m[2]);
    const resource = labels['resource'] ?? '';
    const sub = labels['subresource'] ?? '';
    if (resource === 'virtualservices' && sub === 'status') w.status += n;
    else if (resource === 'virtualservices' && (verb === 'POST' || verb === 'DELETE')) w.rig += n;
    else if (resource === 'events') w.events += n;
    else if (resource === 'leases') w.leases += n;
    else w.other += n;
  }
  return w;
}

// ---------------------------------------------------------------------------------------------
// Scenarios

export interface ScenarioResult {
  name: string;
  mode: 'sotw' | 'delta';
  rate: number | null;
  lifetimeS: number | null;
  arrivalsS: number | null;
  envoyFlags: string[];
  summary: CallSummary;
  wallS: number;
  cpuS: { vsxds: number; envoy: number; rig: number; kube: number };
  /** CPU ms per call set up and torn down. */
  cpuMsPerCall: { vsxds: number; envoy: number; rig: number; kube: number };
  /** vsxds CPU per call during the warm-up: the first calls of a fresh process. */
  cold: { calls: number; vsxdsMsPerCall: number } | null;
  /** vsxds CPU ms per second while idle (Envoy connected, no calls) before the scenario. */
  idleMsPerS: number;
  /** The rig's event-loop delay over the scenario (ms): how late its timers ran and its sinks read datagrams, so how much of a setup or a late datagram the rig's own backlog may be. */
  rigLoopDelayMs: { p50: number; p99: number; max: number };
  /** Datagrams the kernel dropped for want of receive buffer over the scenario, in all and by socket (udp-drops.ts). */
  udpDrops: UdpDrops;
  adsBytesPerCall: number;
  apiWrites: ApiWrites;
  apiWritesPerCall: { status: number; events: number; leases: number; other: number };
  /** vsxds_kube_writes_total per call, when vsxds exposes it. */
  vsxdsKubeWritesPerCall: number | null;
  envoy: { drainingEnd: number; drainingMax: number; activeEnd: number; activeMax: number; drainingAfterS: number };
  breakdown: Breakdown | null;
  strays: number;
  vsxdsLogTail?: string;
}

let nextIndex = 1;

/**
 * B5_ENVOY_DISPATCHER_STATS=1: Envoy runs with `enable_dispatcher_stats` and each scenario logs
 * its main thread's and workers' loop durations and poll delays: whether Envoy's threads ran
 * late or long while calls waited (they cost Envoy a little CPU; the figures are for without).
 */
const DISPATCHER_STATS = process.env['B5_ENVOY_DISPATCHER_STATS'] === '1';
/**
 * How often the rig reads Envoy's listener counts. Envoy's /stats matches its filter against
 * every stat on its main thread, where it also applies xDS: with ~1,000 call listeners a read took
 * 22-100 ms, and read every second it delayed the LDS ACKs of the calls created then by 65-77 ms
 * (the slowest setups of a 50 calls/s run fell on whole seconds). Every 5 s disturbs 5 times less.
 */
const ENVOY_SAMPLE_MS = 5000;

/**
 * The ingress Envoy gets examples/envoy/ingress.yaml's stats_config (without the per-address
 * listener stats), as the README advises; B5_ENVOY_STATS=default leaves Envoy's own, to compare.
 */
const EXAMPLE_STATS_CONFIG: { stats_config?: unknown } =
  process.env['B5_ENVOY_STATS'] === 'default'
    ? {}
    : { stats_config: (parseYaml(readFileSync(new URL('../examples/envoy/ingress.yaml', import.meta.url), 'utf8')) as { stats_config: unknown }).stats_config };

/** B5_DEBUG=1: more in the log (vsxds's loop delay, Envoy's admin time) and a JSON file of every call's record. */
const DEBUG = process.env['B5_DEBUG'] === '1';

/** The rig's event-loop delay is sampled by a timer of this period (ms). */
const LOOP_DELAY_RESOLUTION_MS = 10;

/** How late a loop-delay sample ran, in ms (Node's histogram holds the whole interval, in ns). */
function lateBy(ns: number): number {
  return Math.max(0, ns / 1e6 - LOOP_DELAY_RESOLUTION_MS);
}

async function scenario(
  kube: KubeEnv,
  api: CustomObjectsApi,
  sinks: WorkerSinks,
  pool: number[],
  mode: 'sotw' | 'delta',
  shape: { kind: 'sequential'; calls: number } | { kind: 'rate'; rate: number; lifetimeS: number; arrivalsS: number },
): Promise<ScenarioResult> {
  const name = shape.kind === 'sequential' ? `sequential ${shape.calls}` : `${shape.rate}/s × ${shape.lifetimeS} s`;
  log(`${mode} ${name}: starting vsxds and Envoy`);
  await deleteAllVirtualServices(api, log);
  const vsxds = await startVsxds(kube);
  let envoy: Envoy | undefined;
  try {
    const apiType: AdsApiType = mode === 'sotw' ? 'GRPC' : 'DELTA_GRPC';
    envoy = await startEnvoy({
      name: `b5-${mode}`,
      bootstrap: { ...adsBootstrap({ nodeId: 'default/envoy-ingress', metadata: { namespace: 'default', labels: PROXY_LABELS }, xdsPort: vsxds.xdsPort, apiType, nodeOnFirstMessageOnly: true }), ...(DISPATCHER_STATS ? { enable_dispatcher_stats: true } : {}), ...EXAMPLE_STATS_CONFIG },
      concurrency: ENVOY_CONCURRENCY,
      extraArgs: EXTRA_FLAGS,
    });
    const envoyPid = childPids('envoy')[0];
    const metrics = async () => (await vsxds.admin('/metrics')).text();
    // Connected (and identified: the gauge is per node group).
    for (const deadline = Date.now() + 30_000; ; ) {
      if (sumMetric(await metrics(), 'vsxds_connected_proxies') >= 1) break;
      if (Date.now() > deadline) throw new Error(`Envoy did not connect to vsxds:\n${envoy.logTail(30)}`);
      await sleep(100);
    }

    const plan: CallPlan =
      shape.kind === 'sequential'
        ? { lifetimeMs: 0, connectDeadlineMs: 15_000, minHoldMs: 500 }
        : { lifetimeMs: shape.lifetimeS * 1000, connectDeadlineMs: shape.lifetimeS * 1000, minHoldMs: 0 };
    const loadOptions = {
      kubeconfigPath: kube.kubeconfigPath,
      proxySelector: PROXY_LABELS,
      workerSelector: WORKER_LABELS,
      sinkPort: SINK_PORT,
      healthPort: HEALTH_PORT,
      ports: new PortPool(pool),
      probeMaxMs: 10_000,
    };
    // Two calls first, not measured: the first cluster and listener of a fresh Envoy and vsxds.
    // Probed like measured calls, so that no measured call starts on a port whose listener still runs.
    const warm = new CallLoad({ ...loadOptions, teardownSampleEvery: 1, firstIndex: nextIndex }, sinks);
    await runSequential(warm, 2, { lifetimeMs: 0, connectDeadlineMs: 15_000, minHoldMs: 200 });
    warm.stop();
    nextIndex = warm.lastIndex + 1;
    // Then, for a rate scenario, calls at its rate for a while: what a server that has run for a
    // while costs per call, not what a fresh process costs while V8 is still compiling its code.
    // The warm-up's own cost per call is reported too (cold).
    let cold: { calls: number; vsxdsMsPerCall: number } | null = null;
    if (shape.kind === 'rate' && WARMUP_S > 0) {
      const cpu0 = cpuSeconds(vsxds.pid);
      const warmup = new CallLoad({ ...loadOptions, teardownSampleEvery: 10, firstIndex: nextIndex }, sinks);
      log(`${mode} ${name}: warming up for ${WARMUP_S} s`);
      await runArrivals(warmup, shape.rate, WARMUP_S * 1000, { lifetimeMs: WARMUP_LIFETIME_S * 1000, connectDeadlineMs: WARMUP_LIFETIME_S * 1000, minHoldMs: 0 });
      warmup.stop();
      nextIndex = warmup.lastIndex + 1;
      const calls = Math.max(1, warmup.records.length);
      cold = { calls, vsxdsMsPerCall: ((cpuSeconds(vsxds.pid) - cpu0) * 1000) / calls };
    }

    // What vsxds costs with nothing happening (Envoy connected, no calls): timers, leases,
    // watches. At 10 calls/s each ms/s of it is 0.1 ms per call.
    // After the warm-up's last deletes, removal delays and status writes have settled.
    await sleep(IDLE_SETTLE_S * 1000);
    const idle0 = cpuSeconds(vsxds.pid);
    await sleep(IDLE_S * 1000);
    const idleMsPerS = ((cpuSeconds(vsxds.pid) - idle0) * 1000) / IDLE_S;

    const load = new CallLoad({ ...loadOptions, teardownSampleEvery: shape.kind === 'sequential' ? 1 : 10, firstIndex: nextIndex }, sinks);
    const changes = new ChangeLog(vsxds);
    await changes.poll();
    if (!changes.available) log('vsxds has no /debug/changes: the breakdown is n/a');
    const kubePids = [...childPids('kube-apiserver'), ...childPids('etcd')];
    const kubeCpu = () => kubePids.reduce((s, p) => s + cpuSeconds(p), 0);
    const before = {
      t: now(),
      vsxds: cpuSeconds(vsxds.pid),
      envoy: cpuSeconds(envoyPid),
      rig: process.cpuUsage(),
      kube: kubeCpu(),
      metrics: await metrics(),
      writes: await apiWrites(kube),
    };
    const strays0 = sinks.strays;
    let drainingMax = 0;
    let activeMax = 0;
    let last = new Map<string, number>();
    const sampleMs: number[] = [];
    const sampleEnvoy = async () => {
      const t0 = now();
      try {
        last = parseStats(await (envoy as Envoy).admin('/stats?filter=listener_manager\\.total_listeners'));
        drainingMax = Math.max(drainingMax, last.get('listener_manager.total_listeners_draining') ?? 0);
        activeMax = Math.max(activeMax, last.get('listener_manager.total_listeners_active') ?? 0);
        sampleMs.push(now() - t0);
      } catch {
        // admin busy: next second
      }
    };
    const sampler = setInterval(() => void sampleEnvoy(), ENVOY_SAMPLE_MS);
    const loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
    loopDelay.enable();
    const drops = new UdpDropMonitor(new Set(WORKERS.map((w) => `${w.ip}:${SINK_PORT}`)));
    drops.start();
    changes.start(2000);
    log(`${mode} ${name}: running`);
    try {
      if (shape.kind === 'sequential') await runSequential(load, shape.calls, plan);
      else await runArrivals(load, shape.rate, shape.arrivalsS * 1000, plan);
    } finally {
      load.stop();
    }
    nextIndex = load.lastIndex + 1;
    const endedAt = now();
    // Let status writes and the last ACKs settle, then read everything once more.
    await sleep(2000);
    clearInterval(sampler);
    if (DEBUG) log(`${mode} ${name}: Envoy admin /stats poll ms p50 ${quantile(sampleMs, 0.5).toFixed(1)} max ${Math.max(...sampleMs).toFixed(1)} (${sampleMs.length})`);
    loopDelay.disable();
    const udpDrops = drops.stop();
    if (DISPATCHER_STATS) log(`${mode} ${name}: Envoy's event loops (µs, interval and cumulative):\n${await (envoy as Envoy).admin('/stats?filter=dispatcher')}`);
    changes.stop();
    await changes.poll();
    await sampleEnvoy();
    const after = {
      t: now(),
      vsxds: cpuSeconds(vsxds.pid),
      envoy: cpuSeconds(envoyPid),
      rig: process.cpuUsage(before.rig),
      kube: kubeCpu(),
      metrics: await metrics(),
      writes: await apiWrites(kube),
    };
    if (DEBUG) {
      const lag = (q: string) => (Math.max(0, sumMetric(after.metrics, `vsxds_nodejs_eventloop_lag_${q}_seconds`) - EVENT_LOOP_SAMPLE_S) * 1000).toFixed(1);
      log(`${mode} ${name}: vsxds event loop delay beyond its sampling timer over the scenario, ms: p50 ${lag('p50')} p99 ${lag('p99')} max ${lag('max')}`);
    }
    const summary = summarize(load.records, load.poolExhausted);
    const n = Math.max(1, summary.created);
    const cpuS = {
      vsxds: after.vsxds - before.vsxds,
      envoy: after.envoy - before.envoy,
      rig: (after.rig.user + after.rig.system) / 1e6,
      kube: after.kube - before.kube,
    };
    const writes: ApiWrites = {
      status: after.writes.status - before.writes.status,
      events: after.writes.events - before.writes.events,
      leases: after.writes.leases - before.writes.leases,
      rig: after.writes.rig - before.writes.rig,
      other: after.writes.other - before.writes.other,
    };
    const kubeWrites0 = sumMetric(before.metrics, 'vsxds_kube_writes_total');
    const hasKubeWrites = /^vsxds_kube_writes_total/m.test(after.metrics);
    const result: ScenarioResult = {
      name,
      mode,
      rate: shape.kind === 'rate' ? shape.rate : null,
      lifetimeS: shape.kind === 'rate' ? shape.lifetimeS : null,
      arrivalsS: shape.kind === 'rate' ? shape.arrivalsS : null,
      envoyFlags: [...EXTRA_FLAGS],
      summary,
      wallS: (endedAt - before.t) / 1000,
      cpuS,
      cpuMsPerCall: { vsxds: (cpuS.vsxds * 1000) / n, envoy: (cpuS.envoy * 1000) / n, rig: (cpuS.rig * 1000) / n, kube: (cpuS.kube * 1000) / n },
      cold,
      idleMsPerS,
      rigLoopDelayMs: { p50: lateBy(loopDelay.percentile(50)), p99: lateBy(loopDelay.percentile(99)), max: lateBy(loopDelay.max) },
      udpDrops,
      adsBytesPerCall: (sumMetric(after.metrics, 'vsxds_xds_push_bytes_total') - sumMetric(before.metrics, 'vsxds_xds_push_bytes_total')) / n,
      apiWrites: writes,
      apiWritesPerCall: { status: writes.status / n, events: writes.events / n, leases: writes.leases / n, other: writes.other / n },
      vsxdsKubeWritesPerCall: hasKubeWrites ? (sumMetric(after.metrics, 'vsxds_kube_writes_total') - kubeWrites0) / n : null,
      envoy: {
        drainingEnd: last.get('listener_manager.total_listeners_draining') ?? NaN,
        drainingMax,
        activeEnd: last.get('listener_manager.total_listeners_active') ?? NaN,
        activeMax,
        drainingAfterS: (now() - before.t) / 1000,
      },
      breakdown: changes.available ? breakdown(load.records, [...changes.changes.values()]) : null,
      strays: sinks.strays - strays0,
    };
    if (DEBUG) {
      const file = path.join(tmpdir(), `b5-debug-${mode}-${name.replace(/\W+/g, '_')}.json`);
      const ports = new Set(load.records.map((r) => `:${r.port} `));
      const ss = spawnSync('ss', ['-uanp'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => [...ports].some((p) => l.includes(p)));
      writeFileSync(file, JSON.stringify({ ss, records: load.records.map((r) => ({ ...r, workers: [...r.workers], sessions: [...r.sessions], ownFirstAt: ownFirstAt(r) })), changes: changes.available ? [...changes.changes.values()] : [], envoyLog: envoy.logTail(2000), vsxdsLog: vsxds.output() }, null, 1));
      log(`debug: ${file}`);
    }
    if (summary.neverConnected > 0 || summary.createErrors > 0) {
      result.vsxdsLogTail = vsxds.output().split('\n').slice(-20).join('\n');
      log(`${mode} ${name}: ${summary.neverConnected} calls never connected, ${summary.createErrors} create errors; first: ${load.records.find((r) => r.createError)?.createError ?? ''}`);
    }
    log(`${mode} ${name}: setup p50 ${summary.setupMs.p50.toFixed(0)} ms p99 ${summary.setupMs.p99.toFixed(0)} ms, lost ${summary.established.lost}/${summary.established.sent}, split ${summary.split}, draining ${result.envoy.drainingEnd}`);
    return result;
  } finally {
    await envoy?.stop();
    await vsxds.stop();
  }
}

async function main(): Promise<void> {
  await ensureEnvoy();
  log('starting etcd + kube-apiserver');
  // B5_APISERVER_ARGS: more kube-apiserver flags for experiments, e.g. --profiling=true to read its /debug/pprof.
  const kube = await startKubeEnv({ extraApiServerArgs: (process.env['B5_APISERVER_ARGS'] ?? '').split(/\s+/).filter(Boolean) });
  if (process.env['B5_APISERVER_ARGS']) log(`kube-apiserver at ${kube.server}, token ${kube.token}`);
  const results: ScenarioResult[] = [];
  const failures: string[] = [];
  let sinks: WorkerSinks | undefined;
  try {
    await installCrd(kube);
    for (const w of WORKERS) await readyPod(kube, w.name, WORKER_LABELS, w.ip);
    sinks = await WorkerSinks.start(WORKERS, SINK_PORT, HEALTH_PORT);
    const kc = new KubeConfig();
    kc.loadFromFile(kube.kubeconfigPath);
    const api = kc.makeApiClient(CustomObjectsApi);
    // Enough ports for the largest scenario's live calls, those held while their teardown is
    // probed, and some slack; claimed like the tests' ports, so parallel tests keep off them.
    const maxRate = Math.max(0, ...RATES);
    const pool = await freePorts(Math.max(50, maxRate * (LIFETIME_S + 5) + 500));
    const shapes = [
      ...(SEQUENTIAL > 0 ? [{ kind: 'sequential' as const, calls: SEQUENTIAL }] : []),
      ...RATES.map((rate) => ({ kind: 'rate' as const, rate, lifetimeS: LIFETIME_S, arrivalsS: ARRIVALS_S })),
    ];
    for (const mode of MODES) {
      for (const shape of shapes) {
        try {
          results.push(await scenario(kube, api, sinks, pool, mode, shape));
        } catch (err) {
          failures.push(`B5 ${mode} ${JSON.stringify(shape)}: ${(err as Error).message}`);
          log(failures.at(-1) as string);
        }
      }
    }
  } finally {
    await sinks?.close();
    await kube.stop();
  }
  process.stdout.write(`${JSON.stringify({ envoyFlags: EXTRA_FLAGS, envoyConcurrency: ENVOY_CONCURRENCY, results, failures })}\n`);
}

await main();
