/**
 * Calls under faults, short: the per-call workload of test/envoy/calls.test.ts (one VirtualService
 * per call through the Kubernetes API, real Envoys forwarding each call's datagrams to worker
 * sinks) at a steady rate on two ingress Envoys at once, one per ADS mode, while vsxds (a process
 * of its own, reaching the API server through a proxy that can make its connections go silent)
 * or what it depends on fails. Outcomes, not times (bench B6, bench/faults.ts, measures them):
 *
 * - vsxds SIGKILLed and started again: established calls lose no datagram, calls created
 *   meanwhile connect;
 * - the API server SIGKILLed and started again: established calls lose nothing, Envoy removes no
 *   listener while it is away (vsxds pushes no deletion), calls created meanwhile connect once
 *   their creates get through;
 * - vsxds's watches go silent without closing (half-open): vsxds starts them over and catches up
 *   on the calls created meanwhile;
 * - a worker pod deleted (Terminating): its calls stay on it (DRAINING) and lose nothing, calls
 *   created after it avoid it;
 * - a worker's health port stops answering: its calls move to the other workers;
 * - a burst of VirtualServices created and deleted at once: vsxds stays ready, calls unaffected,
 *   every status of the burst is written with few connections to the API server at once.
 *
 * Replicas: test/envoy/security-ha.test.ts (an Envoy moving to the other replica keeps its
 * configuration, nothing re-sent) and test/kubernetes-leader.test.ts (the other replica takes over
 * the status writes). No re-push to an unchanged proxy after a restart: test/envoy/restart.test.ts.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callVirtualService, CallLoad, establishedAt, lostBetween, now, ownFirstAt, PortPool, runArrivals, summarize, WorkerSinks, workerFault, type CallRecord } from '../support/calls.js';
import { pointAtVsxds, startEnvoy, INGRESS_ENVOY_FLAGS, type AdsApiType, type Envoy } from '../support/envoy.js';
import { loadExamples, printEnvoyLogsOnFailure, startVsxdsProcess, type VsxdsProcess } from '../support/envoy-scenario.js';
import { FreezeProxy } from '../support/freeze-proxy.js';
import { startKubeEnv, type KubeEnv } from '../support/kube-env.js';
import { freePorts, waitUntil } from '../support/udp.js';
import { installCrd, readyPod } from '../support/vsxds-kube.js';

const MODES = ['sotw', 'delta'] as const;
type Mode = (typeof MODES)[number];
const API_TYPE: Record<Mode, AdsApiType> = { sotw: 'GRPC', delta: 'DELTA_GRPC' };
const RATE = 5;
const PLAN = { lifetimeMs: 4_000, connectDeadlineMs: 30_000, minHoldMs: 1_000 };
const PRE_MS = 2_000;
const POST_MS = 2_000;
// A /16 of loopback of its own: these workers never answer for another suite's.
const WORKERS = [2, 3, 4].map((i) => ({ name: `faults-worker-${i - 1}`, ip: `127.32.0.${i}` }));
const WORKER_LABELS = { app: 'faults-worker' };
const ingressLabels = (mode: Mode) => ({ app: 'faults-ingress', ads: mode });
/** Watches ask the API server to end them after 1.6-2 s; one silent for 0.5 s longer is started over. */
const WATCH_TIMEOUT_S = 2;

