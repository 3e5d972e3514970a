import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Running } from '../src/main/serve.js';
import type { KubernetesSource } from '../src/sources/kubernetes-source.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../src/xds/index.js';
import { nodeFor, RawAdsStream, type Response } from './support/ads-client.js';
import { startKubeEnv, type KubeEnv } from './support/kube-env.js';
import { installCrd, serveKubernetes } from './support/vsxds-kube.js';
import { waitUntil } from './support/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const INGRESS = nodeFor('default', { app: 'ingress' }, 'default/ingress-1');


describe('two vsxds replicas against one cluster', { timeout: 120_000 }, () => {
  let kube: KubeEnv;
  const replicas = new Map<string, Running>();
  const streams: RawAdsStream[] = [];

  const startReplica = async (name: string) => {
    const running = await serveKubernetes(kube, { leaseDurationSeconds: '2' }, { POD_NAME: name, POD_NAMESPACE: 'default' });
    replicas.set(name, running);
    return running;
  };
  const source = (r: Running) => r.source as KubernetesSource;
  const holder = async (): Promise<string | undefined> => {
    // Before the first replica created the Lease there is no holder.
    const got = await kube.kubectl(['get', 'lease', 'vsxds-leader', '-o', 'json']);
    if (got.code !== 0) {
      if (got.stderr.includes('NotFound')) return undefined;
      throw new Error(`kubectl get lease: ${got.stderr}`);
    }
    return (JSON.parse(got.stdout).spec?.holderIdentity as string | undefined) || undefined;
  };

  beforeAll(async () => {
    kube = await startKubeEnv();
    await installCrd(kube);
    await kube.kubectlOk(['apply', '-f', path.join(ROOT, 'examples', 'virtualservices', 'ingress.yaml')]);
    await startReplica('vsxds-a');
    await startReplica('vsxds-b');
  }, 45 * 60_000);

  afterAll(async () => {
    for (const s of streams) s.close();
    for (const r of replicas.values()) await r.shutdown('test over');
    await kube?.stop();
  });

  async function sync(r: Running, mode: 'sotw' | 'delta'): Promise<Response[]> {
    const s = new RawAdsStream(`127.0.0.1:${r.xdsPort}`, mode);
    streams.push(s);
    const { cds, eds, lds } = await s.syncLikeEnvoy(INGRESS, { timeoutMs: 20_000 });
    return [cds, eds, lds];
  }

  it('elects exactly one status writer', async () => {
    const leader = await waitUntil(holder, 'a lease holder');
    expect(['vsxds-a', 'vsxds-b']).toContain(leader);
    await waitUntil(async () => {
      const status = JSON.parse(await kube.kubectlOk(['get', 'vsvc', 'ingress', '-o', 'json'])).status;
      return status?.conditions ? status : undefined;
    }, 'status written');
    const follower = leader === 'vsxds-a' ? 'vsxds-b' : 'vsxds-a';
    expect(source(replicas.get(leader) as Running).statusWriter.writes).toBeGreaterThan(0);
    expect(source(replicas.get(follower) as Running).statusWriter.writes).toBe(0);
  });

  it('serves identical versions from both replicas, so a proxy moving between them is not re-pushed', async () => {
    for (const mode of ['sotw', 'delta'] as const) {
      const [a, b] = [await sync(replicas.get('vsxds-a') as Running, mode), await sync(replicas.get('vsxds-b') as Running, mode)];
      for (let i = 0; i < 3; i++) {
        expect(b[i]?.type_url).toBe(a[i]?.type_url);
        expect(b[i]?.version_info ?? b[i]?.system_version_info).toBe(a[i]?.version_info ?? a[i]?.system_version_info);
        expect(b[i]?.resources.map((r) => [r.name, r.version])).toEqual(a[i]?.resources.map((r) => [r.name, r.version]));
      }
    }
    // A SotW proxy that synced with A reconnects to B presenting A's versions: B sends nothing until a real change.
    const [cds, eds, lds] = await sync(replicas.get('vsxds-a') as Running, 'sotw');
    const moved = new RawAdsStream(`127.0.0.1:${(replicas.get('vsxds-b') as Running).xdsPort}`, 'sotw');
    streams.push(moved);
    moved.send({ node: INGRESS, type_url: CLUSTER_TYPE, version_info: cds?.version_info });
    moved.send({ type_url: ENDPOINT_TYPE, resource_names: eds?.resources.map((r) => r.name), version_info: eds?.version_info });
    moved.send({ type_url: LISTENER_TYPE, version_info: lds?.version_info });
    await moved.until(() => (replicas.get('vsxds-b') as Running).ads.status.list().some((p) => p.types.size === 3 && p.synced), 10_000, 'moved proxy settled');
    expect(moved.responses).toEqual([]);
  });

  it('records Kubernetes Events for accepted and rejected VirtualServices and for NACKs (from the leader only)', async () => {
    const bad = {
      apiVersion: 'servicemesh.l7mp.io/v1',
      kind: 'VirtualService',
      metadata: { name: 'dns-in-eds', namespace: 'default' },
      spec: { selector: { app: 'ingress' }, listeners: [{ name: 'dns', udp: { port: 3000, cluster: { name: 'dns', service_discovery: 'eds', endpoints: [{ host: { address: 'media.example.com' }, port: 1 }] } } }] },
    };
    await kube.kubectlOk(['apply', '-f', '-'], JSON.stringify(bad));
    const events = async (name: string) =>
      JSON.parse(await kube.kubectlOk(['get', 'events', '--field-selector', `involvedObject.name=${name}`, '-o', 'json'])).items as any[];
    const rejected = await waitUntil(async () => (await events('dns-in-eds')).find((e) => e.type === 'Warning'), 'rejection event');
    expect(rejected).toMatchObject({ involvedObject: { kind: 'VirtualService', name: 'dns-in-eds' }, source: { component: 'vsxds' }, count: 1 });
    expect(rejected.message).toMatch(/strictdns/);
    // Fixed: one Normal event says it is served again. Being accepted from the start is no event
    // (the status says so): with one VirtualService per call that would be one write per call.
    const fixed = { ...bad, spec: { ...bad.spec, listeners: [{ name: 'dns', udp: { port: 3000, cluster: { name: 'dns', service_discovery: 'strictdns', endpoints: [{ host: { address: 'media.example.com' }, port: 1 }] } } }] } };
    await kube.kubectlOk(['apply', '-f', '-'], JSON.stringify(fixed));
    const recovered = await waitUntil(async () => (await events('dns-in-eds')).find((e) => e.reason === 'Accepted'), 'Accepted event');
    expect(recovered).toMatchObject({ type: 'Normal', message: expect.stringContaining('valid again') });
    // Broken the same way again: the same Warning, counted on the event already recorded.
    await kube.kubectlOk(['apply', '-f', '-'], JSON.stringify(bad));
    const repeated = await waitUntil(async () => (await events('dns-in-eds')).find((e) => e.type === 'Warning' && e.count === 2), 'the rejection counted twice');
    expect(repeated.metadata.name).toBe(rejected.metadata.name);
    expect((await events('dns-in-eds')).filter((e) => e.type === 'Warning')).toHaveLength(1);
    expect((await events('ingress')).filter((e) => e.reason === 'Accepted')).toHaveLength(0);

    const leader = replicas.get((await holder()) as string) as Running;
    const s = new RawAdsStream(`127.0.0.1:${leader.xdsPort}`, 'sotw');
    streams.push(s);
    s.send({ node: INGRESS, type_url: CLUSTER_TYPE });
    s.nack(await s.next(), 'this Envoy does not like these clusters');
    const nack = await waitUntil(async () => (await events('ingress')).find((e) => e.reason === 'ProxyRejected'), 'ProxyRejected event');
    expect(nack.message).toContain('this Envoy does not like these clusters');
  });

  it('hands the status writer role over when the leader stops', async () => {
    const leaderName = (await holder()) as string;
    const other = leaderName === 'vsxds-a' ? 'vsxds-b' : 'vsxds-a';
    await (replicas.get(leaderName) as Running).shutdown('failover test');
    replicas.delete(leaderName);
    await waitUntil(async () => ((await holder()) === other ? true : undefined), `${other} to take the lease`);
    // The new leader writes: a change to the VirtualService shows up in its status.
    await kube.kubectlOk(['patch', 'vsvc', 'ingress', '--type=json', '-p', '[{"op":"replace","path":"/spec/listeners/0/udp/port","value":2010}]']);
    const generation = JSON.parse(await kube.kubectlOk(['get', 'vsvc', 'ingress', '-o', 'json'])).metadata.generation;
    await waitUntil(async () => {
      const status = JSON.parse(await kube.kubectlOk(['get', 'vsvc', 'ingress', '-o', 'json'])).status;
      return status?.observedGeneration === generation ? true : undefined;
    }, 'status of the new generation');
    expect(source(replicas.get(other) as Running).statusWriter.writes).toBeGreaterThan(0);
  });
});
