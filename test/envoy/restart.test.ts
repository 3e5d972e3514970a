/**
 * vsxds dies (SIGKILL) under running Envoys that forward traffic, and comes back on the same
 * port: traffic never stops, the Envoys reconnect, and their configuration does not churn.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pointAtVsxds, startEnvoy, type AdsApiType, type Envoy } from '../support/envoy.js';
import {
  changedStats,
  EXAMPLE_PORTS,
  loadExamples,
  printEnvoyLogsOnFailure,
  stat,
  startVsxdsProcess,
  upToDateReconnect,
  waitForStats,
  writeDocs,
  type Examples,
  type VsxdsProcess,
} from '../support/envoy-scenario.js';
import { parseVirtualService } from '../../src/model/index.js';
import { envoyClusterSpec } from '../../src/translate/cluster.js';
import { freePort, TcpPort, UdpEcho, udpEventually, UdpStream, waitUntil } from '../support/udp.js';

const MODES: AdsApiType[] = ['GRPC', 'DELTA_GRPC'];
const WORKER_IPS = ['127.0.0.2', '127.0.0.3'];
// Endpoint updates count on the EDS clusters' own stats, not on cds/lds.
const edsStats = (clusters: Examples['clusters']) => {
  const [rtp, rtcp] = [clusters['worker-rtp'], clusters['worker-rtcp']];
  return [`cluster.${rtp}.update_success`, `cluster.${rtcp}.update_success`, `cluster.${rtp}.update_rejected`];
};

describe.each(MODES)('vsxds restarting under Envoys on %s', { timeout: 150_000 }, (apiType) => {
  const port = new Map<number, number>();
  const sockets: Array<UdpEcho | TcpPort> = [];
  let dir: string;
  let ports: { xds: number; admin: number };
  let vsxds: VsxdsProcess | undefined;
  let ingress: Envoy;
  let worker: Envoy;
  let clusters: Examples['clusters'];
  let examples: Examples;
  let stream: UdpStream | undefined;

  printEnvoyLogsOnFailure(() => [ingress, worker]);

  const start = () => startVsxdsProcess({ dir, xdsPort: ports.xds, adminPort: ports.admin });
  const bothSynced = () =>
    waitUntil(async () => {
      const proxies = await (vsxds as VsxdsProcess).admin<any[]>('/debug/syncz');
      return proxies.length === 2 && proxies.every((p) => p.synced) ? proxies : undefined;
    }, 'both proxies connected and synced', 60_000);

  beforeAll(async () => {
    for (const p of EXAMPLE_PORTS) port.set(p, await freePort());
    ports = { xds: await freePort(), admin: await freePort() };
    examples = await loadExamples(port);
    clusters = examples.clusters;
    dir = await mkdtemp(join(tmpdir(), 'vsxds-restart-'));
    for (const [name, docs] of Object.entries(examples.files)) await writeDocs(dir, name, docs);
    sockets.push(await UdpEcho.start('app-rtp', '127.0.0.1', port.get(1234)!), await UdpEcho.start('app-rtcp', '127.0.0.1', port.get(1235)!));
    for (const ip of WORKER_IPS) {
      const health = new TcpPort(ip, port.get(1233)!);
      await health.listen();
      sockets.push(health);
    }
    vsxds = await start();
    const ads = { xdsPort: ports.xds, apiType };
    [ingress, worker] = await Promise.all([
      startEnvoy({ name: `ingress-${apiType}`, bootstrap: pointAtVsxds(examples.bootstraps.ingress, ads) }),
      startEnvoy({ name: `worker-${apiType}`, bootstrap: pointAtVsxds(examples.bootstraps.worker, ads) }),
    ]);
  }, 90_000);

  afterAll(async () => {
    stream?.stop();
    await Promise.all([ingress?.stop(), worker?.stop()]);
    await vsxds?.kill();
    for (const s of sockets) await s.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('keeps traffic flowing while vsxds is down, and the reconnected Envoys get nothing new', async () => {
    await bothSynced();
    await waitForStats(ingress, [`cluster.${clusters['worker-rtp']}.membership_healthy`], (v) => v === WORKER_IPS.length, 'both workers healthy');
    await udpEventually(port.get(2000)!, 'warm up');
    stream = await UdpStream.start(port.get(2000)!);
    await stream.moreReplies(10);
    const before = { ingress: await ingress.stats(), worker: await worker.stats() };

    await (vsxds as VsxdsProcess).kill();
    vsxds = undefined;
    await Promise.all([ingress, worker].map((e) => waitForStats(e, ['control_plane.connected_state'], (v) => v === 0, 'the lost control plane noticed')));
    // The running session, and new sessions, are served from the configuration Envoy holds.
    await stream.moreReplies(20);
    expect(await udpEventually(port.get(2002)!, 'new session while down')).toBe('app-rtcp|new session while down');

    vsxds = await start();
    await Promise.all([ingress, worker].map((e) => waitForStats(e, ['control_plane.connected_state'], (v) => v === 1, 'reconnected', 90_000)));
    const proxies = await bothSynced();
    // The versions are content hashes: what the Envoys hold is current, so nothing was sent.
    const upToDate = upToDateReconnect(apiType);
    for (const p of proxies) {
      for (const [type, state] of Object.entries<any>(p.types)) expect(state.responses, `${p.node} ${type} responses after the restart`).toBe(upToDate.responses);
    }
    await stream.moreReplies(20);
    const after = { ingress: await ingress.stats(), worker: await worker.stats() };
    expect(changedStats(before.ingress, after.ingress, [...upToDate.churnStats, ...edsStats(clusters)])).toEqual({});
    expect(changedStats(before.worker, after.worker, upToDate.churnStats)).toEqual({});
    expect(stream.replies.every((r) => r.startsWith('app-rtp|seq '))).toBe(true);
  });
  it('after the restart, moves a listener to a new cluster of the same workers without losing a datagram', async () => {
    await bothSynced();
    const fast = await UdpStream.start(port.get(2000)!, 2);
    try {
      await fast.moreReplies(100);
      const removedBefore = stat(await ingress.stats(), 'cluster_manager.cluster_removed');
      // Another health check interval: other cluster content, so the listener moves to a new cluster.
      const ingressDocs = structuredClone(examples.files['ingress.yaml']) as any[];
      ingressDocs[0].spec.listeners[0].udp.cluster.health_check.interval = 1500;
      await writeDocs(dir, 'ingress.yaml', ingressDocs);
      const parsed = parseVirtualService(ingressDocs[0], 'default');
      if (!parsed.ok) throw new Error(parsed.message);
      const moved = envoyClusterSpec(parsed.vs.spec.listeners[0]!.udp.cluster, true).name;
      expect(moved).not.toBe(clusters['worker-rtp']);
      // vsxds removes the old cluster only once the listener moved off it.
      await waitForStats(ingress, ['cluster_manager.cluster_removed'], (v) => v > removedBefore, 'the old cluster removed', 60_000);
      await fast.moreReplies(200);
    } finally {
      fast.stop();
    }
    const answered = new Set(fast.replies.map((r) => Number(r.split('seq ')[1])));
    // Every datagram sent before the last 100 was answered (those may still be on their way),
    // except at most two at the moment the listener switched. That one or two are lost in about
    // half the runs here with or without a restart before the move (the same test run alone,
    // `-t "moves a listener"`, has no restart): Envoy's side of switching a UDP listener to a
    // cluster it just added, not make-before-break, which keeps the old cluster (checked above)
    // and, before the fix, lost 10 (SotW) and 18 (delta) after a restart.
    const lost = Array.from({ length: Math.max(0, fast.sent - 100) }, (_, seq) => seq).filter((seq) => !answered.has(seq));
    console.log(`MEASURE: listener moved after the restart (${apiType}): ${lost.length} of ${fast.sent} datagrams lost${lost.length ? ` (seq ${lost.join(', ')})` : ''}`);
    expect(lost.length, `${lost.length} of ${fast.sent} datagrams lost: ${lost.join(', ')}`).toBeLessThanOrEqual(2);
    if (lost.length === 2) expect((lost[1] as number) - (lost[0] as number), 'the two lost datagrams are one moment, the switch').toBeLessThanOrEqual(2);
  });
});