describe('calls through Kubernetes while things fail', { timeout: 120_000 }, () => {
  let kube: KubeEnv;
  let api: CustomObjectsApi;
  let proxy: FreezeProxy;
  let sinks: WorkerSinks;
  let vsxds: VsxdsProcess;
  let ports: { xds: number; admin: number; sink: number; health: number };
  let pools: Record<Mode, number[]>;
  const ingress = {} as Record<Mode, Envoy>;
  const next: Record<Mode, number> = { sotw: 1, delta: 100_001 };
  let startVsxds: () => Promise<VsxdsProcess>;

  printEnvoyLogsOnFailure(() => Object.values(ingress));

  beforeAll(async () => {
    const [xds, admin, sink, health] = (await freePorts(4)) as [number, number, number, number];
    ports = { xds, admin, sink, health };
    const all = await freePorts(400);
    pools = { sotw: all.slice(0, 200), delta: all.slice(200) };
    sinks = await WorkerSinks.start(WORKERS, sink, health);
    kube = await startKubeEnv();
    await installCrd(kube);
    for (const w of WORKERS) await readyPod(kube, w.name, WORKER_LABELS, w.ip);
    const kc = new KubeConfig();
    kc.loadFromFile(kube.kubeconfigPath);
    api = kc.makeApiClient(CustomObjectsApi);
    const u = new URL(kube.server);
    proxy = await FreezeProxy.start({ host: u.hostname, port: Number(u.port) });
    const kubeconfig = proxy.kubeconfig(kube.kubeconfigPath);
    startVsxds = async () => {
      const v = await startVsxdsProcess({
        sourceArgs: ['--source', 'kubernetes', '--kubeconfig', kubeconfig, '--watch-timeout-s', String(WATCH_TIMEOUT_S), '--status-interval-ms', '50'],
        xdsPort: ports.xds,
        adminPort: ports.admin,
        env: { POD_NAME: 'vsxds-faults', POD_NAMESPACE: 'default' },
      });
      await waitUntil(() => fetch(`http://127.0.0.1:${ports.admin}/readyz`).then((r) => r.ok || undefined, () => undefined), 'vsxds ready', 30_000, 50);
      return v;
    };
    vsxds = await startVsxds();
    // The example bootstrap (its ADS reconnect backoff is bounded to 1 s), one Envoy per mode.
    const example = (await loadExamples()).bootstraps.ingress;
    for (const mode of MODES) {
      const bootstrap = pointAtVsxds(example, { xdsPort: ports.xds, apiType: API_TYPE[mode] });
      bootstrap.node = { id: `default/faults-ingress-${mode}`, cluster: 'ingress', metadata: { namespace: 'default', labels: ingressLabels(mode) } };
      ingress[mode] = await startEnvoy({ name: `faults-${mode}`, bootstrap, extraArgs: INGRESS_ENVOY_FLAGS });
    }
    await waitUntil(async () => ((await vsxds.admin<any[]>('/debug/syncz')).filter((p) => p.synced).length === 2 ? true : undefined), 'both Envoys synced', 30_000);
  }, 45 * 60_000);

  afterAll(async () => {
    for (const e of Object.values(ingress)) await e?.stop();
    await vsxds?.kill();
    await proxy?.close();
    await kube?.stop();
    await sinks?.close();
  });

  const newLoad = (mode: Mode) =>
    new CallLoad(
      {
        kubeconfigPath: kube.kubeconfigPath,
        proxySelector: ingressLabels(mode),
        workerSelector: WORKER_LABELS,
        sinkPort: ports.sink,
        healthPort: ports.health,
        ports: new PortPool(pools[mode]),
        teardownSampleEvery: 0,
        firstIndex: next[mode],
        retryApiForMs: 60_000,
      },
      sinks,
    );

  /**
   * Calls at RATE per second on both Envoys; `fault` is injected after PRE_MS and resolves when
   * it is over; calls keep coming for POST_MS, then every call ends. Returns each mode's calls and
   * when the fault started.
   */
  async function underFault(fault: () => Promise<void>): Promise<{ faultAt: number; records: Record<Mode, CallRecord[]> }> {
    const loads = { sotw: newLoad('sotw'), delta: newLoad('delta') };
    sinks.onDatagram = (...a) => {
      loads.sotw.receive(...a);
      loads.delta.receive(...a);
    };
    const stop = new AbortController();
    const running = MODES.map((m) => runArrivals(loads[m], RATE, Infinity, PLAN, stop.signal));
    let faultAt = NaN;
    try {
      await new Promise((resolve) => setTimeout(resolve, PRE_MS));
      faultAt = now();
      await fault();
      await new Promise((resolve) => setTimeout(resolve, POST_MS));
    } finally {
      stop.abort();
      await Promise.all(running);
      for (const m of MODES) {
        loads[m].stop();
        next[m] = loads[m].lastIndex + 1;
      }
    }
    return { faultAt, records: { sotw: loads.sotw.records, delta: loads.delta.records } };
  }

  const show = (rs: readonly CallRecord[]) => rs.slice(0, 4).map((r) => `${r.name} port ${r.port}: ${r.createError ?? ''} sent ${r.seq}, received ${r.received} on ${JSON.stringify(r.byWorker)}`).join('; ');

  /** Every call connected, no established call lost a datagram, and vsxds saw no call deleted before its delete was sent. */
  async function expectCallsUnharmed(mode: Mode, faultAt: number, records: readonly CallRecord[]): Promise<void> {
    const s = summarize(records);
    expect(s.createErrors, `${mode}: ${show(records.filter((r) => r.createError))}`).toBe(0);
    expect(s.neverConnected, `${mode}: calls that never connected: ${show(records.filter((r) => r.firstAt === undefined))}`).toBe(0);
    const established = establishedAt(records, faultAt);
    expect(established.length, `${mode}: calls running when the fault began`).toBeGreaterThan(0);
    const lossy = established.filter((r) => lostBetween(r, ownFirstAt(r) as number) > 0);
    expect(lossy.length, `${mode}: established calls that lost datagrams: ${show(lossy)}`).toBe(0);
    const byKey = new Map(records.map((r) => [`default/${r.name}`, r]));
    const { changes } = await vsxds.admin<{ changes: Array<{ key: string; kind: string; receivedAt: number }> }>('/debug/changes');
    const early = changes.filter((c) => c.kind === 'delete' && byKey.has(c.key) && c.receivedAt < ((byKey.get(c.key) as CallRecord).deleteSentAt ?? Infinity));
    expect(early.map((c) => c.key), `${mode}: calls vsxds deleted before the controller did`).toEqual([]);
  }

  it('vsxds SIGKILLed and started again: established calls lose nothing, calls created meanwhile connect', async () => {
    let downAt = 0;
    const { faultAt, records } = await underFault(async () => {
      await vsxds.kill();
      downAt = now();
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      vsxds = await startVsxds();
    });
    for (const m of MODES) {
      await expectCallsUnharmed(m, faultAt, records[m]);
      expect(records[m].filter((r) => r.createSentAt > faultAt && r.createSentAt < downAt + 2_000).length, `${m}: calls created while vsxds was away`).toBeGreaterThan(0);
    }
  });

  it('the API server SIGKILLed for a while: established calls lose nothing, no listener is removed meanwhile, calls created meanwhile connect', async () => {
    const removed = async () => Promise.all(MODES.map(async (m) => (await ingress[m].stats()).get('listener_manager.listener_removed')));
    let before: Array<number | undefined> = [];
    let during: Array<number | undefined> = [];
    let backAt = 0;
    const { faultAt, records } = await underFault(async () => {
      await kube.stopApiServer({ signal: 'SIGKILL' });
      // Deletes answered just before the kill have had their listeners removed after a second;
      // none can get through after it.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      before = await removed();
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      during = await removed();
      await kube.startApiServer();
      backAt = now();
      // vsxds is back on its watches (its status writes get through again).
      await waitUntil(async () => ((await vsxds.admin<any[]>('/debug/syncz')).every((p) => p.synced) ? true : undefined), 'proxies synced after the outage', 30_000);
    });
    // vsxds pushed no deletion while it could not see the VirtualServices.
    expect(during).toEqual(before);
    for (const m of MODES) {
      await expectCallsUnharmed(m, faultAt, records[m]);
      expect(records[m].filter((r) => r.createSentAt > faultAt && r.createSentAt < backAt - 1000).length, `${m}: calls created while the API server was away`).toBeGreaterThan(0);
    }
  });

  it('its watches go silent without closing: vsxds starts them over and catches up on the calls created meanwhile', async () => {
    const restarts = async () => {
      const text = await (await fetch(`http://127.0.0.1:${ports.admin}/metrics`)).text();
      return Number(/^vsxds_watch_restarts_total (\S+)/m.exec(text)?.[1] ?? NaN);
    };
    const before = await restarts();
    let frozenAt = 0;
    const { faultAt, records } = await underFault(async () => {
      expect(proxy.freeze()).toBeGreaterThanOrEqual(2);
      frozenAt = now();
      await waitUntil(async () => ((await restarts()) >= before + 2 ? true : undefined), 'both silent watches started over', 60_000, 100);
    });
    for (const m of MODES) {
      await expectCallsUnharmed(m, faultAt, records[m]);
      // Created while vsxds heard nothing: they connected, so vsxds caught up on them.
      expect(records[m].filter((r) => r.createSentAt > frozenAt && r.createSentAt < frozenAt + 1000).length, `${m}: calls created during the silence`).toBeGreaterThan(0);
    }
  });

  it('its connections go silent without closing while nothing happens: status writes go on (a request on a silent connection is aborted)', async () => {
    const group = { group: 'servicemesh.l7mp.io', version: 'v1', namespace: 'default', plural: 'virtualservices' };
    const accepted = (name: string) =>
      waitUntil(
        async () => {
          const vs = (await api.getNamespacedCustomObject({ ...group, name })) as { status?: { conditions?: Array<{ type: string; status: string }> } };
          return vs.status?.conditions?.some((c) => c.type === 'Accepted' && c.status === 'True') ? true : undefined;
        },
        `the status of ${name} written`,
        60_000,
        200,
      );
    const names = ['quiet-before', 'quiet-after'];
    const [p1, p2] = (await freePorts(2)) as [number, number];
    const body = (name: string, port: number) => callVirtualService(name, port, { proxySelector: ingressLabels('delta'), workerSelector: WORKER_LABELS, sinkPort: ports.sink, healthPort: ports.health });
    try {
      // The status writer now holds a kept-alive connection, idle.
      await api.createNamespacedCustomObject({ ...group, body: body('quiet-before', p1) });
      await accepted('quiet-before');
      expect(proxy.freeze()).toBeGreaterThanOrEqual(1);
      // The next status write goes out on that silent connection: before, it waited there for good.
      await api.createNamespacedCustomObject({ ...group, body: body('quiet-after', p2) });
      await accepted('quiet-after').catch((err: Error) => {
        throw new Error(`${err.message}; vsxds logged:\n${vsxds.output().split('\n').slice(-40).join('\n')}`);
      });
    } finally {
      for (const name of names) await api.deleteNamespacedCustomObject({ ...group, name }).catch(() => undefined);
    }
  });

  it('a worker pod deleted: its calls finish on it (Terminating, DEGRADED in Envoy) without loss, new calls avoid it, calls elsewhere lose nothing', async () => {
    const w = WORKERS[2] as { name: string; ip: string };
    // With the finalizer a deleted pod stays Terminating, as during a kubelet's grace period.
    await readyPod(kube, w.name, WORKER_LABELS, w.ip, true);
    try {
      const { faultAt, records } = await underFault(async () => {
        await kube.kubectlOk(['delete', 'pod', w.name, '--wait=false']);
        await new Promise((resolve) => setTimeout(resolve, PLAN.lifetimeMs + 1_000));
      });
      for (const m of MODES) {
        await expectCallsUnharmed(m, faultAt, records[m]);
        const f = workerFault(records[m], w.name, faultAt);
        expect(f.onIt, `${m}: calls on ${w.name} when it was deleted`).toBeGreaterThan(0);
        expect(f.moved, `${m}: calls that left the draining worker: ${JSON.stringify(f)}`).toBe(0);
        expect(f.lostOnIt).toBe(0);
        expect(f.newCalls).toBeGreaterThan(0);
        expect(f.newCallsOnItAfter1s, `${m}: calls created after the delete on the draining worker`).toBe(0);
      }
    } finally {
      await kube.kubectlOk(['patch', 'pod', w.name, '--type=merge', '-p', '{"metadata":{"finalizers":null}}']);
      await waitUntil(async () => ((await kube.kubectl(['get', 'pod', w.name])).code !== 0 ? true : undefined), `${w.name} gone`, 30_000);
      await readyPod(kube, w.name, WORKER_LABELS, w.ip);
    }
  });

  it("a worker's health port stops answering: its calls move to the other workers, new calls avoid it", async () => {
    const w = WORKERS[1] as { name: string; ip: string };
    try {
      const { faultAt, records } = await underFault(() => sinks.setHealth(w.name, false));
      for (const m of MODES) {
        expect(summarize(records[m]).neverConnected).toBe(0);
        // Calls that ended within 2 s had no time to move.
        const f = workerFault(records[m], w.name, faultAt, 2_000);
        expect(f.onIt, `${m}: calls on ${w.name} when its health port went`).toBeGreaterThan(0);
        expect(f.moved, `${m}: ${JSON.stringify(f)}`).toBe(f.onIt);
        expect(f.newCallsOnItAfter1s, `${m}: calls created after on the unhealthy worker`).toBe(0);
        // Calls on the other workers are untouched.
        const others = establishedAt(records[m], faultAt).filter((r) => !r.byWorker[w.name]);
        expect(others.filter((r) => lostBetween(r, ownFirstAt(r) as number) > 0).length, `${m}: calls elsewhere that lost datagrams`).toBe(0);
      }
    } finally {
      await sinks.setHealth(w.name, true);
    }
  });

  it('a burst of VirtualServices created at once and deleted at once: vsxds stays ready, calls are unaffected', async () => {
    const BURST = 300;
    const group = 'servicemesh.l7mp.io';
    let notReady = 0;
    let statusesWritten = 0;
    const { faultAt, records } = await underFault(async () => {
      const probe = setInterval(() => void fetch(`http://127.0.0.1:${ports.admin}/readyz`).then((r) => void (r.ok || (notReady += 1)), () => void (notReady += 1)), 200);
      proxy.resetMostLive();
      try {
        const names = Array.from({ length: BURST }, (_, i) => `burst-${i}`);
        await Promise.all(names.map((name, i) =>
          api.createNamespacedCustomObject({
            group, version: 'v1', namespace: 'default', plural: 'virtualservices',
            body: { apiVersion: `${group}/v1`, kind: 'VirtualService', metadata: { name, namespace: 'default' }, spec: { selector: { app: 'faults-bulk' }, listeners: [{ name, udp: { port: 40000 + i, cluster: { name, service_discovery: 'eds', endpoints: [{ name: 'w', host: { selector: WORKER_LABELS }, port: ports.sink }] } } }] } },
          }),
        ));
        const known = async () => Object.keys(await vsxds.admin('/debug/virtualservices')).filter((k) => k.startsWith('default/burst-')).length;
        await waitUntil(async () => ((await known()) === BURST ? true : undefined), 'the burst seen', 60_000, 200);
        // Every status of the burst is written, while vsxds keeps its connections to the API
        // server few: its status writes wait their turn in vsxds, not all at once in its HTTP
        // agent (16 connections), where their request timeouts ran out under 10,000 (bench B6).
        statusesWritten = await waitUntil(async () => {
          const list = (await api.listNamespacedCustomObject({ group, version: 'v1', namespace: 'default', plural: 'virtualservices' })) as { items: Array<{ metadata: { name: string }; status?: { conditions?: Array<{ type: string; status: string }> } }> };
          const written = list.items.filter((vs) => vs.metadata.name.startsWith('burst-') && vs.status?.conditions?.some((c) => c.type === 'Accepted' && c.status === 'True')).length;
          return written === BURST ? written : undefined;
        }, 'the statuses of the burst written', 60_000, 500);
        await Promise.all(names.map((name) => api.deleteNamespacedCustomObject({ group, version: 'v1', namespace: 'default', plural: 'virtualservices', name })));
        await waitUntil(async () => ((await known()) === 0 ? true : undefined), 'the burst gone', 60_000, 200);
      } finally {
        clearInterval(probe);
      }
    });
    expect(notReady).toBe(0);
    expect(statusesWritten).toBe(BURST);
    // Status writes (8 at once) and the rest: two watches, started over every 2 s here (an old one
    // may still be closing), the lease, the replica's ConfigMap: 14-16 seen. All 300 writes at
    // once took all 16 of the status writer's HTTP agent, 23 in all (the 2 watches, lease and
    // ConfigMap alone make 20 with those 16).
    expect(proxy.mostLive, 'connections from vsxds to the API server at once').toBeLessThanOrEqual(19);
    for (const m of MODES) await expectCallsUnharmed(m, faultAt, records[m]);
  });
});
