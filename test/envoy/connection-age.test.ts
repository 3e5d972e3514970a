import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnvoy, type AdsApiType, type Envoy } from '../support/envoy.js';
import { changedStats, upToDateReconnect, printEnvoyLogsOnFailure, TwoReplicas, type VsxdsProcess } from '../support/envoy-scenario.js';
import { udpEventually, UdpStream } from '../support/udp.js';
import { waitUntil } from '../support/wait.js';

const MODES: AdsApiType[] = ['GRPC', 'DELTA_GRPC'];
const NODE = 'default/ingress-1';

describe.each(MODES)('an Envoy on %s whose xDS connection ages out between two replicas', { timeout: 120_000 }, (apiType) => {
  let setup: TwoReplicas;
  let envoy: Envoy | undefined;
  let udp: UdpStream | undefined;
  let ports: TwoReplicas['ports'];
  let replicas: readonly VsxdsProcess[];
  printEnvoyLogsOnFailure(() => [envoy]);

  beforeAll(async () => {
    const age = ['--max-connection-age-ms', '3000', '--max-connection-age-grace-ms', '300'];
    setup = await TwoReplicas.start('vsxds-age-', (name) => [...age, '--replica-name', name]);
    ({ ports, replicas } = setup);
  });
  afterAll(async () => {
    udp?.stop();
    await envoy?.stop();
    await setup?.stop();
  });

  it('reconnects after the age without anything re-sent, no configuration change and no datagram lost', async () => {
    envoy = await startEnvoy({ name: `age-${apiType}`, bootstrap: setup.bootstrap(NODE, apiType) });
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
