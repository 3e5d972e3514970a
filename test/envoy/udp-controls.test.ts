/**
 * The udp_proxy controls of a VirtualService with a real Envoy and real datagrams: session idle
 * timeout, the per-session access log, hashing on the client's source IP, per-packet load
 * balancing, endpoint weights and the per-cluster session limit. Workers are UDP echo servers on
 * loopback IPs of their own that answer with their name; clients bind loopback IPs of their own too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adsBootstrap, startEnvoy, type AdsApiType, type Envoy } from '../support/envoy.js';
import { FileVsxds, pod, printEnvoyLogsOnFailure, stat, virtualService, waitForStats } from '../support/envoy-scenario.js';
import { answeredBy, freePort, UdpClient, UdpEcho, udpEventually, udpRoundTrip, waitUntil } from '../support/udp.js';

const MODES: AdsApiType[] = ['GRPC', 'DELTA_GRPC'];
const LISTENERS = ['idle', 'default-idle', 'by-ip', 'per-packet', 'per-session', 'weighted', 'limited'] as const;
type ListenerName = (typeof LISTENERS)[number];
const SESSION_LIMIT = 3;

describe.each(MODES)('udp_proxy controls, Envoy on %s', { timeout: 180_000 }, (apiType) => {
  const subnet = 30 + MODES.indexOf(apiType);
  const workerIps = [`127.${subnet}.0.2`, `127.${subnet}.0.3`];
  const echoes: UdpEcho[] = [];
  const port = {} as Record<ListenerName, number>;
  let echoPort: number;
  let vsxds: FileVsxds;
  let envoy: Envoy;
  let envoyClusters: Record<string, string>;

  printEnvoyLogsOnFailure(() => [envoy]);

  const workers = { selector: { app: 'worker' } };
  const cluster = (name: string, extra: object = {}, endpoints: object[] = [{ host: workers, port: echoPort }]) => ({ name, service_discovery: 'eds', endpoints, ...extra });
  const listener = (name: ListenerName, clusterSpec: object, udp: object = {}) => ({ name, udp: { port: port[name], cluster: clusterSpec, ...udp } });

  beforeAll(async () => {
    echoPort = await freePort();
    for (const name of LISTENERS) port[name] = await freePort();
    for (const [i, ip] of workerIps.entries()) echoes.push(await UdpEcho.start(`w${i + 1}`, ip, echoPort));
    const first = [{ host: { address: workerIps[0] }, port: echoPort }];
    const vs = virtualService('controls', { app: 'ingress' }, [
      listener('idle', cluster('idle', {}, first), { idle_timeout_ms: 300, access_log: { destination: 'stdout' } }),
      listener('default-idle', cluster('default-idle', {}, first)),
      listener('by-ip', cluster('by-ip', { hash_source_ip: true })),
      listener('per-packet', cluster('per-packet'), { per_packet_load_balancing: true }),
      listener('per-session', cluster('per-session')),
      listener('weighted', cluster('weighted', {}, workerIps.map((ip, i) => ({ host: { address: ip }, port: echoPort, weight: i === 0 ? 4 : 1 })))),
      listener('limited', cluster('limited', { max_sessions: SESSION_LIMIT }, first)),
    ]);
    vsxds = await FileVsxds.start({
      'pods.yaml': workerIps.map((ip, i) => pod(`worker-${i + 1}`, { app: 'worker' }, ip)),
      'controls.yaml': [vs],
    });
    envoy = await startEnvoy({
      name: `controls-${apiType}`,
      bootstrap: adsBootstrap({ nodeId: 'default/ingress-1', metadata: { namespace: 'default', labels: { app: 'ingress' } }, xdsPort: vsxds.xdsPort, apiType }),
    });
    let last: any;
    const status = await waitUntil(async () => {
      last = (await vsxds.admin('/debug/virtualservices'))['default/controls'];
      return last?.conditions?.find((c: any) => c.type === 'Synced')?.status === 'True' ? last : undefined;
    }, () => `the VirtualService Synced: ${JSON.stringify(last)}`);
    envoyClusters = status.envoyClusters;
    expect(status.sessionLimits).toEqual({ limited: SESSION_LIMIT });
    // Every cluster has its hosts, and the listeners are up (a first session on one that it does not disturb).
    await waitForStats(envoy, Object.values(envoyClusters).map((c) => `cluster.${c}.membership_healthy`), (v) => v >= 1, 'hosts in every cluster');
    await udpEventually(port['per-session'], 'ready?');
  }, 120_000);

  afterAll(async () => {
    await envoy?.stop();
    await vsxds?.stop();
    for (const e of echoes) await e.close();
  });

  it('ends an idle session after idle_timeout_ms and logs it: bytes and datagrams each way, the upstream host', async () => {
    const short = await UdpClient.open();
    const long = await UdpClient.open();
    try {
      for (let i = 0; i < 3; i++) {
        expect(await short.request(port['idle'], 'hello')).toBe('w1|hello');
        expect(await long.request(port['default-idle'], 'hello')).toBe('w1|hello');
      }
      // The listener with 300 ms ends its session; the one with Envoy's default (60 s) keeps its own.
      const stats = await waitForStats(envoy, ['udp.idle.idle_timeout', 'udp.idle.downstream_sess_active'], (v, n) => (n.endsWith('idle_timeout') ? v === 1 : v === 0), 'the idle session ended');
      expect(stat(stats, 'udp.default-idle.downstream_sess_active')).toBe(1);
      expect(stat(stats, 'udp.default-idle.idle_timeout')).toBe(0);

      const entry = await waitUntil(() => accessLogEntries(envoy).find((e) => e['client'] === short.address), `an access log entry for ${short.address}`);
      expect(entry).toMatchObject({
        listener: 'idle',
        type: 'UdpSessionEnd',
        upstream_host: `${workerIps[0]}:${echoPort}`,
        upstream_cluster: envoyClusters['idle'],
        listener_address: `127.0.0.1:${port['idle']}`,
      });
      expect(Number(entry['bytes_from_client'])).toBe(3 * 'hello'.length);
      expect(Number(entry['bytes_to_client'])).toBe(3 * 'w1|hello'.length);
      expect(Number(entry['datagrams_from_client'])).toBe(3);
      expect(Number(entry['datagrams_to_client'])).toBe(3);
      expect(Date.parse(String(entry['start_time']))).toBeLessThanOrEqual(Date.parse(String(entry['log_time'])));
      // Only the listener that asked for it logs.
      expect(accessLogEntries(envoy).filter((e) => e['listener'] !== 'idle')).toEqual([]);
    } finally {
      await Promise.all([short.close(), long.close()]);
    }
  });

  it('hashes on the source IP: each client sticks to one worker, and clients spread over the workers', async () => {
    const byClient = new Map<string, Set<string | undefined>>();
    for (let c = 0; c < 24; c++) {
      const from = `127.${subnet}.1.${c + 1}`;
      const seen = new Set<string | undefined>();
      // Fresh sockets, so fresh sessions: only the IP is the same.
      for (let s = 0; s < 3; s++) seen.add(answeredBy(await udpRoundTrip(port['by-ip'], 'who', 3_000, from)));
      byClient.set(from, seen);
    }
    for (const [from, seen] of byClient) expect([...seen], `workers that answered ${from}`).toHaveLength(1);
    const used = new Set([...byClient.values()].flatMap((s) => [...s]));
    expect([...used].sort()).toEqual(['w1', 'w2']);
  });

  it('balances every datagram with per_packet_load_balancing, and every session without it', async () => {
    const answers = async (listenerName: ListenerName) => {
      const client = await UdpClient.open();
      const seen = new Set<string | undefined>();
      try {
        for (let i = 0; i < 40; i++) seen.add(answeredBy(await client.request(port[listenerName], `p${i}`)));
      } finally {
        await client.close();
      }
      return [...seen].sort();
    };
    // One socket: one session. Per packet, 40 datagrams all on one of two workers once in 2^39.
    expect(await answers('per-packet')).toEqual(['w1', 'w2']);
    expect(await answers('per-session')).toHaveLength(1);
  });

  it('gives a worker of weight 4 about four times the sessions of a worker of weight 1', async () => {
    const count = new Map<string | undefined, number>();
    const SESSIONS = 200;
    for (let i = 0; i < SESSIONS; i++) {
      const by = answeredBy(await udpRoundTrip(port['weighted'], `s${i}`));
      count.set(by, (count.get(by) ?? 0) + 1);
    }
    const heavy = count.get('w1') ?? 0;
    const light = count.get('w2') ?? 0;
    console.log(`MEASURE: weighted sessions (${apiType}): weight 4 got ${heavy}, weight 1 got ${light} of ${SESSIONS}`);
    expect(heavy + light).toBe(SESSIONS);
    // 80% expected; unweighted would be 50%. Bounds are about 3.5 standard deviations out.
    expect(heavy / SESSIONS).toBeGreaterThan(0.68);
    expect(heavy / SESSIONS).toBeLessThan(0.92);
  });

  it('lets max_sessions sessions through and counts the rest as upstream_cx_overflow', async () => {
    const clients = await Promise.all(Array.from({ length: SESSION_LIMIT + 3 }, () => UdpClient.open()));
    const overflow = `cluster.${envoyClusters['limited']}.upstream_cx_overflow`;
    try {
      const answered: boolean[] = [];
      for (const c of clients) answered.push((await c.request(port['limited'], 'hi', 1_000)) !== undefined);
      expect(answered).toEqual([true, true, true, false, false, false]);
      const stats = await waitForStats(envoy, [overflow], (v) => v === 3, 'three sessions over the limit');
      expect(stat(stats, 'udp.limited.downstream_sess_active')).toBe(SESSION_LIMIT);
      // The other clusters keep the default limit.
      expect(stat(stats, `cluster.${envoyClusters['per-session']}.upstream_cx_overflow`)).toBe(0);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });
});

/** The JSON lines of the session access log in what Envoy printed. */
function accessLogEntries(envoy: Envoy): Array<Record<string, unknown>> {
  return envoy
    .logTail(2000)
    .split('\n')
    .filter((line) => line.startsWith('{') && line.includes('"listener"'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}
