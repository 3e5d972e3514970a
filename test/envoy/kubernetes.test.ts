/**
 * Through Kubernetes: a real kube-apiserver, the CRD and the example VirtualServices applied
 * with kubectl, pods created with kubectl and given IPs and readiness by hand (there is no
 * kubelet), and real Envoys that say nothing but node.id "default/<pod>".
 *
 * Also measures, without asserting on it, how long it takes from creating a VirtualService
 * through the API until an Envoy forwards datagrams on its port.
 */
import { writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSocket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Running } from '../../src/main/serve.js';
import { pointAtVsxds, startEnvoy, type AdsApiType, type Envoy } from '../support/envoy.js';
import { cliSettings, EXAMPLE_PORTS, loadExamples, printEnvoyLogsOnFailure, waitForStats, type Examples } from '../support/envoy-scenario.js';
import { installCrd, readyPod } from '../support/vsxds-kube.js';
import { startKubeEnv, type KubeEnv } from '../support/kube-env.js';
import { freePort, TcpPort, UdpEcho, udpEventually, waitUntil } from '../support/udp.js';

const MODES: AdsApiType[] = ['GRPC', 'DELTA_GRPC'];
const RUNS = 20;
const MEASUREMENTS_FILE = join(tmpdir(), 'vsxds-envoy-measurements.json');
const VS_PATH = '/apis/servicemesh.l7mp.io/v1/namespaces/default/virtualservices';
const PODS: Array<{ name: string; labels: Record<string, string>; ip: string }> = [
  { name: 'ingress-1', labels: { app: 'ingress' }, ip: '127.0.0.1' },
  { name: 'worker-1', labels: { app: 'worker' }, ip: '127.0.0.2' },
  { name: 'worker-2', labels: { app: 'worker' }, ip: '127.0.0.3' },
];

