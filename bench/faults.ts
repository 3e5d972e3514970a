/**
 * B6 "faults": the per-call workload of B5 while something fails, and what users would notice.
 *
 * The rig of B5 (bench/calls-rig.ts: real kube-apiserver, vsxds from its CLI, worker sinks and
 * health ports, calls of test/support/calls.ts created and deleted through the API), with:
 * - two ingress Envoys, one per ADS mode (labels app=envoy-ingress, ads=sotw|delta), each with
 *   its own steady load of calls (--rate calls/s, each living --lifetime-s), running side by side
 *   so that every fault hits both modes at once;
 * - two bystander Envoys (one per mode) whose one VirtualService never changes (a listener to a
 *   UDP echo at a fixed address): what vsxds sends them after a fault is what it re-sent to a
 *   proxy whose configuration did not change;
 * - Envoy bootstraps as examples/envoy/ingress.yaml (ADS reconnect backoff 0.25-1 s), with both
 *   vsxds replicas' ports behind the xDS cluster; the second replica runs only for its fault;
 * - vsxds reaches the API server through a TCP proxy that can make its connections go silent
 *   (test/support/freeze-proxy.ts), and runs with --watch-timeout-s (default 8 here).
 *
 * Each fault is a phase of its own: calls arrive for --pre-s, the fault is injected (and ends),
 * calls keep arriving for --post-s, then the phase waits until every call ended, so no call
 * spans two faults. The calls' creates and deletes are retried while the API server is away,
 * as a controller would.
 *
 *   --quick               shorter phases, 2,000 VirtualServices in the bulk fault
 *   --faults a,b          only these (vsxds-restart, api-outage, silent-watch, worker-drain,
 *                         health-port, bulk, replica-kill)
 *   --rate 10             calls/s per mode
 *   --lifetime-s 20       how long a call lives
 *   --bulk 10000          VirtualServices created at once, then deleted at once
 *   --watch-timeout-s 8   vsxds's --watch-timeout-s
 *
 * Prints one JSON object on stdout (bench/run.ts makes the table); progress goes to stderr.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { CallLoad, establishedAt, finalWorker, now, PortPool, quantile, runArrivals, runSequential, summarize, WorkerSinks, workerFault, type CallPlan, type CallRecord } from '../test/support/calls.js';
import type { Change } from './calls-breakdown.js';
import { ChangeLog, deleteAllVirtualServices, HEALTH_PORT, processFigures, ROOT, SINK_PORT, sleep, startVsxds, sumMetric, WORKER_LABELS, WORKERS, type VsxdsOptions, type VsxdsProcess } from './calls-rig.js';
import { CONFIG_CHURN_STATS, ensureEnvoy, INGRESS_ENVOY_FLAGS, pointAtVsxds, startEnvoy, upToDateReconnect, type AdsApiType, type Envoy } from '../test/support/envoy.js';
import { FreezeProxy } from '../test/support/freeze-proxy.js';
import { startKubeEnv, type KubeEnv } from '../test/support/kube-env.js';
import { freePorts, UdpEcho } from '../test/support/udp.js';
import { installCrd, readyPod } from '../test/support/vsxds-kube.js';

export const FAULTS = ['vsxds-restart', 'api-outage', 'silent-watch', 'worker-drain', 'health-port', 'bulk', 'replica-kill'] as const;
export type Fault = (typeof FAULTS)[number];
type Mode = 'sotw' | 'delta';
const MODES: readonly Mode[] = ['sotw', 'delta'];
const API_TYPE: Record<Mode, AdsApiType> = { sotw: 'GRPC', delta: 'DELTA_GRPC' };

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    faults: { type: 'string' },
    rate: { type: 'string' },
    'lifetime-s': { type: 'string' },
    bulk: { type: 'string' },
    'watch-timeout-s': { type: 'string' },
  },
});
const QUICK = args.quick === true;
const SELECTED = (args.faults ?? FAULTS.join(',')).split(',').filter(Boolean) as Fault[];
for (const f of SELECTED) if (!FAULTS.includes(f)) throw new Error(`--faults: unknown fault ${f} (have ${FAULTS.join(', ')})`);
const RATE = Number(args.rate ?? 10);
const LIFETIME_MS = Number(args['lifetime-s'] ?? (QUICK ? 8 : 20)) * 1000;
const PRE_MS = QUICK ? 5_000 : 10_000;
const POST_MS = QUICK ? 5_000 : 10_000;
const BULK = Number(args.bulk ?? (QUICK ? 2_000 : 10_000));
const WATCH_TIMEOUT_S = Number(args['watch-timeout-s'] ?? 8);
/** vsxds's default --watch-timeout-s: the bound a user gets without the flag. */
const DEFAULT_WATCH_TIMEOUT_S = 60;
const RESTART_AFTER_MS = 5_000;
const API_DOWN_MS = 10_000;
/** The bulk fault's memory: sampled every second for SETTLE_MS after the last VirtualService is gone; reported at these seconds, and where heap used was lowest. */
const AFTER_S = QUICK ? [5, 10] : [20, 74, 120];
const SETTLE_MS = 1000 * (AFTER_S.at(-1) as number);
/** How long the deleted worker pod stays Terminating: longer than a call lives, so its calls end on it. */
const DRAIN_GRACE_MS = LIFETIME_MS + 2_000;
const PLAN: CallPlan = { lifetimeMs: LIFETIME_MS, connectDeadlineMs: LIFETIME_MS + 30_000, minHoldMs: 2_000 };
const BYSTANDER_LABELS = { app: 'envoy-bystander' };
const ingressLabels = (mode: Mode) => ({ app: 'envoy-ingress', ads: mode });

