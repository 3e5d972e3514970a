/**
 * Hash keys and health checks, with a real Envoy forwarding real datagrams to worker "pods"
 * (UDP echo servers, each on its own loopback IP, answering with that IP).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adsBootstrap, startEnvoy, type AdsApiType, type Envoy } from '../support/envoy.js';
import { envoyClusterName, FileVsxds, listener, pod, printEnvoyLogsOnFailure, virtualService, waitForStats, type ClusterOptions } from '../support/envoy-scenario.js';
import { answeredBy, freePort, freePorts, TcpPort, UdpEcho, udpEventually, udpRoundTrip, waitUntil } from '../support/udp.js';

const MODES: AdsApiType[] = ['GRPC', 'DELTA_GRPC'];
const KEYS = 100;
// A VirtualService holds at most 64 listeners.
const KEYS_PER_VS = 50;
// With four workers, RTP and RTCP of five calls meet by chance once in 4^5.
const CALLS = 5;

interface Worker {
  readonly ip: string;
  readonly rtp: UdpEcho;
  readonly rtcp: UdpEcho;
  readonly health: TcpPort;
}

describe.each(MODES)('hash keys and health checks, Envoy on %s', { timeout: 240_000 }, (apiType) => {
  // A /16 of loopback per mode: workers of one suite never answer for the other.
  const subnet = 10 + MODES.indexOf(apiType);
  const workers: Worker[] = [];
  let vsxds: FileVsxds;
  let envoy: Envoy;
  let ports: { rtpEcho: number; rtcpEcho: number; health: number; calls: Array<{ rtp: number; rtcp: number }>; keys: number[] };
  /** Healthy members of the first call's RTP and RTCP clusters, as Envoy names them. */
  let healthyStats: string[];
  const keyCluster = (i: number): ClusterOptions => ({ name: `key-${i}`, to: { selector: { app: 'worker' } }, port: ports.rtpEcho, hashKey: `stream-${i}` });

  printEnvoyLogsOnFailure(() => [envoy]);

  const podsFile = () => workers.map((w, i) => pod(`worker-${i + 1}`, { app: 'worker' }, w.ip));

  async function addWorker(): Promise<Worker> {
    const ip = `127.${subnet}.0.${workers.length + 2}`;
    const health = new TcpPort(ip, ports.health);
    await health.listen();
    const worker = { ip, rtp: await UdpEcho.start(ip, ip, ports.rtpEcho), rtcp: await UdpEcho.start(ip, ip, ports.rtcpEcho), health };
    workers.push(worker);
    return worker;
  }

  /** The worker each hash-key listener sends a new session to. */
  async function keyPlacement(): Promise<string[]> {
    const placement: string[] = [];
    for (const [i, port] of ports.keys.entries()) {
      const by = answeredBy(await udpEventually(port, `key ${i}`, 10_000));
      placement.push(by as string);
    }
    return placement;
  }

  /** Who answers new sessions of a call, on RTP and on RTCP, `samples` times each. */
  async function callPlacement(samples: number, call = 0): Promise<{ rtp: Set<string | undefined>; rtcp: Set<string | undefined> }> {
    const rtp = new Set<string | undefined>();
    const rtcp = new Set<string | undefined>();
    const { rtp: rtpPort, rtcp: rtcpPort } = ports.calls[call] as { rtp: number; rtcp: number };
    for (let i = 0; i < samples; i++) {
      rtp.add(answeredBy(await udpRoundTrip(rtpPort, `rtp ${i}`)));
      rtcp.add(answeredBy(await udpRoundTrip(rtcpPort, `rtcp ${i}`)));
    }
    return { rtp, rtcp };
  }

  beforeAll(async () => {
    const [rtpEcho, rtcpEcho, health] = await freePorts(3);
    ports = { rtpEcho: rtpEcho!, rtcpEcho: rtcpEcho!, health: health!, calls: [], keys: [] };
    for (let i = 0; i < CALLS; i++) ports.calls.push({ rtp: await freePort(), rtcp: await freePort() });
    for (let i = 0; i < KEYS; i++) ports.keys.push(await freePort());
    for (let i = 0; i < 4; i++) await addWorker();

    const workerPods = { selector: { app: 'worker' } };
    // Only the first call is health checked: the health-check story moves it alone.
    const callListeners = ports.calls.flatMap(({ rtp, rtcp }, i) => {
      const hashKey = `call-${i + 1}`;
      const healthCheck = i === 0 ? { intervalMs: 500, port: ports.health } : undefined;
      return [
        listener(`${hashKey}-rtp`, rtp, { name: `${hashKey}-rtp`, to: workerPods, port: ports.rtpEcho, hashKey, healthCheck }),
        listener(`${hashKey}-rtcp`, rtcp, { name: `${hashKey}-rtcp`, to: workerPods, port: ports.rtcpEcho, hashKey, healthCheck }),
      ];
    });
    const firstCall = { to: workerPods, hashKey: 'call-1', healthCheck: { intervalMs: 500, port: ports.health } };
    healthyStats = [ports.rtpEcho, ports.rtcpEcho].map((port) => `cluster.${envoyClusterName({ name: 'call-1', port, ...firstCall })}.membership_healthy`);
    const keyVs = (part: number) =>
      virtualService(
        `keys-${part}`,
        { app: 'ingress' },
        ports.keys
          .slice(part * KEYS_PER_VS, (part + 1) * KEYS_PER_VS)
          .map((port, j) => {
            const i = part * KEYS_PER_VS + j;
            return listener(`key-${i}`, port, keyCluster(i));
          }),
      );
    vsxds = await FileVsxds.start({
      'pods.yaml': podsFile(),
      'calls.yaml': [virtualService('calls', { app: 'ingress' }, callListeners)],
      'keys-0.yaml': [keyVs(0)],
      'keys-1.yaml': [keyVs(1)],
    });
    envoy = await startEnvoy({
      name: `ingress-${apiType}`,
      bootstrap: adsBootstrap({ nodeId: 'default/ingress-1', metadata: { namespace: 'default', labels: { app: 'ingress' } }, xdsPort: vsxds.xdsPort, apiType }),
    });
  }, 120_000);

  afterAll(async () => {
    await envoy?.stop();
    await vsxds?.stop();
    for (const w of workers) await Promise.all([w.rtp.close(), w.rtcp.close(), w.health.close()]);
  });

  it('sends every datagram of one call to one worker, and its RTP and RTCP to the same one', async () => {
    // Health-checked hosts take traffic only once they passed a check; wait for all of them.
    await waitForStats(envoy, healthyStats, (v) => v === 4, 'all workers healthy');
    for (const [call, { rtp: port }] of ports.calls.entries()) {
      await udpEventually(port, 'first');
      const { rtp, rtcp } = await callPlacement(10, call);
      expect(rtp.size, `call-${call + 1} RTP sessions answered by ${[...rtp]}`).toBe(1);
      // The endpoints' hash key is the pod IP, not IP:port, so both streams hash alike.
      expect([...rtcp], `call-${call + 1} RTCP`).toEqual([...rtp]);
      expect(workers.map((w) => w.ip)).toContain([...rtp][0]);
    }
  });

  it('spreads distinct hash keys over the workers, and moves few of them when a worker is added', async () => {
    const before = await keyPlacement();
    // Deterministic: the same keys land on the same workers again.
    expect(await keyPlacement()).toEqual(before);
    expect(new Set(before).size, 'workers used by 100 keys').toBeGreaterThanOrEqual(3);

    const added = await addWorker();
    await vsxds.write('pods.yaml', podsFile());
    await waitForStats(envoy, [...new Set(ports.keys.map((_, i) => `cluster.${envoyClusterName(keyCluster(i))}.membership_total`))], (v) => v === workers.length, 'the new worker in every cluster');

    const after = await keyPlacement();
    const moved = after.filter((w, i) => w !== before[i]).length;
    const toNewWorker = after.filter((w, i) => w !== before[i] && w === added.ip).length;
    const share = moved / KEYS;
    console.log(
      `MEASURE: hash keys moved when a worker was added (${apiType}): ${moved} of ${KEYS} (${(share * 100).toFixed(0)}%), ` +
        `${toNewWorker} of them to the new worker; consistent hashing ideal ${(100 / workers.length).toFixed(0)}%, modulo hashing would move ~${(100 * (1 - 1 / workers.length)).toFixed(0)}%`,
    );
    expect(toNewWorker, 'keys the new worker took over').toBeGreaterThan(0);
    // Maglev moves about 1/(n+1) = 20%; modulo hashing would move about n/(n+1) = 80%.
    expect(share).toBeLessThan(0.4);
  });

  it('takes a worker whose health-check port stops accepting out of the call, and brings it back when it accepts again', async () => {
    await waitForStats(envoy, healthyStats, (v) => v === workers.length, 'all workers healthy');
    // A new session picks again once the new worker is in: settle on where the call lives now.
    const home = await waitUntil(async () => {
      const { rtp, rtcp } = await callPlacement(3);
      return rtp.size === 1 && rtcp.size === 1 && [...rtp][0] === [...rtcp][0] ? ([...rtp][0] as string) : undefined;
    }, 'a stable worker for the call');
    const worker = workers.find((w) => w.ip === home) as Worker;

    await worker.health.close();
    await waitForStats(envoy, healthyStats, (v) => v === workers.length - 1, 'the worker marked unhealthy');
    const away = await waitUntil(async () => {
      const { rtp, rtcp } = await callPlacement(3);
      const [r] = [...rtp];
      return rtp.size === 1 && rtcp.size === 1 && r !== undefined && r !== home && [...rtcp][0] === r ? r : undefined;
    }, `the call to move off ${home}`);
    expect(workers.map((w) => w.ip)).toContain(away);
    // No new session reaches the unhealthy worker, on either stream.
    const { rtp, rtcp } = await callPlacement(10);
    expect([...rtp, ...rtcp].filter((w) => w !== away)).toEqual([]);

    await worker.health.listen();
    await waitForStats(envoy, healthyStats, (v) => v === workers.length, 'the worker healthy again');
    await waitUntil(async () => {
      const back = await callPlacement(3);
      return [...back.rtp, ...back.rtcp].every((w) => w === home);
    }, `the call back on ${home}`);
  });
});
