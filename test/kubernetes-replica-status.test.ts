/**
 * VirtualService status counts the proxies of every replica: two replicas against a real
 * kube-apiserver, the leader in this process and a follower in a process of its own that the test
 * can SIGKILL, with real ADS clients split between them.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Running } from '../src/main/serve.js';
import type { KubernetesSource } from '../src/sources/kubernetes-source.js';
import { CLUSTER_TYPE } from '../src/xds/index.js';
import { nodeFor, RawAdsStream } from './support/ads-client.js';
import { startVsxdsProcess, type VsxdsProcess } from './support/envoy-scenario.js';
import { startKubeEnv, type KubeEnv } from './support/kube-env.js';
import { freePorts } from './support/udp.js';
import { installCrd, readyPod, serveKubernetes } from './support/vsxds-kube.js';
import { waitUntil } from './support/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');
/** Short, so a dead replica stops counting soon: its contribution counts until the leader saw it unrenewed this long. */
const LEASE_S = 3;
/** The bound the README states: the lease duration, plus one read interval and the status window. */
const STOPS_COUNTING_WITHIN_MS = LEASE_S * 1000 + 2_000;

describe('status counts the proxies connected to every replica', { timeout: 180_000 }, () => {
  let kube: KubeEnv;
  let leader: Running;
  let follower: VsxdsProcess | undefined;
  let followerXds: number;
  const streams: RawAdsStream[] = [];

  const holder = async () => JSON.parse(await kube.kubectlOk(['get', 'lease', 'vsxds-leader', '-o', 'json'])).spec?.holderIdentity as string | undefined;
  const proxies = async () => JSON.parse(await kube.kubectlOk(['get', 'vsvc', 'ingress', '-o', 'json'])).status?.proxies as { matched: number; synced: number; nacked: number } | undefined;
  const status = async () => JSON.parse(await kube.kubectlOk(['get', 'vsvc', 'ingress', '-o', 'json'])).status;
  let lastSeen: unknown;
  const counts = (matched: number, synced: number, nacked: number) => async () => {
    const p = (lastSeen = await proxies());
    return p?.matched === matched && p.synced === synced && p.nacked === nacked ? p : undefined;
  };
  const got = () => `, got ${JSON.stringify(lastSeen)}`;
  const configMap = async (name: string) => {
    const got = await kube.kubectl(['get', 'configmap', name, '-o', 'json']);
    return got.code === 0 ? JSON.parse(got.stdout) : undefined;
  };

  /** An ingress proxy that syncs like Envoy (and ACKs) on the replica at this xDS port. */
  const proxy = async (xdsPort: number, id: string) => {
    const s = new RawAdsStream(`127.0.0.1:${xdsPort}`, 'sotw');
    streams.push(s);
    await s.syncLikeEnvoy(nodeFor('default', { app: 'ingress' }, `default/${id}`), { timeoutMs: 20_000 });
    return s;
  };

  beforeAll(async () => {
    kube = await startKubeEnv();
    await installCrd(kube);
    await kube.kubectlOk(['apply', '-f', path.join(ROOT, 'examples', 'virtualservices', 'ingress.yaml')]);
    leader = await serveKubernetes(kube, { leaseDurationSeconds: String(LEASE_S) }, { POD_NAME: 'vsxds-a', POD_NAMESPACE: 'default' });
    await waitUntil(async () => (await holder()) === 'vsxds-a', 'vsxds-a holding the lease');
    // The follower's Pod, as the downward API would name it: owner of the follower's object.
    await readyPod(kube, 'vsxds-b', { app: 'vsxds' }, '127.0.0.50');
    const uid = JSON.parse(await kube.kubectlOk(['get', 'pod', 'vsxds-b', '-o', 'json'])).metadata.uid as string;
    const [xds, admin] = (await freePorts(2)) as [number, number];
    followerXds = xds;
    follower = await startVsxdsProcess({
      source: 'kubernetes',
      xdsPort: xds,
      adminPort: admin,
      extraArgs: ['--kubeconfig', kube.kubeconfigPath, '--lease-duration-seconds', String(LEASE_S), '--status-interval-ms', '50'],
      env: { POD_NAME: 'vsxds-b', POD_NAMESPACE: 'default', POD_UID: uid },
    });
  }, 45 * 60_000);

  afterAll(async () => {
    for (const s of streams) s.close();
    await follower?.kill();
    await leader?.shutdown('test over');
    await kube?.stop();
  });

  it('adds up the proxies of both replicas, and only the leader writes status', async () => {
    await proxy(leader.xdsPort, 'ingress-a1');
    await proxy(leader.xdsPort, 'ingress-a2');
    for (const id of ['ingress-b1', 'ingress-b2', 'ingress-b3']) await proxy(followerXds, id);
    await waitUntil(counts(5, 5, 0), () => `proxies 5/5/0 in the status${got()}`);
    const synced = (await status()).conditions.find((c: { type: string }) => c.type === 'Synced');
    expect(synced).toMatchObject({ status: 'True', message: 'all 5 matched proxies accepted the current configuration' });
    // The follower's contribution is its own object, owned by its Pod; it wrote no status.
    const cm = await configMap('vsxds-replica-vsxds-b');
    expect(cm.metadata.labels).toEqual({ 'app.kubernetes.io/name': 'vsxds', 'app.kubernetes.io/component': 'replica-status' });
    expect(cm.metadata.ownerReferences).toEqual([expect.objectContaining({ kind: 'Pod', name: 'vsxds-b' })]);
    expect((leader.source as KubernetesSource).statusWriter.writes).toBeGreaterThan(0);
  });

  it('a NACK on the follower reaches the status with its message', async () => {
    const s = new RawAdsStream(`127.0.0.1:${followerXds}`, 'sotw');
    streams.push(s);
    s.send({ node: nodeFor('default', { app: 'ingress' }, 'default/ingress-b-nacks'), type_url: CLUSTER_TYPE });
    s.nack(await s.next(), 'the follower’s Envoy does not like these clusters');
    await waitUntil(counts(6, 5, 1), () => `proxies 6/5/1 in the status${got()}`);
    const st = await status();
    expect(st.nackMessage).toBe('the follower’s Envoy does not like these clusters');
    expect(st.conditions.find((c: { type: string }) => c.type === 'Synced')).toMatchObject({
      status: 'False',
      reason: 'Rejected',
      message: '1 of 6 proxies rejected the configuration: the follower’s Envoy does not like these clusters',
    });
    s.close();
    await waitUntil(counts(5, 5, 0), () => `the NACKing proxy gone from the status${got()}`);
  });

  it('a replica that joins counts, and one that shuts down takes its object and its proxies with it', async () => {
    const third = await serveKubernetes(kube, { leaseDurationSeconds: String(LEASE_S) }, { POD_NAME: 'vsxds-c', POD_NAMESPACE: 'default' });
    try {
      const s = await proxy(third.xdsPort, 'ingress-c1');
      await waitUntil(counts(6, 6, 0), () => `proxies 6/6/0 with the third replica${got()}`);
      expect(await configMap('vsxds-replica-vsxds-c')).toBeDefined();
      s.close();
    } finally {
      await third.shutdown('test');
    }
    expect((third.source as KubernetesSource).statusWriter.writes).toBe(0);
    expect(await configMap('vsxds-replica-vsxds-c')).toBeUndefined();
    await waitUntil(counts(5, 5, 0), () => `proxies 5/5/0 once the third replica stopped${got()}`);
  });

  it('a follower killed without a chance to clean up stops counting within the lease duration and a little more', async () => {
    await follower?.kill();
    // Its object stays (no garbage collector runs here, and it had no chance to delete it): the
    // leader stops counting it because it saw no renewal for the lease duration.
    expect(await configMap('vsxds-replica-vsxds-b')).toBeDefined();
    await waitUntil(counts(2, 2, 0), () => `only the leader's 2 proxies counted${got()}`, STOPS_COUNTING_WITHIN_MS + 10_000);
  });
});
