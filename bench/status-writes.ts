/**
 * What one VirtualService status write costs the API server (and etcd), by the form of the
 * request: vsxds's JSON merge patch of the status subresource, a JSON patch, an update (PUT) of
 * the status subresource, a server-side apply, and, for scale, a merge patch of a status of one
 * short condition. A real etcd + kube-apiserver (test/support/kube-env.ts) and 200
 * VirtualServices of B5's calls; each form writes WRITES statuses (default 1,500), two at a time
 * as vsxds's status writer does, over keep-alive connections; a warm-up round, then three
 * rounds alternating the forms. CPU of the API server and etcd from /proc per write.
 *
 *   node --import tsx bench/status-writes.ts
 */
import https from 'node:https';
import { startKubeEnv } from '../test/support/kube-env.js';
import { installCrd } from '../test/support/vsxds-kube.js';
import { childPids, cpuSeconds } from './calls-rig.js';
import { callVirtualService } from '../test/support/calls.js';

const N = 200;
const WRITES = Number(process.env.WRITES ?? 1500);
const kube = await startKubeEnv();
await installCrd(kube);
const api = childPids('kube-apiserver')[0]!;
const etcd = childPids('etcd')[0]!;
const agent = new https.Agent({ keepAlive: true, ca: kube.caData, maxSockets: 4 });
const base = '/apis/servicemesh.l7mp.io/v1/namespaces/default/virtualservices';
function req(method: string, path: string, body: unknown, ctype = 'application/json'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = typeof body === 'string' ? body : JSON.stringify(body);
    const r = https.request(kube.server + path, { method, agent, headers: { Authorization: `Bearer ${kube.token}`, 'Content-Type': ctype, Accept: 'application/json' } }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
    });
    r.on('error', reject);
    r.end(data);
  });
}
const objects = new Map<string, any>();
for (let i = 0; i < N; i++) {
  const o = callVirtualService(`call-${i}`, 20000 + i, { proxySelector: { app: 'envoy-ingress' }, workerSelector: { app: 'worker' }, sinkPort: 2001, healthPort: 1233 });
  const r = await req('POST', base, o);
  if (r.status !== 201) throw new Error(r.body);
  objects.set(`call-${i}`, JSON.parse(r.body));
}
const t0 = '2026-12-07T22:00:00Z';
const statusOf = (name: string, n: number) => ({
  observedGeneration: 1,
  conditions: [
    { type: 'Accepted', status: 'True', reason: 'Valid', message: 'the VirtualService is valid', observedGeneration: 1, lastTransitionTime: t0 },
    { type: 'Conflicted', status: 'False', reason: 'NoConflicts', message: 'no listener, port or cluster name clashes with another VirtualService', observedGeneration: 1, lastTransitionTime: t0 },
    { type: 'Synced', status: n % 2 ? 'True' : 'False', reason: n % 2 ? 'Synced' : 'Pending', message: n % 2 ? 'all 1 matched proxies accepted the current configuration' : '0 of 1 proxies have the current configuration', observedGeneration: 1, lastTransitionTime: `2026-12-07T22:${String(n % 60).padStart(2, '0')}:00Z` },
  ],
  listeners: 1,
  proxies: { matched: 1, synced: n % 2, nacked: 0, summary: `${n % 2}/1` },
  envoyClusters: { [`${name}-c`]: 'vsxds-eds-2001-0123456789ab' },
});
const smallOf = (name: string, n: number) => ({
  observedGeneration: 1,
  conditions: [
    { type: 'Synced', status: n % 2 ? 'True' : 'False', reason: n % 2 ? 'Synced' : 'Pending', message: '', lastTransitionTime: `2026-12-07T22:${String(n % 60).padStart(2, '0')}:00Z` },
  ],
});
type Method = (name: string, n: number) => Promise<{ status: number; body: string }>;
const methods: Record<string, Method> = {
  merge: (name, n) => req('PATCH', `${base}/${name}/status`, { status: { nackMessage: null, ...statusOf(name, n) } }, 'application/merge-patch+json'),
  small: (name, n) => req('PATCH', `${base}/${name}/status`, { status: smallOf(name, n) }, 'application/merge-patch+json'),
  json: (name, n) => req('PATCH', `${base}/${name}/status`, [{ op: 'add', path: '/status', value: statusOf(name, n) }], 'application/json-patch+json'),
  put: async (name, n) => {
    const o = objects.get(name);
    const r = await req('PUT', `${base}/${name}/status`, { ...o, status: statusOf(name, n) });
    if (r.status === 200) objects.set(name, JSON.parse(r.body));
    return r;
  },
  apply: (name, n) => req('PATCH', `${base}/${name}/status?fieldManager=vsxds&force=true`, { apiVersion: 'servicemesh.l7mp.io/v1', kind: 'VirtualService', metadata: { name, namespace: 'default' }, status: statusOf(name, n) }, 'application/apply-patch+yaml'),
};
let counter = 0;
async function run(method: string): Promise<string> {
  const m = methods[method]!;
  if (method === 'put') for (const name of objects.keys()) objects.set(name, JSON.parse((await req('GET', `${base}/${name}`, '')).body));
  const a0 = cpuSeconds(api), e0 = cpuSeconds(etcd), w0 = performance.now();
  let next = 0;
  const lat: number[] = [];
  const worker = async () => {
    while (next < WRITES) {
      const i = next++;
      const n = ++counter;
      const t = performance.now();
      const r = await m(`call-${i % N}`, n);
      lat.push(performance.now() - t);
      if (r.status !== 200) throw new Error(`${method}: ${r.status} ${r.body.slice(0, 300)}`);
    }
  };
  await Promise.all([worker(), worker()]);
  const wall = performance.now() - w0;
  lat.sort((x, y) => x - y);
  return `${method.padEnd(6)} api ${((cpuSeconds(api) - a0) * 1000 / WRITES).toFixed(2)} ms/write, etcd ${((cpuSeconds(etcd) - e0) * 1000 / WRITES).toFixed(2)}, latency p50 ${lat[Math.floor(lat.length / 2)]!.toFixed(1)} ms, wall ${(wall / WRITES).toFixed(2)} ms/write`;
}
for (const m of Object.keys(methods)) console.log('warm', await run(m));
for (let round = 0; round < 3; round++) for (const m of Object.keys(methods)) console.log(await run(m));
await kube.stop();
process.exit(0);
