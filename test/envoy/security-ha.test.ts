import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Running } from '../../src/main/serve.js';
import { TestCa } from '../support/certs.js';
import { pointAtVsxds, startEnvoy, type AdsApiType, type Envoy } from '../support/envoy.js';
import {
  changedStats,
  cliSettings,
  upToDateReconnect,
  EXAMPLES_DIR,
  listener,
  pod,
  printEnvoyLogsOnFailure,
  TwoReplicas,
  virtualService,
  writeDocs,
  type VsxdsProcess,
} from '../support/envoy-scenario.js';
import { freePorts, udpEventually, UdpEcho } from '../support/udp.js';
import { waitUntil } from '../support/wait.js';

const MODES: AdsApiType[] = ['GRPC', 'DELTA_GRPC'];

/** One listener on `port` forwarding to the echo on `echoPort`, for proxies labelled app=ingress. */
function pipeline(port: number, echoPort: number): object[] {
  return [virtualService('media', { app: 'ingress' }, [listener('rtp', port, { name: 'app', to: { address: '127.0.0.1' }, port: echoPort })])];
}

describe.each(MODES)('an Envoy on %s moving between two vsxds replicas', { timeout: 120_000 }, (apiType) => {
  let setup: TwoReplicas;
  let envoy: Envoy | undefined;
  let ports: TwoReplicas['ports'];
  let replicas: readonly VsxdsProcess[];
  printEnvoyLogsOnFailure(() => [envoy]);

  beforeAll(async () => {
    setup = await TwoReplicas.start('vsxds-ha-');
    ({ ports, replicas } = setup);
  });
  afterAll(async () => {
    await envoy?.stop();
    await setup?.stop();
  });

  it('keeps its configuration, unchanged and not re-sent, when its replica dies and it reconnects to the other', async () => {
    envoy = await startEnvoy({ name: `ha-${apiType}`, bootstrap: setup.bootstrap('default/ingress-1', apiType) });
    expect(await udpEventually(ports.rtp, 'before')).toBe('app|before');

    const syncz = (r: VsxdsProcess) => r.admin<any[]>('/debug/syncz').catch(() => []);
    const [first, second] = await waitUntil(async () => {
      for (const [i, r] of replicas.entries()) {
        if ((await syncz(r)).some((p) => p.synced)) return i === 0 ? [replicas[0], replicas[1]] : [replicas[1], replicas[0]];
      }
      return undefined;
    }, 'the replica Envoy connected to') as [VsxdsProcess, VsxdsProcess];
    const before = await envoy.stats();
    await first.kill();

    const moved = await waitUntil(async () => (await syncz(second)).find((p) => p.node === 'default/ingress-1' && p.synced), 'Envoy on the other replica', 60_000);
    // The other replica computed the same versions, so it had nothing to send.
    const upToDate = upToDateReconnect(apiType);
    for (const type of ['CDS', 'LDS']) expect(moved.types[type]?.responses ?? 0).toBe(upToDate.responses);
    expect(changedStats(before, await envoy.stats(), upToDate.churnStats)).toEqual({});
    expect(await udpEventually(ports.rtp, 'after')).toBe('app|after');
  });
});

