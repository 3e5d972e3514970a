/**
 * What B5's rig and the calls test rely on to time a call's own listener on a reused port: when a
 * call's listener replaces the previous call's on the same port, the client's datagrams reach the
 * worker from a new source port (each listener's UDP proxy opens an upstream socket per session
 * of its own), while one listener keeps one source port for one client. Real Envoy, real datagrams.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adsBootstrap, startEnvoy, type Envoy } from '../support/envoy.js';
import { FileVsxds, listener, pod, printEnvoyLogsOnFailure, virtualService } from '../support/envoy-scenario.js';
import { freePort, UdpClient, UdpEcho, waitUntil } from '../support/udp.js';

const WORKER_IP = '127.50.0.2';

describe('a listener replaced on its port by another call\'s', { timeout: 120_000 }, () => {
  let echo: UdpEcho;
  let vsxds: FileVsxds;
  let envoy: Envoy;
  let port: number;
  let echoPort: number;

  printEnvoyLogsOnFailure(() => [envoy]);

  const call = (name: string) =>
    virtualService(name, { app: 'ingress' }, [listener(`${name}-l`, port, { name: `${name}-c`, to: { selector: { app: 'worker' } }, port: echoPort, hashKey: name })]);

  beforeAll(async () => {
    port = await freePort();
    echoPort = await freePort();
    echo = await UdpEcho.start('w1', WORKER_IP, echoPort);
    vsxds = await FileVsxds.start({ 'pods.yaml': [pod('worker-1', { app: 'worker' }, WORKER_IP)], 'call.yaml': [call('call-a')] });
    envoy = await startEnvoy({
      name: 'listener-sessions',
      bootstrap: adsBootstrap({ nodeId: 'default/ingress-1', metadata: { namespace: 'default', labels: { app: 'ingress' } }, xdsPort: vsxds.xdsPort, apiType: 'DELTA_GRPC' }),
      extraArgs: ['--drain-time-s', '1'],
      concurrency: 1,
    });
  }, 60_000);

  afterAll(async () => {
    await envoy?.stop();
    await vsxds?.stop();
    await echo?.close();
  });

  it('forwards one client from one source port per listener, and from a new one once the next listener took the port', async () => {
    const client = await UdpClient.open();
    try {
      await waitUntil(async () => (await client.request(port, 'a0', 500)) === 'w1|a0', 'the first listener forwarding');
      for (let i = 1; i <= 5; i++) expect(await client.request(port, `a${i}`)).toBe(`w1|a${i}`);
      expect(echo.senders.size, `upstream addresses: ${[...echo.senders].join(', ')}`).toBe(1);
      const first = [...echo.senders][0];

      // The call ends and the next call gets its port: one file write, as one watch event each.
      await vsxds.write('call.yaml', [call('call-b')]);
      await waitUntil(async () => {
        const names = await envoy.listeners();
        return names.includes('call-b-l') && !names.includes('call-a-l');
      }, 'call-b-l replacing call-a-l in Envoy');
      await waitUntil(async () => (await client.request(port, 'b0', 500)) === 'w1|b0', 'the second listener forwarding');
      for (let i = 1; i <= 5; i++) expect(await client.request(port, `b${i}`)).toBe(`w1|b${i}`);
      const after = [...echo.senders].filter((s) => s !== first);
      expect(after, `upstream addresses: ${[...echo.senders].join(', ')}`).toHaveLength(1);
      expect(after[0]?.split(':')[0]).toBe(first?.split(':')[0]);
    } finally {
      await client.close();
    }
  });
});
