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
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { CallLoad, now, PortPool, quantile, runArrivals, runSequential, summarize, WorkerSinks, type CallPlan, type CallRecord, type CallSummary } from '../test/support/calls.js';
import { breakdown, type Breakdown, type Change } from './calls-breakdown.js';
import { adsBootstrap, ensureEnvoy, INGRESS_ENVOY_FLAGS, parseStats, spawnTied, startEnvoy, type AdsApiType, type Envoy } from '../test/support/envoy.js';
import { startKubeEnv, type KubeEnv } from '../test/support/kube-env.js';
import { freePort, freePorts } from '../test/support/udp.js';
import { installCrd, readyPod } from '../test/support/vsxds-kube.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The Envoy flags the README recommends for the ingress (test/support/envoy.ts INGRESS_ENVOY_FLAGS). */
export const ENVOY_FLAGS: readonly string[] = INGRESS_ENVOY_FLAGS;
/** Envoy's own default is one worker per core; the rig says so explicitly (startEnvoy defaults to 1). */
const ENVOY_CONCURRENCY = 2;

const WORKERS = [
  { name: 'worker-1', ip: '127.0.0.2' },
  { name: 'worker-2', ip: '127.0.0.3' },
  { name: 'worker-3', ip: '127.0.0.4' },
];
const SINK_PORT = 2001;
const HEALTH_PORT = 1233;
const PROXY_LABELS = { app: 'envoy-ingress' };
const WORKER_LABELS = { app: 'worker' };
const CLK_TCK = 100;

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
const EXTRA_FLAGS = args['envoy-flags'] !== undefined ? args['envoy-flags'].split(/[\s,]+/).filter(Boolean) : ENVOY_FLAGS;

function log(msg: string): void {
  process.stderr.write(`[B5 ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------
// Processes and their CPU

/** user+sys CPU seconds of a process, from /proc/<pid>/stat; NaN when it is gone. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Children of this process with the given command name (Envoy runs exec'd from its shim, kube-env's binaries directly). */
function childPids(comm: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (name === comm && ppid === process.pid) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

interface VsxdsProcess {
  readonly pid: number;
  readonly xdsPort: number;
  readonly adminPort: number;
  output(): string;
  admin(p: string): Promise<Response>;
  stop(): Promise<void>;
}

async function startVsxds(kube: KubeEnv): Promise<VsxdsProcess> {
  const cli = path.join(ROOT, 'dist', 'main', 'cli.js');
  if (!existsSync(cli)) throw new Error(`${cli} does not exist: run npm run build first`);
  const [xdsPort, adminPort] = [await freePort(), await freePort()];
  // B5_VSXDS_PROFILE=<dir>: vsxds writes a CPU profile there when it stops.
  const profile = process.env['B5_VSXDS_PROFILE'];
  // B5_VSXDS_NODE_FLAGS="...": Node/V8 flags for vsxds, for experiments (the figures are for none).
  const nodeFlags = (process.env['B5_VSXDS_NODE_FLAGS'] ?? '').split(/\s+/).filter(Boolean);
  const child: ChildProcess = spawnTied(process.execPath, [
    ...nodeFlags,
    ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : []),
    cli, 'serve',
    '--source', 'kubernetes',
    '--kubeconfig', kube.kubeconfigPath,
    '--xds-address', `127.0.0.1:${xdsPort}`,
    '--admin-address', `127.0.0.1:${adminPort}`,
  ], { cwd: ROOT, env: { PATH: process.env['PATH'] ?? '', HOME: tmpdir() } });
  let out = '';
  const keep = (d: string) => (out = (out + d).slice(-20_000));
  child.stdout?.setEncoding('utf8').on('data', keep);
  child.stderr?.setEncoding('utf8').on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const admin = (p: string) => fetch(`http://127.0.0.1:${adminPort}${p}`);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (gone) throw new Error(`vsxds exited during startup:\n${out}`);
    if (await admin('/readyz').then((r) => r.ok, () => false)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`vsxds not ready within 60 s:\n${out}`);
    }
    await sleep(100);
  }
  return {
    pid: child.pid as number,
    xdsPort,
    adminPort,
    output: () => out,
    admin,
    stop: async () => {
      if (!gone) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Metrics

/** Sum of a Prometheus counter's samples whose labels pass `keep`. */
function sumMetric(text: string, name: string, keep: (labels: string) => boolean = () => true): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^(\w+)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    if (keep(m[2] ?? '')) sum += Number(m[3]);
  }
  return sum;
}

