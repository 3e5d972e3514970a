/**
 * An ingress at media scale: 10,000 concurrent UDP sessions through one listener of a real Envoy,
 * in both ADS modes. Envoy's udp_proxy counts every session against its cluster's max_connections
 * circuit breaker, 1,024 when the control plane sets none, and drops every session past it without
 * a word; vsxds sets it (1,000,000 unless a cluster's max_sessions says otherwise).
 *
 * The listener is the examples' (a constant hash key, TCP health checks on the workers), with the
 * idle timeout raised so that no session ends while the others are set up on a slow machine. Each
 * session is a client socket of its own, on one of 100 loopback IPs; at most WINDOW datagrams are
 * in flight at once, so no socket buffer on the way overflows, and a datagram without an answer is
 * sent again on the same socket (the same session). The test asserts outcomes: every session was
 * answered, Envoy holds all of them at once, none overflowed, and the workers saw one upstream
 * socket per session. SESSIONS_TEST_MAX_SESSIONS=1024 gives the cluster the old cap and makes it fail.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adsBootstrap, startEnvoy, type AdsApiType, type Envoy } from '../support/envoy.js';
import { FileVsxds, pod, printEnvoyLogsOnFailure, stat, virtualService, waitForStats } from '../support/envoy-scenario.js';
import { freePorts, TcpPort, UdpClient, UdpEcho, waitUntil } from '../support/udp.js';

const MODES: AdsApiType[] = ['GRPC', 'DELTA_GRPC'];
const SESSIONS = 10_000;
const CLIENT_IPS = 100;
const WINDOW = 64;
const ATTEMPTS = 5;
const BREAK_LIMIT = process.env['SESSIONS_TEST_MAX_SESSIONS'];

/** The soft limit on open files of this process: every client socket is one. */
function openFileLimit(): number {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === 'unlimited' ? Infinity : Number(soft);
}

describe.each(MODES)('10,000 concurrent sessions through one listener, Envoy on %s', { timeout: 300_000 }, (apiType) => {
  const subnet = 40 + MODES.indexOf(apiType);
  const workerIps = [`127.${subnet}.0.2`, `127.${subnet}.0.3`];
  const echoes: UdpEcho[] = [];
  const health: TcpPort[] = [];
  const clients: UdpClient[] = [];
  let listenPort: number;
  let vsxds: FileVsxds;
  let envoy: Envoy;
  let envoyCluster: string;

  printEnvoyLogsOnFailure(() => [envoy]);

  beforeAll(async () => {
    const limit = openFileLimit();
    if (limit < SESSIONS + 2_000) throw new Error(`this test opens ${SESSIONS} UDP sockets; raise the open-file limit (ulimit -n is ${limit}, needs ${SESSIONS + 2_000})`);
    let echoPort: number;
    let healthPort: number;
    [listenPort, echoPort, healthPort] = (await freePorts(3)) as [number, number, number];
    for (const [i, ip] of workerIps.entries()) {
      echoes.push(await UdpEcho.start(`w${i + 1}`, ip, echoPort));
      const h = new TcpPort(ip, healthPort);
      await h.listen();
      health.push(h);
    }
    const cluster = {
      name: 'worker-rtp',
      service_discovery: 'eds',
      hash_key: 'callid',
      health_check: { interval: 1000, protocol: 'TCP' },
      ...(BREAK_LIMIT ? { max_sessions: Number(BREAK_LIMIT) } : {}),
      endpoints: [{ name: 'worker', host: { selector: { app: 'worker' } }, port: echoPort, health_check_port: healthPort }],
    };
    vsxds = await FileVsxds.start({
      'pods.yaml': workerIps.map((ip, i) => pod(`worker-${i + 1}`, { app: 'worker' }, ip)),
      'ingress.yaml': [virtualService('ingress', { app: 'ingress' }, [{ name: 'ingress-rtp', udp: { port: listenPort, idle_timeout_ms: 600_000, cluster } }])],
    });
    envoy = await startEnvoy({
      name: `sessions-${apiType}`,
      bootstrap: adsBootstrap({ nodeId: 'default/ingress-1', metadata: { namespace: 'default', labels: { app: 'ingress' } }, xdsPort: vsxds.xdsPort, apiType }),
    });
    envoyCluster = await waitUntil(async () => (await vsxds.admin('/debug/virtualservices'))['default/ingress']?.envoyClusters?.['worker-rtp'], 'the Envoy cluster name');
    await waitForStats(envoy, [`cluster.${envoyCluster}.membership_healthy`], (v) => v === workerIps.length, 'both workers healthy');
    await waitUntil(async () => (await envoy.listeners()).includes('ingress-rtp'), 'the listener');
    for (let i = 0; i < SESSIONS; i++) clients.push(await UdpClient.open(`127.${subnet + 10}.0.${(i % CLIENT_IPS) + 1}`));
  }, 180_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await envoy?.stop();
    await vsxds?.stop();
    for (const e of echoes) await e.close();
    for (const h of health) await h.close();
  });

  it('answers every session, holds all of them at once, and drops none at the circuit breaker', async () => {
    let next = 0;
    let answered = 0;
    let resent = 0;
    let unanswered = 0;
    const started = Date.now();
    const sender = async () => {
      // After the first session that no attempt got through, the rest are not tried: it has failed.
      while (next < SESSIONS && unanswered === 0) {
        const i = next++;
        const client = clients[i] as UdpClient;
        let reply: string | undefined;
        for (let attempt = 0; attempt < ATTEMPTS && reply === undefined; attempt++) {
          if (attempt > 0) resent++;
          reply = await client.request(listenPort, `session ${i}`, 2_000);
        }
        if (reply === undefined) unanswered++;
        else answered++;
      }
    };
    await Promise.all(Array.from({ length: WINDOW }, sender));
    const seconds = (Date.now() - started) / 1000;

    const stats = await envoy.stats();
    const figures = {
      answered,
      tried: next,
      resent,
      active: stats.get('udp.ingress-rtp.downstream_sess_active'),
      total: stats.get('udp.ingress-rtp.downstream_sess_total'),
      overflow: stats.get(`cluster.${envoyCluster}.upstream_cx_overflow`),
      workerSockets: echoes.reduce((n, e) => n + e.senders.size, 0),
    };
    console.log(`MEASURE: ${SESSIONS} sessions through one listener (${apiType}) in ${seconds.toFixed(1)} s: ${JSON.stringify(figures)}`);

    expect(answered, 'sessions answered by a worker').toBe(SESSIONS);
    expect(stat(stats, `cluster.${envoyCluster}.upstream_cx_overflow`), 'sessions dropped at max_connections').toBe(0);
    expect(stat(stats, 'udp.ingress-rtp.downstream_sess_total')).toBe(SESSIONS);
    // Concurrent: none of them has ended.
    expect(stat(stats, 'udp.ingress-rtp.downstream_sess_active')).toBe(SESSIONS);
    // One upstream socket per session reached the workers.
    expect(figures.workerSockets).toBe(SESSIONS);
  });
});