/** One request to the API server, as any client would make it (no kubectl start-up in the way). */
function kubeApi(kube: KubeEnv, method: string, path: string, body?: object): Promise<{ status: number; body: string }> {
  const url = new URL(path, kube.server);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        headers: { authorization: `Bearer ${kube.token}`, 'content-type': 'application/json' },
        ca: kube.caData,
        rejectUnauthorized: kube.caData !== undefined,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

/** Sends a datagram every few ms from one socket until one comes back; resolves with the arrival time. */
function firstEcho(port: number, timeoutMs: number): Promise<number> {
  const socket = createSocket('udp4');
  socket.on('error', () => undefined);
  return new Promise<number>((resolve, reject) => {
    const timer = setInterval(() => socket.send('probe', port, '127.0.0.1'), 5);
    const deadline = setTimeout(() => finish(() => reject(new Error(`no echo on port ${port} within ${timeoutMs} ms`))), timeoutMs);
    const finish = (then: () => void) => {
      clearInterval(timer);
      clearTimeout(deadline);
      socket.close();
      then();
    };
    socket.once('message', () => {
      const at = performance.now();
      finish(() => resolve(at));
    });
  });
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};

describe('Envoys through Kubernetes', { timeout: 240_000 }, () => {
  const port = new Map<number, number>();
  const sockets: Array<UdpEcho | TcpPort> = [];
  const measurements: Record<string, { medianMs: number; samplesMs: number[] }> = {};
  let kube: KubeEnv;
  let vsxds: Running;
  let examples: Examples;

  beforeAll(async () => {
    for (const p of EXAMPLE_PORTS) port.set(p, await freePort());
    examples = await loadExamples(port);
    sockets.push(await UdpEcho.start('app-rtp', '127.0.0.1', port.get(1234)!), await UdpEcho.start('app-rtcp', '127.0.0.1', port.get(1235)!));
    for (const pod of PODS.filter((p) => p.labels['app'] === 'worker')) {
      const health = new TcpPort(pod.ip, port.get(1233)!);
      await health.listen();
      sockets.push(health);
    }

    kube = await startKubeEnv();
    await installCrd(kube);
    for (const pod of PODS) await readyPod(kube, pod.name, pod.labels, pod.ip);
    // examples/virtualservices/{ingress,worker}.yaml, with the ports this run uses.
    const manifests = [...(examples.files['ingress.yaml'] ?? []), ...(examples.files['worker.yaml'] ?? [])];
    await kube.kubectlOk(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: manifests }));

    // vsxds defaults, except the addresses: the measurement is of vsxds as shipped.
    vsxds = await serve(
      cliSettings([
        '--source', 'kubernetes',
        '--kubeconfig', kube.kubeconfigPath,
        '--xds-address', '127.0.0.1:0',
        '--admin-address', '127.0.0.1:0',
        '--shutdown-grace-ms', '100',
        '--log-level', process.env['VSXDS_TEST_LOG'] ?? 'silent',
      ]),
      {},
    );
  }, 45 * 60_000);

  afterAll(async () => {
    await vsxds?.shutdown('test over');
    await kube?.stop();
    for (const s of sockets) await s.close();
  });

  describe.each(MODES)('Envoy on %s', (apiType) => {
    let ingress: Envoy;
    let worker: Envoy;

    printEnvoyLogsOnFailure(() => [ingress, worker]);

    beforeAll(async () => {
      // In a cluster a proxy needs to say only which pod it is; vsxds reads the labels from the pod.
      const byPodName = (bootstrap: any) => {
        const { metadata: _dropped, ...node } = bootstrap.node;
        return { ...pointAtVsxds(bootstrap, { xdsPort: vsxds.xdsPort, apiType }), node };
      };
      expect(examples.bootstraps.ingress.node.id).toBe('default/ingress-1');
      expect(examples.bootstraps.worker.node.id).toBe('default/worker-1');
      [ingress, worker] = await Promise.all([
        startEnvoy({ name: `k8s-ingress-${apiType}`, bootstrap: byPodName(examples.bootstraps.ingress) }),
        startEnvoy({ name: `k8s-worker-${apiType}`, bootstrap: byPodName(examples.bootstraps.worker) }),
      ]);
    }, 60_000);

    afterAll(async () => {
      await Promise.all([ingress?.stop(), worker?.stop()]);
    });

    it('serves the example VirtualServices applied with kubectl to Envoys known only by node.id', async () => {
      await waitForStats(ingress, [`cluster.${examples.clusters['worker-rtp']}.membership_healthy`, `cluster.${examples.clusters['worker-rtcp']}.membership_healthy`], (v) => v === 2, 'both worker pods healthy');
      expect(await udpEventually(port.get(2000)!, 'rtp via k8s')).toBe('app-rtp|rtp via k8s');
      expect(await udpEventually(port.get(2002)!, 'rtcp via k8s')).toBe('app-rtcp|rtcp via k8s');
      const table = await waitUntil(async () => {
        const out = await kube.kubectlOk(['get', 'vsvc']);
        return /ingress\s+2\s+True\s+True\s+1\/1\s/.test(out) && /worker\s+2\s+True\s+True\s+1\/1\s/.test(out) ? out : undefined;
      }, 'kubectl get vsvc to show both VirtualServices live on their proxy', 30_000, 250);
      expect(table).toMatch(/NAME\s+LISTENERS\s+ACCEPTED\s+SYNCED\s+PROXIES/);
    });

    it(`measures the time from creating a VirtualService to Envoy forwarding on its port (median of ${RUNS})`, async () => {
      const samples: number[] = [];
      for (let run = 0; run < RUNS; run++) {
        const name = `measure-${apiType.toLowerCase().replace('_', '-')}-${run}`;
        const listenPort = await freePort();
        // A new call on the ingress, to the worker pods through their sidecars, as in the examples.
        const vs = {
          apiVersion: 'servicemesh.l7mp.io/v1',
          kind: 'VirtualService',
          metadata: { name, namespace: 'default' },
          spec: {
            selector: { app: 'ingress' },
            listeners: [
              {
                name,
                udp: {
                  port: listenPort,
                  cluster: { name, service_discovery: 'eds', hash_key: name, endpoints: [{ host: { selector: { app: 'worker' } }, port: port.get(2001)! }] },
                },
              },
            ],
          },
        };
        const echoed = firstEcho(listenPort, 60_000);
        const started = performance.now();
        const created = await kubeApi(kube, 'POST', VS_PATH, vs);
        expect(created.status, created.body).toBe(201);
        samples.push(Math.round((await echoed) - started));

        const deleted = await kubeApi(kube, 'DELETE', `${VS_PATH}/${name}`);
        expect(deleted.status, deleted.body).toBe(200);
        await waitUntil(async () => !(await ingress.listeners()).includes(name), `listener ${name} removed`);
      }
      const result = { medianMs: median(samples), samplesMs: samples };
      measurements[apiType] = result;
      console.log(
        `MEASURE: VirtualService created through the Kubernetes API → first datagram echoed through Envoy (${apiType}, vsxds defaults): ` +
          `median ${result.medianMs} ms over ${RUNS} runs; samples (ms): ${samples.join(', ')}`,
      );
      await writeFile(MEASUREMENTS_FILE, `${JSON.stringify({ envoy: (await ingress.adminJson('/server_info')).version, ...measurements }, null, 2)}\n`);
      console.log(`MEASURE: written to ${MEASUREMENTS_FILE}`);
    });
  });
});