function kubeGet(kube: KubeEnv, p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(p, kube.server), { headers: { authorization: `Bearer ${kube.token}` }, ca: kube.caData, rejectUnauthorized: kube.caData !== undefined }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`GET ${p}: ${res.statusCode} ${text.slice(0, 200)}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

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

/** Polls vsxds's /debug/changes (newest last, the last ~2,000) and keeps the latest copy of each change. */
class ChangeLog {
  readonly changes = new Map<string, Change>();
  available: boolean | undefined;
  /** The `now` of vsxds's last answer. */
  private since?: number;
  private timer?: NodeJS.Timeout;
  private polling = false;

  constructor(private readonly vsxds: VsxdsProcess) {}

  async poll(): Promise<void> {
    if (this.available === false || this.polling) return;
    this.polling = true;
    try {
      // Only what is still open or closed since the last answer (less a second: clocks are the same, answers overlap).
      const res = await this.vsxds.admin(this.since === undefined ? '/debug/changes' : `/debug/changes?since=${this.since - 1000}`);
      if (!res.ok) {
        this.available = false;
        return;
      }
      const body = (await res.json()) as { now?: number; changes?: Change[] };
      if (!Array.isArray(body.changes)) {
        this.available = false;
        return;
      }
      this.available = true;
      if (typeof body.now === 'number') this.since = body.now;
      for (const c of body.changes) this.changes.set(`${c.key}|${c.kind}|${c.receivedAt}`, c);
    } catch {
      // vsxds busy or gone: the next poll tries again
    } finally {
      this.polling = false;
    }
  }

  start(everyMs: number): void {
    this.timer = setInterval(() => void this.poll(), everyMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }
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

async function deleteAllVirtualServices(api: CustomObjectsApi): Promise<void> {
  type List = { items: Array<{ metadata: { name: string } }> };
  let list: List;
  // Right after the CRD is established its storage may still answer 429 "(re)initializing".
  for (let attempt = 0; ; attempt++) {
    try {
      list = (await api.listNamespacedCustomObject({ group: 'servicemesh.l7mp.io', version: 'v1', namespace: 'default', plural: 'virtualservices' })) as List;
      break;
    } catch (err) {
      if (attempt >= 60) throw err;
      await sleep(500);
    }
  }
  for (const item of list.items) {
    await api.deleteNamespacedCustomObject({ group: 'servicemesh.l7mp.io', version: 'v1', namespace: 'default', plural: 'virtualservices', name: item.metadata.name }).catch(() => undefined);
  }
  if (list.items.length) log(`deleted ${list.items.length} leftover VirtualServices`);
}

let nextIndex = 1;

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
  await deleteAllVirtualServices(api);
  const vsxds = await startVsxds(kube);
  let envoy: Envoy | undefined;
  try {
    const apiType: AdsApiType = mode === 'sotw' ? 'GRPC' : 'DELTA_GRPC';
    envoy = await startEnvoy({
      name: `b5-${mode}`,
      bootstrap: adsBootstrap({ nodeId: 'default/envoy-ingress', metadata: { namespace: 'default', labels: PROXY_LABELS }, xdsPort: vsxds.xdsPort, apiType, nodeOnFirstMessageOnly: true }),
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
    const sampleEnvoy = async () => {
      try {
        last = parseStats(await (envoy as Envoy).admin('/stats?filter=listener_manager\\.total_listeners'));
        drainingMax = Math.max(drainingMax, last.get('listener_manager.total_listeners_draining') ?? 0);
        activeMax = Math.max(activeMax, last.get('listener_manager.total_listeners_active') ?? 0);
      } catch {
        // admin busy: next second
      }
    };
    const sampler = setInterval(() => void sampleEnvoy(), 1000);
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
    if (process.env['B5_DEBUG'] === '1') {
      const file = path.join(tmpdir(), `b5-debug-${mode}-${name.replace(/\W+/g, '_')}.json`);
      const ports = new Set(load.records.map((r) => `:${r.port} `));
      const ss = spawnSync('ss', ['-uanp'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => [...ports].some((p) => l.includes(p)));
      writeFileSync(file, JSON.stringify({ ss, records: load.records.map((r) => ({ ...r, workers: [...r.workers] })), envoyLog: envoy.logTail(2000), vsxdsLog: vsxds.output() }, null, 1));
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
  const kube = await startKubeEnv();
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