describe.each(MODES)('an Envoy on %s talking to vsxds over mutual TLS with node authentication', { timeout: 120_000 }, (apiType) => {
  let dir: string;
  let vsxds: Running;
  let echo: UdpEcho;
  let ca: TestCa;
  const envoys: Envoy[] = [];
  let ports: { rtp: number; echo: number };
  printEnvoyLogsOnFailure(() => envoys);

  beforeAll(async () => {
    const [rtp, echoPort] = await freePorts(2);
    ports = { rtp, echo: echoPort } as typeof ports;
    ca = new TestCa();
    const server = ca.issue('vsxds', { san: ['IP:127.0.0.1'] });
    dir = await mkdtemp(path.join(os.tmpdir(), 'vsxds-mtls-'));
    await writeDocs(dir, 'media.yaml', pipeline(ports.rtp, ports.echo));
    await writeDocs(dir, 'pods.yaml', [pod('ingress-1', { app: 'ingress' }, '127.0.0.1'), pod('worker-1', { app: 'worker' }, '127.0.0.2')]);
    echo = await UdpEcho.start('app', '127.0.0.1', ports.echo);
    vsxds = await serve(
      cliSettings([
        '--source', `file:${dir}`,
        '--xds-address', '127.0.0.1:0',
        '--admin-address', '127.0.0.1:0',
        '--coalesce-ms', '20',
        '--log-level', process.env['VSXDS_TEST_LOG'] ?? 'silent',
        '--xds-tls-cert', server.certPath,
        '--xds-tls-key', server.keyPath,
        '--xds-tls-client-ca', ca.certPath,
        '--node-auth', 'client-cert',
        '--shutdown-grace-ms', '100',
      ]),
      {},
    );
  });
  afterAll(async () => {
    for (const e of envoys) await e.stop();
    await vsxds?.shutdown('test over');
    await echo?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** examples/envoy/ingress-mtls.yaml with this test's files, port and ADS mode. */
  async function mtlsBootstrap(nodeId: string, certName: string, san: string): Promise<object> {
    const client = ca.issue(certName, { client: true, san: [san] });
    const text = (await readFile(path.join(EXAMPLES_DIR, 'envoy', 'ingress-mtls.yaml'), 'utf8'))
      .replaceAll('/etc/vsxds-client/tls.crt', client.certPath)
      .replaceAll('/etc/vsxds-client/tls.key', client.keyPath)
      .replaceAll('/etc/vsxds-client/ca.crt', ca.certPath);
    const bootstrap = pointAtVsxds(parseYaml(text), { xdsPort: vsxds.xdsPort, apiType });
    bootstrap.node.id = nodeId;
    delete bootstrap.admin;
    return bootstrap;
  }

  it('serves the Envoy whose client certificate names its pod (the mTLS example bootstrap)', async () => {
    const envoy = await startEnvoy({ name: `mtls-${apiType}`, bootstrap: await mtlsBootstrap('default/ingress-1', `ingress-${apiType}`, 'URI:spiffe://cluster.local/ns/default/pod/ingress-1') });
    envoys.push(envoy);
    expect(await udpEventually(ports.rtp, 'secure')).toBe('app|secure');
    expect(await envoy.listeners()).toEqual(['rtp']);
  });

  it('refuses an Envoy that claims another pod than its certificate names, and it gets no configuration', async () => {
    const envoy = await startEnvoy({ name: `impostor-${apiType}`, bootstrap: await mtlsBootstrap('default/worker-1', `impostor-${apiType}`, 'URI:spiffe://cluster.local/ns/default/pod/ingress-1') });
    envoys.push(envoy);
    const admin = async (p: string) => (await fetch(`http://127.0.0.1:${vsxds.adminPort}${p}`)).text();
    // Envoy logs a closed config stream only at debug level at first; vsxds says why it ended it.
    const refusal = await waitUntil(async () => JSON.parse(await admin('/debug/stream_errors')).find((e: any) => e.nodeId === 'default/worker-1'), 'vsxds to refuse the stream');
    expect(refusal).toMatchObject({ code: 'PERMISSION_DENIED', details: 'the client certificate names default/ingress-1, not pod default/worker-1' });
    expect(await admin('/metrics')).toMatch(/vsxds_xds_stream_errors_total\{code="PERMISSION_DENIED"\} [1-9]/);
    // Envoy keeps retrying, so its connected_state flips to 1 for each new stream until that one
    // is refused too: what must hold is that none of them delivered any configuration.
    const stats = await envoy.stats();
    expect(stats.get('cluster_manager.cds.update_success') ?? 0).toBe(0);
    expect(stats.get('listener_manager.lds.update_success') ?? 0).toBe(0);
    expect(await envoy.listeners()).toEqual([]);
    expect(vsxds.ads.status.list().filter((p) => p.group?.key === 'default/app=worker')).toEqual([]);
  });
});
