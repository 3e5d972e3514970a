/**
 * The examples pipeline with real Envoys: examples/virtualservices served by the file source,
 * an ingress Envoy and a worker sidecar Envoy bootstrapped from examples/envoy, and real
 * datagrams from a client through both proxies to the media app and back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pointAtVsxds, startEnvoy, type AdsApiType, type Envoy } from '../support/envoy.js';
import { EXAMPLE_PORTS, FileVsxds, loadExamples, printEnvoyLogsOnFailure, waitForStats, type Examples } from '../support/envoy-scenario.js';
import { freePort, TcpPort, UdpEcho, udpEventually, waitUntil } from '../support/udp.js';

const MODES: AdsApiType[] = ['GRPC', 'DELTA_GRPC'];
// examples/virtualservices/pods.yaml: the worker pods, health checked on 1233.
const WORKER_IPS = ['127.0.0.2', '127.0.0.3'];

describe.each(MODES)('the examples pipeline through real Envoys on %s', { timeout: 120_000 }, (apiType) => {
  const port = new Map<number, number>();
  const sockets: Array<UdpEcho | TcpPort> = [];
  let vsxds: FileVsxds;
  let ingress: Envoy;
  let worker: Envoy;
  let clusters: Examples['clusters'];

  printEnvoyLogsOnFailure(() => [ingress, worker]);

  beforeAll(async () => {
    for (const p of EXAMPLE_PORTS) port.set(p, await freePort());
    const examples = await loadExamples(port);
    clusters = examples.clusters;
    // The media app behind the worker sidecar (examples/virtualservices/worker.yaml), and the
    // workers' health-check port.
    sockets.push(await UdpEcho.start('app-rtp', '127.0.0.1', port.get(1234)!), await UdpEcho.start('app-rtcp', '127.0.0.1', port.get(1235)!));
    for (const ip of WORKER_IPS) {
      const health = new TcpPort(ip, port.get(1233)!);
      await health.listen();
      sockets.push(health);
    }
    vsxds = await FileVsxds.start(examples.files);
    const ads = { xdsPort: vsxds.xdsPort, apiType };
    [ingress, worker] = await Promise.all([
      startEnvoy({ name: `ingress-${apiType}`, bootstrap: pointAtVsxds(examples.bootstraps.ingress, ads) }),
      startEnvoy({ name: `worker-${apiType}`, bootstrap: pointAtVsxds(examples.bootstraps.worker, ads) }),
    ]);
  }, 60_000);

  afterAll(async () => {
    await Promise.all([ingress?.stop(), worker?.stop()]);
    await vsxds?.stop();
    for (const s of sockets) await s.close();
  });

  it('carries RTP and RTCP from a client through the ingress and the worker sidecar to the app, and the replies back', async () => {
    await waitForStats(ingress, [`cluster.${clusters['worker-rtp']}.membership_healthy`, `cluster.${clusters['worker-rtcp']}.membership_healthy`], (v) => v === WORKER_IPS.length, 'both workers healthy');
    expect(await udpEventually(port.get(2000)!, 'rtp hello')).toBe('app-rtp|rtp hello');
    expect(await udpEventually(port.get(2002)!, 'rtcp hello')).toBe('app-rtcp|rtcp hello');
    // Both hops forwarded both ways: the ingress listeners and the sidecar's listeners received
    // the datagrams and sent the replies. (Polled: Envoy's worker thread counts a reply just
    // after sending it, so the client can be first.)
    const counted = (listeners: string[]) => listeners.flatMap((l) => [`udp.${l}.downstream_sess_rx_datagrams`, `udp.${l}.downstream_sess_tx_datagrams`]);
    await waitForStats(ingress, counted(['ingress-rtp', 'ingress-rtcp']), (v) => v > 0, 'datagrams counted both ways');
    await waitForStats(worker, counted(['worker-rtp', 'worker-rtcp']), (v) => v > 0, 'datagrams counted both ways');
  });

  it('shows both proxies in sync and both VirtualServices live on them', async () => {
    const syncz = await waitUntil(async () => {
      const proxies = await vsxds.admin<any[]>('/debug/syncz');
      return proxies.length === 2 && proxies.every((p) => p.synced) ? proxies : undefined;
    }, 'both proxies synced');
    expect(syncz.map((p) => [p.node, p.group, p.mode]).sort()).toEqual([
      ['default/ingress-1', 'default/app=ingress', apiType === 'GRPC' ? 'sotw' : 'delta'],
      ['default/worker-1', 'default/app=worker', apiType === 'GRPC' ? 'sotw' : 'delta'],
    ]);
    const statuses = await waitUntil(async () => {
      const all = await vsxds.admin('/debug/virtualservices');
      const synced = (key: string) => all[key]?.conditions?.find((c: any) => c.type === 'Synced')?.status === 'True';
      return synced('default/ingress') && synced('default/worker') ? all : undefined;
    }, 'both VirtualServices Synced=True');
    expect(statuses['default/ingress'].proxies).toMatchObject({ matched: 1, synced: 1, nacked: 0 });
    expect(statuses['default/worker'].proxies).toMatchObject({ matched: 1, synced: 1, nacked: 0 });
  });
});
