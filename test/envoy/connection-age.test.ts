import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adsBootstrap, startEnvoy, type AdsApiType, type Envoy } from '../support/envoy.js';
import { changedStats, listener, upToDateReconnect, printEnvoyLogsOnFailure, startVsxdsProcess, virtualService, writeDocs, type VsxdsProcess } from '../support/envoy-scenario.js';
import { freePorts, udpEventually, UdpEcho, UdpStream } from '../support/udp.js';
import { waitUntil } from '../support/wait.js';

const MODES: AdsApiType[] = ['GRPC', 'DELTA_GRPC'];
const NODE = 'default/ingress-1';

describe.each(MODES)('an Envoy on %s whose xDS connection ages out between two replicas', { timeout: 120_000 }, (apiType) => {
  let dir: string;
  let echo: UdpEcho;
  let envoy: Envoy | undefined;
  let udp: UdpStream | undefined;
  const replicas: VsxdsProcess[] = [];
  let ports: { a: number; b: number; adminA: number; adminB: number; rtp: number; echo: number };
  printEnvoyLogsOnFailure(() => [envoy]);

  beforeAll(async () => {
    const [a, b, adminA, adminB, rtp, echoPort] = await freePorts(6);
    ports = { a, b, adminA, adminB, rtp, echo: echoPort } as typeof ports;
    dir = await mkdtemp(path.join(os.tmpdir(), 'vsxds-age-'));
    await writeDocs(dir, 'media.yaml', [virtualService('media', { app: 'ingress' }, [listener('rtp', ports.rtp, { name: 'app', to: { address: '127.0.0.1' }, port: ports.echo })])]);
    echo = await UdpEcho.start('app', '127.0.0.1', ports.echo);
    const age = ['--max-connection-age-ms', '3000', '--max-connection-age-grace-ms', '300'];
    replicas.push(await startVsxdsProcess({ dir, xdsPort: ports.a, adminPort: ports.adminA, extraArgs: [...age, '--replica-name', 'a'] }));
    replicas.push(await startVsxdsProcess({ dir, xdsPort: ports.b, adminPort: ports.adminB, extraArgs: [...age, '--replica-name', 'b'] }));
  });
  afterAll(async () => {
    udp?.stop();
    await envoy?.stop();
    for (const r of replicas) await r.kill();
    await echo?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reconnects after the age without anything re-sent, no configuration change and no datagram lost', async () => {
    const bootstrap = adsBootstrap({ nodeId: NODE, metadata: { namespace: 'default', labels: { app: 'ingress' } }, xdsPort: ports.a, apiType });
    // Both replicas behind one cluster, as behind a Kubernetes Service.
    bootstrap.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints.push({ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: ports.b } } } });
    envoy = await startEnvoy({ name: `age-${apiType}`, bootstrap });
    expect(await udpEventually(ports.rtp, 'before')).toBe('app|before');
    const before = await envoy.stats();
    const connections = () => envoy!.stats().then((s) => s.get('cluster.vsxds.upstream_cx_total') ?? 0);
    const startConnections = await connections();
    udp = await UdpStream.start(ports.rtp, 20);

    // Three more connections: each older one was ended by its age.
    await waitUntil(async () => (await connections()) >= startConnections + 3, 'Envoy to reconnect three times', 60_000, 200);
    // Its current stream, on whichever replica, was sent nothing: the versions are the same.
    const current = await waitUntil(async () => {
      for (const r of replicas) {
        const p = ((await r.admin<any[]>('/debug/syncz').catch(() => [])) ?? []).find((x) => x.node === NODE && x.synced);
        if (p) return p;
      }
      return undefined;
    }, 'Envoy synced on a replica', 30_000);
    // (Delta: one empty response, which ends the proxy's initialization; no resource in it.)
    const upToDate = upToDateReconnect(apiType);
    for (const type of ['CDS', 'LDS']) expect(current.types[type]?.responses ?? 0).toBe(upToDate.responses);
    expect(changedStats(before, await envoy.stats(), upToDate.churnStats)).toEqual({});

    // Envoy's cluster balances connections round robin, as a Service would: it moved between both.
    for (const r of replicas) expect(r.output().split('\n').filter((l) => l.includes('"msg":"proxy connected"') && l.includes(NODE)).length).toBeGreaterThan(0);

    udp.pause();
    const sent = udp.sent;
    await waitUntil(() => udp!.replies.length >= sent, () => `a reply to each of the ${sent} datagrams (have ${udp!.replies.length})`, 10_000);
    expect(udp.replies.length).toBe(sent);
  });
});