function log(msg: string): void {
  process.stderr.write(`[B6 ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

const vsApi = { group: 'servicemesh.l7mp.io', version: 'v1', namespace: 'default', plural: 'virtualservices' };

// ---------------------------------------------------------------------------------------------
// The rig

interface Rig {
  kube: KubeEnv;
  api: CustomObjectsApi;
  sinks: WorkerSinks;
  proxy: FreezeProxy;
  /** The vsxds serving now (replica A; B after A was killed). */
  vsxds: VsxdsProcess;
  replicaOptions: Record<'a' | 'b', VsxdsOptions>;
  ingress: Record<Mode, Envoy>;
  bystander: Record<Mode, Envoy>;
  extra: Envoy[];
  pools: Record<Mode, number[]>;
  nextIndex: Record<Mode, number>;
  echo: UdpEcho;
  /** VirtualServices of the phase's calls the API server holds (created, not yet deleted). */
  liveCalls: () => number;
}

/** examples/envoy/ingress.yaml for this node, with every replica's port behind its xDS cluster. */
function bootstrap(nodeId: string, labels: Record<string, string>, mode: Mode, xdsPorts: readonly number[]): any {
  const example = parseYaml(readFileSync(path.join(ROOT, 'examples', 'envoy', 'ingress.yaml'), 'utf8'));
  const b = pointAtVsxds(example, { xdsPort: xdsPorts[0] as number, apiType: API_TYPE[mode] });
  b.node = { id: nodeId, cluster: nodeId.split('/')[1], metadata: { namespace: 'default', labels } };
  const xds = b.static_resources.clusters.find((c: any) => c.name === 'vsxds');
  for (const port of xdsPorts.slice(1)) xds.load_assignment.endpoints[0].lb_endpoints.push({ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } });
  return b;
}

async function metrics(v: VsxdsProcess): Promise<string> {
  return (await v.admin('/metrics')).text();
}

async function syncz(v: VsxdsProcess): Promise<any[]> {
  return (await v.admin('/debug/syncz').then((r) => r.json(), () => [])) as any[];
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

async function connectedState(e: Envoy): Promise<number | undefined> {
  return (await e.stats()).get('control_plane.connected_state');
}

/** Resolves with the time each Envoy was connected to a control plane again (polled every 50 ms). */
function reconnected(envoys: readonly Envoy[], timeoutMs = 60_000): Promise<number[]> {
  return Promise.all(envoys.map((e) => waitFor(`${e.name} to reconnect`, timeoutMs, async () => ((await connectedState(e)) === 1 ? now() : undefined), 50)));
}

/** The bystander's responses so far, as the serving vsxds counts them, and which process that is. */
async function bystanderResponses(v: VsxdsProcess, mode: Mode): Promise<{ pid: number; responses: number; types: number }> {
  const p = (await syncz(v)).find((x) => x.node === `default/bystander-${mode}`);
  const types = Object.values<any>(p?.types ?? {});
  return { pid: v.pid, responses: types.reduce((n, t) => n + (t.responses ?? 0), 0), types: types.length };
}

async function setup(kube: KubeEnv): Promise<Rig> {
  await installCrd(kube);
  for (const w of WORKERS) await readyPod(kube, w.name, WORKER_LABELS, w.ip);
  const sinks = await WorkerSinks.start(WORKERS, SINK_PORT, HEALTH_PORT);
  const kc = new KubeConfig();
  kc.loadFromFile(kube.kubeconfigPath);
  const api = kc.makeApiClient(CustomObjectsApi);
  await deleteAllVirtualServices(api, log);
  const [xdsA, adminA, xdsB, adminB, echoPort, bystanderPort] = (await freePorts(6)) as [number, number, number, number, number, number];
  const echo = await UdpEcho.start('bystander', '127.0.0.1', echoPort);
  await api.createNamespacedCustomObject({
    ...vsApi,
    body: {
      apiVersion: 'servicemesh.l7mp.io/v1',
      kind: 'VirtualService',
      metadata: { name: 'bystander', namespace: 'default' },
      spec: { selector: BYSTANDER_LABELS, listeners: [{ name: 'bystander', udp: { port: bystanderPort, cluster: { name: 'echo', service_discovery: 'strictdns', endpoints: [{ name: 'echo', host: { address: '127.0.0.1' }, port: echoPort }] } } }] },
    },
  });
  const u = new URL(kube.server);
  const proxy = await FreezeProxy.start({ host: u.hostname, port: Number(u.port) });
  const proxied = proxy.kubeconfig(kube.kubeconfigPath);
  const replica = (name: 'a' | 'b', xdsPort: number, adminPort: number): VsxdsOptions => ({
    xdsPort,
    adminPort,
    kubeconfig: proxied,
    extraArgs: ['--watch-timeout-s', String(WATCH_TIMEOUT_S)],
    env: { POD_NAME: `vsxds-${name}`, POD_NAMESPACE: 'default' },
  });
  const replicaOptions = { a: replica('a', xdsA, adminA), b: replica('b', xdsB, adminB) };
  const vsxds = await startVsxds(kube, replicaOptions.a);
  const start = (name: string, labels: Record<string, string>, mode: Mode, ingress: boolean) =>
    startEnvoy({ name: `b6-${name}`, bootstrap: bootstrap(`default/${name}`, labels, mode, [xdsA, xdsB]), extraArgs: ingress ? INGRESS_ENVOY_FLAGS : [] });
  const ingress = { sotw: await start('ingress-sotw', ingressLabels('sotw'), 'sotw', true), delta: await start('ingress-delta', ingressLabels('delta'), 'delta', true) };
  const bystander = { sotw: await start('bystander-sotw', BYSTANDER_LABELS, 'sotw', false), delta: await start('bystander-delta', BYSTANDER_LABELS, 'delta', false) };
  await waitFor('four Envoys connected and synced', 60_000, async () => {
    const ps = await syncz(vsxds);
    return ps.length >= 4 && ps.every((p) => p.synced) ? true : undefined;
  });
  const perMode = Math.max(100, Math.ceil(RATE * (LIFETIME_MS / 1000 + 40)) + 100);
  const all = await freePorts(2 * perMode);
  const rig: Rig = { kube, api, sinks, proxy, vsxds, replicaOptions, ingress, bystander, extra: [], pools: { sotw: all.slice(0, perMode), delta: all.slice(perMode) }, nextIndex: { sotw: 1, delta: 1_000_001 }, echo, liveCalls: () => 0 };
  // Two calls per mode first, not measured: the first cluster and listener of a fresh Envoy.
  for (const mode of MODES) {
    const warm = newLoad(rig, mode);
    await runSequential(warm, 2, { lifetimeMs: 0, connectDeadlineMs: 15_000, minHoldMs: 200 });
    warm.stop();
    rig.nextIndex[mode] = warm.lastIndex + 1;
  }
  return rig;
}

function newLoad(rig: Rig, mode: Mode): CallLoad {
  return new CallLoad(
    {
      kubeconfigPath: rig.kube.kubeconfigPath,
      proxySelector: ingressLabels(mode),
      workerSelector: WORKER_LABELS,
      sinkPort: SINK_PORT,
      healthPort: HEALTH_PORT,
      ports: new PortPool(rig.pools[mode]),
      teardownSampleEvery: 0,
      firstIndex: rig.nextIndex[mode],
      retryApiForMs: 120_000,
    },
    rig.sinks,
  );
}

// ---------------------------------------------------------------------------------------------
// Faults

/** What a fault reports: when it was over (per mode where it differs), and its own figures. */
interface FaultOutcome {
  /** Calls created before this are measured from it (vsxds ready, API server back, the silent watch restarted, ...). */
  recoveredAt: number | Record<Mode, number>;
  detail: Record<string, unknown>;
  /** Extra per-mode figures computed from the records once the phase is over. */
  perMode?: (mode: Mode, records: readonly CallRecord[]) => Record<string, unknown>;
  /** Runs after every call of the phase ended (restore what the fault broke). */
  after?: () => Promise<Record<string, unknown> | void>;
}

type Injector = (rig: Rig, faultAt: number) => Promise<FaultOutcome>;

const msSince = (t0: number, t: number | undefined) => (t === undefined ? null : Math.round(t - t0));

const INJECT: Record<Fault, Injector> = {
  'vsxds-restart': async (rig, faultAt) => {
    await rig.vsxds.kill();
    await sleep(RESTART_AFTER_MS);
    rig.vsxds = await startVsxds(rig.kube, rig.replicaOptions.a);
    const envoys = [rig.ingress.sotw, rig.ingress.delta];
    const [sotw, delta] = await reconnected(envoys);
    return {
      recoveredAt: rig.vsxds.readyAt,
      detail: { downMs: Math.round(rig.vsxds.readyAt - faultAt), envoyReconnectMsAfterReady: { sotw: msSince(rig.vsxds.readyAt, sotw), delta: msSince(rig.vsxds.readyAt, delta) } },
    };
  },

  'api-outage': async (rig, faultAt) => {
    const removed = async () => Object.fromEntries(await Promise.all(MODES.map(async (m) => [m, (await rig.ingress[m].stats()).get('listener_manager.listener_removed') ?? NaN] as const)));
    const before = await removed();
    await rig.kube.stopApiServer({ signal: 'SIGKILL' });
    await sleep(API_DOWN_MS);
    const duringOutage = await removed();
    const restartedAt = now();
    await rig.kube.startApiServer();
    const readyAt = now();
    return {
      // It answers before its /readyz says so: a call created meanwhile counts from its create's answer.
      recoveredAt: restartedAt,
      detail: { downMs: Math.round(restartedAt - faultAt), apiServerReadyMs: Math.round(readyAt - restartedAt) },
      // No delete can get through while the API server is away: a listener Envoy removed then
      // was removed by vsxds on its own (or a delete answered just before the kill).
      perMode: (m) => ({ listenersRemovedDuringOutage: (duringOutage[m] as number) - (before[m] as number) }),
    };
  },

  'silent-watch': async (rig, faultAt) => {
    const restarts = async () => sumMetric(await metrics(rig.vsxds), 'vsxds_watch_restarts_total');
    const before = await restarts();
    const frozen = rig.proxy.freeze();
    const detectedAt = await waitFor('vsxds to start a silent watch over', 5 * 60_000, async () => ((await restarts()) > before ? now() : undefined), 100);
    // Both watches (VirtualServices, pods) go silent; each is started over on its own clock.
    const allAt = await waitFor('both watches started over', 5 * 60_000, async () => ((await restarts()) >= before + 2 ? now() : undefined), 100).catch(() => undefined);
    // Status writes go over the same kind of connection: do they resume?
    const statusWrites = async () => sumMetric(await metrics(rig.vsxds), 'vsxds_kube_writes_total', (l) => l.includes('kind="status"'));
    const writesAtDetection = await statusWrites();
    return {
      // Calls wait for the VirtualServices' watch, the one or the other: from when both were started over.
      recoveredAt: allAt ?? detectedAt,
      detail: {
        frozenConnections: frozen,
        detectedMs: Math.round(detectedAt - faultAt),
        bothRestartedMs: msSince(faultAt, allAt),
        watchTimeoutS: WATCH_TIMEOUT_S,
        // A watch asks to end after 80-100% of the timeout; silent for that plus a quarter of it, it is started over.
        boundS: [0.8 * WATCH_TIMEOUT_S + WATCH_TIMEOUT_S / 4, 1.25 * WATCH_TIMEOUT_S],
        defaultBoundS: [0.8 * DEFAULT_WATCH_TIMEOUT_S + DEFAULT_WATCH_TIMEOUT_S / 4, 1.25 * DEFAULT_WATCH_TIMEOUT_S],
      },
      after: async () => ({ statusWritesAfterDetection: (await statusWrites()) - writesAtDetection }),
    };
  },

  'worker-drain': async (rig, faultAt) => {
    const w = WORKERS[2] as { name: string; ip: string };
    await rig.kube.kubectlOk(['delete', 'pod', w.name, '--wait=false', '--grace-period=30']);
    await sleep(DRAIN_GRACE_MS);
    await rig.kube.kubectlOk(['patch', 'pod', w.name, '--type=merge', '-p', '{"metadata":{"finalizers":null}}']);
    const goneAt = now();
    return {
      recoveredAt: faultAt,
      detail: { worker: w.name, terminatingMs: Math.round(goneAt - faultAt) },
      perMode: (_m, records) => ({ ...workerFault(records, w.name, faultAt), aliveWhenGone: establishedAt(records, goneAt).filter((r) => r.byWorker[w.name] && r.createSentAt < faultAt).length }),
      after: async () => {
        await readyPod(rig.kube, w.name, WORKER_LABELS, w.ip);
        await sleep(3000);
      },
    };
  },

  'health-port': async (rig, faultAt) => {
    const w = WORKERS[1] as { name: string; ip: string };
    await rig.sinks.setHealth(w.name, false);
    return {
      recoveredAt: faultAt,
      detail: { worker: w.name },
      // Calls that ended within 2 s of the fault had no time to move.
      perMode: (_m, records) => workerFault(records, w.name, faultAt, 2_000),
      after: async () => {
        await rig.sinks.setHealth(w.name, true);
        await sleep(3000);
      },
    };
  },

  bulk: async (rig, faultAt) => {
    const memory = async () => {
      const text = await metrics(rig.vsxds);
      return { rssMB: processFigures(rig.vsxds.pid).rss / 2 ** 20, heapMB: sumMetric(text, 'vsxds_nodejs_heap_size_used_bytes') / 2 ** 20, heapTotalMB: sumMetric(text, 'vsxds_nodejs_heap_size_total_bytes') / 2 ** 20, externalMB: sumMetric(text, 'vsxds_nodejs_external_memory_bytes') / 2 ** 20 };
    };
    const before = await memory();
    let notReady = 0;
    let samples = 0;
    let peak = before;
    const readiness = setInterval(() => {
      void rig.vsxds.admin('/readyz').then(
        (r) => {
          samples += 1;
          if (!r.ok) notReady += 1;
        },
        () => ((samples += 1), (notReady += 1)),
      );
      void memory().then((m) => (peak = { ...m, rssMB: Math.max(peak.rssMB, m.rssMB), heapMB: Math.max(peak.heapMB, m.heapMB) }), () => undefined);
    }, 500);
    const vsCount = async () => sumMetric(await metrics(rig.vsxds), 'vsxds_virtualservices');
    const names = Array.from({ length: BULK }, (_, i) => `bulk-${i}`);
    /** Runs f over every name, 32 at a time; resolves with how many failed. */
    const inParallel = async (f: (name: string, i: number) => Promise<unknown>): Promise<number> => {
      let next = 0;
      let failed = 0;
      await Promise.all(Array.from({ length: 32 }, async () => {
        while (next < names.length) {
          const i = next++;
          await f(names[i] as string, i).catch(() => (failed += 1));
        }
      }));
      return failed;
    };
    // The calls' VirtualServices come and go meanwhile: those the API server holds now, give or take a few in flight.
    const SLACK = 20;
    const createFailures = await inParallel((name, i) =>
      rig.api.createNamespacedCustomObject({
        ...vsApi,
        body: {
          apiVersion: 'servicemesh.l7mp.io/v1',
          kind: 'VirtualService',
          metadata: { name, namespace: 'default' },
          // A group no proxy runs: vsxds watches, validates, stores and reports on them; Envoy is not what is measured.
          spec: { selector: { app: 'envoy-bulk' }, listeners: [{ name, udp: { port: 30000 + (i % 30000), cluster: { name, service_discovery: 'eds', health_check: { interval: 500, protocol: 'TCP' }, endpoints: [{ name: 'w', host: { selector: WORKER_LABELS }, port: SINK_PORT, health_check_port: HEALTH_PORT }] } } }] },
        },
      }),
    );
    const createdAt = now();
    if (createFailures > 0) log(`bulk: ${createFailures} creates failed`);
    await waitFor('vsxds to see the bulk VirtualServices', 5 * 60_000, async () => ((await vsCount()) >= BULK + rig.liveCalls() - SLACK ? true : undefined), 500);
    const seenAt = now();
    const atPeak = await memory();
    const deleteFailures = await inParallel((name) => rig.api.deleteNamespacedCustomObject({ ...vsApi, name }));
    const deletedAt = now();
    await waitFor('vsxds to see them gone', 5 * 60_000, async () => ((await vsCount()) <= rig.liveCalls() + 1 + SLACK ? true : undefined), 500);
    const goneAt = now();
    return {
      recoveredAt: faultAt,
      detail: { virtualServices: BULK, createFailures, deleteFailures, createMs: Math.round(createdAt - faultAt), seenMs: Math.round(seenAt - faultAt), deleteMs: Math.round(deletedAt - seenAt), goneMs: Math.round(goneAt - deletedAt) },
      after: async () => {
        // Heap used right after the delete still counts garbage that no major GC has collected
        // yet: sampled every second for SETTLE_MS, the lowest is what a major GC left.
        const samplesAfter: (Awaited<ReturnType<typeof memory>> & { t: number })[] = [];
        const settleStart = now();
        while (now() - settleStart < SETTLE_MS) {
          await sleep(1_000);
          samplesAfter.push({ t: (now() - settleStart) / 1000, ...(await memory()) });
        }
        clearInterval(readiness);
        const last = samplesAfter[samplesAfter.length - 1];
        const at = AFTER_S.map((t) => samplesAfter.find((s) => s.t >= t - 0.5) ?? last);
        const settled = samplesAfter.reduce((a, b) => (b.heapMB < a.heapMB ? b : a));
        return { memory: { before, atPeak, peak, at, settled, last, settleS: SETTLE_MS / 1000 }, readyzNotOk: notReady, readyzSamples: samples };
      },
    };
  },

  'replica-kill': async (rig, faultAt) => {
    // Not during the phase's first seconds: B runs, one more bystander on it, A leads.
    const a = rig.vsxds;
    const b = (rig as Rig & { replicaB?: VsxdsProcess }).replicaB as VsxdsProcess;
    const statusWrites = async () => sumMetric(await metrics(b), 'vsxds_kube_writes_total', (l) => l.includes('kind="status"'));
    const writesBefore = await statusWrites();
    await a.kill();
    rig.vsxds = b;
    // On B when B has their streams (their connected_state may not have dropped yet when polled).
    const onB = (mode: Mode) => waitFor(`ingress-${mode} on replica B`, 60_000, async () => ((await syncz(b)).some((p) => p.node === `default/ingress-${mode}`) ? now() : undefined), 50);
    const [sotw, delta] = await Promise.all([onB('sotw'), onB('delta')]);
    const resumedAt = await waitFor('the other replica to write status', 60_000, async () => ((await statusWrites()) > writesBefore ? now() : undefined), 100);
    return {
      recoveredAt: { sotw: sotw as number, delta: delta as number },
      detail: { ingressReconnectMs: { sotw: msSince(faultAt, sotw), delta: msSince(faultAt, delta) }, statusResumedMs: Math.round(resumedAt - faultAt), leaseDurationS: 15 },
    };
  },
};

/** Before a phase: what must run for its fault. */
async function prepare(rig: Rig, fault: Fault): Promise<void> {
  if (fault === 'worker-drain') {
    // Deleting it leaves it Terminating (with a deletionTimestamp) until the finalizer goes, as a kubelet would during the grace period.
    const w = WORKERS[2] as { name: string; ip: string };
    await readyPod(rig.kube, w.name, WORKER_LABELS, w.ip, true);
  }
  if (fault === 'replica-kill') {
    const b = await startVsxds(rig.kube, rig.replicaOptions.b);
    (rig as Rig & { replicaB?: VsxdsProcess }).replicaB = b;
    // Proxies spread over both: one more bystander, on B only.
    const port = rig.replicaOptions.b.xdsPort as number;
    rig.extra.push(await startEnvoy({ name: 'b6-bystander-b', bootstrap: bootstrap('default/bystander-b', BYSTANDER_LABELS, 'delta', [port]) }));
    await waitFor('a proxy on replica B', 30_000, async () => ((await syncz(b)).some((p) => p.synced) ? true : undefined));
    const holder = JSON.parse(await rig.kube.kubectlOk(['get', 'lease', 'vsxds-leader', '-o', 'json'])).spec?.holderIdentity;
    log(`replica-kill: lease held by ${holder}; the proxies of A: ${(await syncz(rig.vsxds)).map((p) => p.node).join(', ')}`);
  }
}

// ---------------------------------------------------------------------------------------------
// A phase: steady calls, one fault

export interface FaultRow {
  fault: Fault;
  mode: Mode;
  calls: number;
  /** Calls connected before the fault and still running at its start. */
  established: { calls: number; sent: number; lost: number; callsWithLoss: number };
  /** Calls that never connected (after the retries of their create). */
  failedToConnect: number;
  createErrors: number;
  /** Calls created during the fault: connected, and their setup from the recovery, or from their create's answer if later (ms). */
  during: { calls: number; connected: number; fromRecoveryMs: { p50: number; p99: number; max: number }; within1s: number };
  /** Calls created after the recovery: their setup from their create (ms). */
  after: { calls: number; setupMs: { p50: number; p99: number } };
  /** What the serving vsxds sent the bystander (unchanged configuration) after the fault, beyond the empty answers a delta reconnect gets. */
  bystanderResent: number;
  /** Envoy config counters of the bystander that moved (Envoy applied something). */
  bystanderChurn: Record<string, string>;
  /** Deletions vsxds received (/debug/changes) for a call before the call's delete was sent. */
  spuriousDeletes: number;
  detail: Record<string, unknown>;
}

async function phase(rig: Rig, fault: Fault): Promise<FaultRow[]> {
  log(`${fault}: preparing`);
  await prepare(rig, fault);
  const loads = { sotw: newLoad(rig, 'sotw'), delta: newLoad(rig, 'delta') };
  rig.sinks.onDatagram = (...a) => {
    loads.sotw.receive(...a);
    loads.delta.receive(...a);
  };
  rig.liveCalls = () => MODES.reduce((n, m) => n + loads[m].records.filter((r) => r.createDoneAt !== undefined && r.createError === undefined && r.deleteDoneAt === undefined).length, 0);
  const bystanderBefore = { sotw: await bystanderResponses(rig.vsxds, 'sotw'), delta: await bystanderResponses(rig.vsxds, 'delta') };
  const churnBefore = { sotw: await rig.bystander.sotw.stats(), delta: await rig.bystander.delta.stats() };
  // Each replica's change log (a restarted or other replica has its own).
  const logs: ChangeLog[] = [];
  const follow = (v: VsxdsProcess) => {
    const l = new ChangeLog(v);
    l.start(1000);
    logs.push(l);
  };
  follow(rig.vsxds);
  const stopArrivals = new AbortController();
  const running = MODES.map((m) => runArrivals(loads[m], RATE, Infinity, PLAN, stopArrivals.signal));
  let outcome: FaultOutcome;
  let faultAt: number;
  try {
    await sleep(PRE_MS);
    log(`${fault}: injecting`);
    faultAt = now();
    const serving = rig.vsxds;
    outcome = await INJECT[fault](rig, faultAt);
    if (rig.vsxds !== serving) follow(rig.vsxds);
    log(`${fault}: over after ${Math.round(now() - faultAt)} ms; ${JSON.stringify(outcome.detail)}`);
    await sleep(POST_MS);
  } catch (err) {
    stopArrivals.abort();
    for (const m of MODES) loads[m].stop();
    for (const l of logs) l.stop();
    throw err;
  } finally {
    stopArrivals.abort();
  }
  await Promise.race([Promise.all(running), sleep(PLAN.connectDeadlineMs + 20_000)]);
  for (const m of MODES) loads[m].stop();
  await sleep(2000);
  for (const l of logs) {
    l.stop();
    await l.poll();
  }
  const after = (await outcome.after?.()) ?? {};
  const changes: Change[] = logs.flatMap((l) => [...l.changes.values()]);
  const rows: FaultRow[] = [];
  for (const mode of MODES) {
    const records = loads[mode].records;
    rig.nextIndex[mode] = loads[mode].lastIndex + 1;
    const recoveredAt = typeof outcome.recoveredAt === 'number' ? outcome.recoveredAt : outcome.recoveredAt[mode];
    const all = summarize(records, loads[mode].poolExhausted);
    const est = summarize(establishedAt(records, faultAt));
    const during = records.filter((r) => r.createSentAt >= faultAt && r.createSentAt < recoveredAt);
    // From the recovery, or from when the API server accepted the create if that was later (the API server's own outage).
    const fromRecovery = during.filter((r) => r.firstAt !== undefined).map((r) => Math.max(0, (r.firstAt as number) - Math.max(recoveredAt, r.createDoneAt ?? 0)));
    const later = records.filter((r) => r.createSentAt >= recoveredAt);
    const laterSetup = later.filter((r) => r.firstAt !== undefined).map((r) => (r.firstAt as number) - r.createSentAt);
    const byName = new Map(records.map((r) => [`default/${r.name}`, r]));
    const spurious = changes.filter((c) => c.kind === 'delete' && byName.has(c.key) && c.receivedAt < ((byName.get(c.key) as CallRecord).deleteSentAt ?? Infinity));
    const bAfter = await bystanderResponses(rig.vsxds, mode);
    const b0 = bystanderBefore[mode];
    const upToDate = upToDateReconnect(API_TYPE[mode]);
    const resent = bAfter.pid === b0.pid ? bAfter.responses - b0.responses : bAfter.responses - bAfter.types * upToDate.responses;
    const churnAfter = await rig.bystander[mode].stats();
    const churn: Record<string, string> = {};
    for (const name of bAfter.pid === b0.pid ? CONFIG_CHURN_STATS : upToDate.churnStats) {
      if (churnBefore[mode].get(name) !== churnAfter.get(name)) churn[name] = `${churnBefore[mode].get(name)} → ${churnAfter.get(name)}`;
    }
    rows.push({
      fault,
      mode,
      calls: all.calls,
      established: { calls: est.connected, sent: est.established.sent, lost: est.established.lost, callsWithLoss: est.established.callsWithLoss },
      failedToConnect: all.neverConnected + all.createErrors,
      createErrors: all.createErrors,
      during: {
        calls: during.length,
        connected: fromRecovery.length,
        fromRecoveryMs: { p50: quantile(fromRecovery, 0.5), p99: quantile(fromRecovery, 0.99), max: fromRecovery.length ? Math.max(...fromRecovery) : NaN },
        within1s: fromRecovery.filter((ms) => ms <= 1000).length,
      },
      after: { calls: later.length, setupMs: { p50: quantile(laterSetup, 0.5), p99: quantile(laterSetup, 0.99) } },
      bystanderResent: resent,
      bystanderChurn: churn,
      spuriousDeletes: spurious.length,
      detail: { ...outcome.detail, ...(outcome.perMode?.(mode, records) ?? {}), ...after, perWorker: all.perWorker, lastWorkers: countBy(records.map((r) => finalWorker(r) ?? 'none')) },
    });
    const row = rows.at(-1) as FaultRow;
    log(`${fault} ${mode}: established ${row.established.calls} lost ${row.established.lost}/${row.established.sent}; failed ${row.failedToConnect}; during ${row.during.connected}/${row.during.calls} p99 ${row.during.fromRecoveryMs.p99} ms from recovery; bystander re-sent ${row.bystanderResent}; spurious deletes ${row.spuriousDeletes}`);
  }
  return rows;
}

function countBy(xs: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

async function main(): Promise<void> {
  await ensureEnvoy();
  log('starting etcd + kube-apiserver');
  const kube = await startKubeEnv();
  const rows: FaultRow[] = [];
  const failures: string[] = [];
  let rig: Rig | undefined;
  const started = now();
  try {
    rig = await setup(kube);
    for (const fault of SELECTED) {
      try {
        rows.push(...(await phase(rig, fault)));
      } catch (err) {
        failures.push(`B6 ${fault}: ${(err as Error).stack ?? String(err)}`.slice(0, 2000));
        log(failures.at(-1) as string);
        log(`vsxds log tail:\n${rig.vsxds.output().split('\n').slice(-15).join('\n')}`);
      }
    }
  } catch (err) {
    failures.push(`B6 setup: ${(err as Error).stack ?? String(err)}`.slice(0, 2000));
    log(failures.at(-1) as string);
  } finally {
    if (rig) {
      for (const e of [...Object.values(rig.ingress), ...Object.values(rig.bystander), ...rig.extra]) await e.stop().catch(() => undefined);
      await rig.vsxds.kill().catch(() => undefined);
      await (rig as Rig & { replicaB?: VsxdsProcess }).replicaB?.kill().catch(() => undefined);
      await rig.proxy.close();
      await rig.sinks.close();
      await rig.echo.close();
    }
    await kube.stop();
  }
  // A fault that failed half-way may leave a timer behind: the result is out, so end here.
  process.stdout.write(`${JSON.stringify({ rate: RATE, lifetimeS: LIFETIME_MS / 1000, preS: PRE_MS / 1000, postS: POST_MS / 1000, watchTimeoutS: WATCH_TIMEOUT_S, bulk: BULK, wallS: (now() - started) / 1000, rows, failures })}\n`, () => process.exit());
}

await main();
