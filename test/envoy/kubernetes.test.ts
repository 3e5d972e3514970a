/**
 * Through Kubernetes: a real kube-apiserver, the CRD and the example VirtualServices applied
 * with kubectl, pods created with kubectl and given IPs and readiness by hand (there is no
 * kubelet), and real Envoys that say nothing but node.id "default/<pod>".
 *
 * Also measures, without asserting on it, how long it takes from creating a VirtualService
 * through the API until an Envoy forwards datagrams on its port.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSocket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { CLUSTER_TYPE } from '../../src/xds/index.js';
import { RawAdsStream } from '../support/ads-client.js';
import { serve, type Running } from '../../src/main/serve.js';
import { pointAtVsxds, startEnvoy, type AdsApiType, type Envoy } from '../support/envoy.js';
import { cliSettings, EXAMPLE_PORTS, EXAMPLES_DIR, loadExamples, printEnvoyLogsOnFailure, waitForStats, type Examples } from '../support/envoy-scenario.js';
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

/**
 * An examples/kubernetes manifest as the kubelet would run it: the ConfigMap's Envoy bootstrap,
 * and the Envoy container's arguments but the bootstrap path, with `$(VAR)` from `env`.
 */
async function kubernetesExample(file: string, env: Record<string, string>): Promise<{ bootstrap: any; args: string[] }> {
  const docs = parseAllDocuments(await readFile(join(EXAMPLES_DIR, 'kubernetes', file), 'utf8')).map((d) => d.toJS());
  const configMap = docs.find((d) => d.kind === 'ConfigMap');
  const container = docs.find((d) => d.kind === 'Deployment').spec.template.spec.containers[0];
  const args = (container.args as string[]).map((a) => a.replace(/\$\((\w+)\)/g, (_, v: string) => env[v] ?? ''));
  const c = args.indexOf('-c');
  args.splice(c, 2);
  return { bootstrap: parse(configMap.data['bootstrap.yaml']), args };
}

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

    // vsxds defaults, except the addresses, and node authentication by peer IP as deploy/ runs it:
    // the measurement is of vsxds as shipped.
    vsxds = await serve(
      cliSettings([
        '--source', 'kubernetes',
        '--node-auth', 'peer-ip',
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
      // examples/kubernetes as the kubelet would run them: the ConfigMap's bootstrap and the
      // Deployment's arguments, the downward API filled in with the pod, and the stream to vsxds
      // from the pod's IP.
      const [ingressPod, workerPod] = [PODS[0]!, PODS[1]!];
      const asPod = async (file: string, pod: { name: string; ip: string }) => {
        const { bootstrap, args } = await kubernetesExample(file, { POD_NAME: pod.name, POD_NAMESPACE: 'default' });
        const b = pointAtVsxds(bootstrap, { xdsPort: vsxds.xdsPort, apiType });
        b.static_resources.clusters.find((c: any) => c.name === 'vsxds').upstream_bind_config = { source_address: { address: pod.ip, port_value: 0 } };
        return { name: `k8s-${pod.name}-${apiType}`, bootstrap: b, extraArgs: args };
      };
      [ingress, worker] = await Promise.all([startEnvoy(await asPod('ingress.yaml', ingressPod)), startEnvoy(await asPod('worker.yaml', workerPod))]);
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

    it('refuses a stream that claims a pod it does not come from, naming both addresses', async () => {
      const impostor = new RawAdsStream(`127.0.0.1:${vsxds.xdsPort}`, apiType === 'GRPC' ? 'sotw' : 'delta');
      try {
        impostor.send({ node: { id: 'default/worker-2' }, type_url: CLUSTER_TYPE });
        const end = await impostor.end();
        expect(end.code).toBe(7);
        expect(end.details).toBe('the stream comes from 127.0.0.1, not from pod default/worker-2 (127.0.0.3)');
        expect(impostor.responses).toEqual([]);
      } finally {
        impostor.close();
      }
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
