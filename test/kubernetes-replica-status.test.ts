/**
 * VirtualService status counts the proxies of every replica: two replicas against a real
 * kube-apiserver, the leader in this process and a follower in a process of its own that the test
 * can SIGKILL, with real ADS clients split between them. The follower runs as the service account
 * of deploy/ with the RBAC of deploy/, so what the manifests grant is what it needs.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Running } from '../src/main/serve.js';
import { KubeHttp } from '../src/sources/kube-http.js';
import type { KubernetesSource } from '../src/sources/kubernetes-source.js';
import { KubeReplicaStatus } from '../src/sources/replica-status.js';
import { CLUSTER_TYPE } from '../src/xds/index.js';
import { nodeFor, RawAdsStream } from './support/ads-client.js';
import { startVsxdsProcess, type VsxdsProcess } from './support/envoy-scenario.js';
import { startKubeEnv, type KubeEnv } from './support/kube-env.js';
import { freePorts } from './support/udp.js';
import { installCrd, serveKubernetes } from './support/vsxds-kube.js';
import { waitUntil } from './support/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');
/** Short, so a dead replica stops counting soon: its contribution counts until the leader saw it unrenewed this long. */
const LEASE_S = 3;
/** The bound the README states: the lease duration plus 2.5 s (the expiry noticed up to an interval late, the status window, the write). */
const STOPS_COUNTING_WITHIN_MS = LEASE_S * 1000 + 2_500;
/** Where deploy/ puts the control plane, its Lease and the replicas' ConfigMaps. */
const NS = 'vsxds-system';

describe('status counts the proxies connected to every replica', { timeout: 180_000 }, () => {
  let kube: KubeEnv;
  let leader: Running;
  let follower: VsxdsProcess | undefined;
  let followerXds: number;
  const streams: RawAdsStream[] = [];

  const holder = async () => JSON.parse(await kube.kubectlOk(['get', 'lease', 'vsxds-leader', '-n', NS, '-o', 'json'])).spec?.holderIdentity as string | undefined;
  const proxies = async () => JSON.parse(await kube.kubectlOk(['get', 'vsvc', 'ingress', '-o', 'json'])).status?.proxies as { matched: number; synced: number; nacked: number } | undefined;
  const status = async () => JSON.parse(await kube.kubectlOk(['get', 'vsvc', 'ingress', '-o', 'json'])).status;
  let lastSeen: unknown;
  const counts = (matched: number, synced: number, nacked: number) => async () => {
    const p = (lastSeen = await proxies());
    return p?.matched === matched && p.synced === synced && p.nacked === nacked ? p : undefined;
  };
  const got = () => `, got ${JSON.stringify(lastSeen)}`;
  const configMap = async (name: string) => {
    const got = await kube.kubectl(['get', 'configmap', name, '-n', NS, '-o', 'json']);
    return got.code === 0 ? JSON.parse(got.stdout) : undefined;
  };

  /** A kubeconfig that authenticates as a service account of NS, with a token the API server issued. */
  const kubeconfigAs = async (serviceAccount: string) => {
    const token = (await kube.kubectlOk(['create', 'token', serviceAccount, '-n', NS, '--duration=1h'])).trim();
    const file = `${kube.kubeconfigPath}-${serviceAccount}`;
    await writeFile(file, (await readFile(kube.kubeconfigPath, 'utf8')).replace(/^(\s*token: ).*$/m, `$1${token}`));
    return file;
  };
  const startFollower = async (name: string, kubeconfig: string, env: NodeJS.ProcessEnv = {}) => {
    const [xds, admin] = (await freePorts(2)) as [number, number];
    const process = await startVsxdsProcess({
      source: 'kubernetes',
      xdsPort: xds,
      adminPort: admin,
      extraArgs: ['--kubeconfig', kubeconfig, '--lease-duration-seconds', String(LEASE_S), '--status-interval-ms', '50'],
      env: { POD_NAME: name, POD_NAMESPACE: NS, ...env },
    });
    return { process, xds };
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
    // deploy/'s service account and RBAC (its namespace without Pod Security, for the bare test pod).
    await kube.kubectlOk(['create', 'namespace', NS]);
    for (const file of ['serviceaccount.yaml', 'rbac.yaml', 'leader-election-rbac.yaml']) await kube.kubectlOk(['apply', '-f', path.join(ROOT, 'deploy', file)]);
    leader = await serveKubernetes(kube, { leaseDurationSeconds: String(LEASE_S) }, { POD_NAME: 'vsxds-a', POD_NAMESPACE: NS });
    await waitUntil(async () => (await holder()) === 'vsxds-a', 'vsxds-a holding the lease');
    // The follower's Pod, as the downward API would name it: owner of the follower's object.
    const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'vsxds-b', namespace: NS }, spec: { containers: [{ name: 'vsxds', image: 'example.invalid/vsxds' }] } };
    const uid = JSON.parse(await kube.kubectlOk(['apply', '-f', '-', '-o', 'json'], JSON.stringify(pod))).metadata.uid as string;
    const started = await startFollower('vsxds-b', await kubeconfigAs('vsxds'), { POD_UID: uid });
    follower = started.process;
    followerXds = started.xds;
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
    // No replica reads the leader's contribution: it writes none.
    expect(await configMap('vsxds-replica-vsxds-a')).toBeUndefined();
  });

  it('the leader follows the others’ objects through a watch, not a list every second', async () => {
    await waitUntil(counts(5, 5, 0), () => `proxies 5/5/0 before${got()}`);
    const reader = (leader.source as KubernetesSource).replicas!;
    expect(reader.watchesStarted).toBeGreaterThan(0);
    const lists = reader.lists;
    const started = Date.now();
    // A change on the follower (a proxy comes and goes) reaches the status through the watch.
    const s = await proxy(followerXds, 'ingress-b4');
    await waitUntil(counts(6, 6, 0), () => `proxies 6/6/0 with the follower's new proxy${got()}`);
    s.close();
    await waitUntil(counts(5, 5, 0), () => `proxies 5/5/0 once it left${got()}`);
    // The follower renews its object every second meanwhile (a third of the 3 s lease): each
    // renewal is a watch event. The leader lists again only to confirm a contribution it saw
    // unrenewed for half the lease duration (none here, unless the machine stalls a renewal).
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    const seconds = (Date.now() - started) / 1000;
    expect(reader.lists - lists, `lists in ${seconds.toFixed(1)} s`).toBeLessThanOrEqual(Math.floor(seconds / 3));
    expect(reader.peers().has('vsxds-replica-vsxds-b')).toBe(true);
  });

  it('a reader allowed to list the replicas’ ConfigMaps but not to watch them says so once and lists every second instead', async () => {
    await kube.kubectlOk(['create', 'serviceaccount', 'vsxds-no-watch', '-n', NS]);
    await kube.kubectlOk(['create', 'role', 'configmaps-no-watch', '-n', NS, '--verb=get,list,create,update,patch,delete', '--resource=configmaps']);
    await kube.kubectlOk(['create', 'rolebinding', 'configmaps-no-watch', '-n', NS, '--role=configmaps-no-watch', `--serviceaccount=${NS}:vsxds-no-watch`]);
    const kc = new KubeConfig();
    kc.loadFromFile(await kubeconfigAs('vsxds-no-watch'));
    const lines: string[] = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
    const reader = new KubeReplicaStatus(new KubeHttp(kc), { namespace: NS, replica: 'reader-no-watch', leaseDurationSeconds: LEASE_S, log });
    reader.publishing = false;
    reader.reading = true;
    reader.start();
    try {
      await waitUntil(() => reader.peers().has('vsxds-replica-vsxds-b'), 'the follower’s contribution read by listing');
      const refused = () => lines.filter((line) => /cannot watch the replicas' ConfigMaps in vsxds-system \(403 Forbidden\): listing them every second instead; grant its service account watch on configmaps/.test(line)).length;
      await waitUntil(() => refused() > 0, 'the reader saying it may not watch');
      const lists = reader.lists;
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      expect(reader.lists - lists).toBeGreaterThanOrEqual(2);
      expect(refused()).toBe(1);
      expect(reader.peers().has('vsxds-replica-vsxds-b')).toBe(true);
    } finally {
      await reader.stop();
    }
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
    const third = await serveKubernetes(kube, { leaseDurationSeconds: String(LEASE_S) }, { POD_NAME: 'vsxds-c', POD_NAMESPACE: NS });
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

  it('a replica that may not write its ConfigMap says so once, serves its proxies, and the others keep counting', async () => {
    // The ClusterRole of deploy/ and the Lease, but no ConfigMaps.
    await kube.kubectlOk(['create', 'serviceaccount', 'vsxds-no-configmaps', '-n', NS]);
    await kube.kubectlOk(['create', 'clusterrolebinding', 'vsxds-no-configmaps', '--clusterrole=vsxds', `--serviceaccount=${NS}:vsxds-no-configmaps`]);
    await kube.kubectlOk(['create', 'role', 'lease-only', '-n', NS, '--verb=get,create,update', '--resource=leases.coordination.k8s.io']);
    await kube.kubectlOk(['create', 'rolebinding', 'lease-only', '-n', NS, '--role=lease-only', `--serviceaccount=${NS}:vsxds-no-configmaps`]);
    const limited = await startFollower('vsxds-d', await kubeconfigAs('vsxds-no-configmaps'));
    try {
      const forbidden = /"msg":"replica status: cannot write its ConfigMap vsxds-system\/vsxds-replica-vsxds-d[^"]*403 Forbidden[^"]*configmaps in vsxds-system/;
      const said = () => limited.process.output().split('\n').filter((line) => forbidden.test(line)).length;
      await waitUntil(() => said() > 0, 'the replica saying it may not write its ConfigMap');
      // It serves: a proxy gets its configuration from it.
      await proxy(limited.xds, 'ingress-d1');
      // Its retries (one a second) are not logged again.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      expect(said()).toBe(1);
      // The leader counts the others as before; the proxy of this replica it cannot see.
      expect(await counts(5, 5, 0)()).toBeDefined();
    } finally {
      await limited.process.kill();
    }
  });

  it('a follower killed without a chance to clean up stops counting within the lease duration and a little more', async () => {
    await waitUntil(counts(5, 5, 0), () => `the follower's proxies counted before it dies${got()}`);
    await follower?.kill();
    // Its object stays (no garbage collector runs here, and it had no chance to delete it): the
    // leader stops counting it because it saw no renewal for the lease duration.
    expect(await configMap('vsxds-replica-vsxds-b')).toBeDefined();
    await waitUntil(counts(2, 2, 0), () => `only the leader's 2 proxies counted${got()}`, STOPS_COUNTING_WITHIN_MS + 10_000);
  });

  it('a leader that steps down writes its object at once, and the new leader counts its proxies; leading again, it deletes it', async () => {
    const objectOf = async (replica: string) => (await configMap(`vsxds-replica-${replica}`)) !== undefined;
    expect(await holder()).toBe('vsxds-a');
    const third = await serveKubernetes(kube, { leaseDurationSeconds: String(LEASE_S) }, { POD_NAME: 'vsxds-c', POD_NAMESPACE: NS });
    const thirdWriter = (third.source as KubernetesSource).statusWriter;
    const leaderWriter = (leader.source as KubernetesSource).statusWriter;
    try {
      await proxy(third.xdsPort, 'ingress-c2');
      await waitUntil(counts(3, 3, 0), () => `proxies 3/3/0 with the third replica${got()}`);
      expect(await objectOf('vsxds-c')).toBe(true);
      expect(await objectOf('vsxds-a')).toBe(false);
      // The lease goes to vsxds-c (as when vsxds-a's renewals stop reaching the API server in
      // time): vsxds-a steps down alive and publishes its proxies; vsxds-c leads and deletes its object.
      await kube.kubectlOk(['patch', 'lease', 'vsxds-leader', '-n', NS, '--type=merge', '-p', JSON.stringify({ spec: { holderIdentity: 'vsxds-c' } })]);
      await waitUntil(async () => (await objectOf('vsxds-a')) && !(await objectOf('vsxds-c')), 'vsxds-a writing its object and vsxds-c deleting its own');
      expect(await holder()).toBe('vsxds-c');
      // The new leader counts the old one's proxies: one more on vsxds-a reaches the status vsxds-c writes.
      const writesBefore = { a: leaderWriter.writes, c: thirdWriter.writes };
      await proxy(leader.xdsPort, 'ingress-a3');
      await waitUntil(counts(4, 4, 0), () => `proxies 4/4/0 written by the new leader${got()}`);
      // Counted when the PATCH's answer is read: the API server can show the status a moment before.
      await waitUntil(() => thirdWriter.writes > writesBefore.c, () => `vsxds-c counting its status write (${thirdWriter.writes} writes, ${writesBefore.c} before)`);
      expect(leaderWriter.writes).toBe(writesBefore.a);
    } finally {
      await third.shutdown('test');
    }
    // vsxds-c gave the lease up: vsxds-a leads again, deletes its object and counts its 3 proxies.
    await waitUntil(async () => (await holder()) === 'vsxds-a', 'vsxds-a leading again');
    await waitUntil(async () => !(await objectOf('vsxds-a')), 'vsxds-a deleting its object');
    await waitUntil(counts(3, 3, 0), () => `proxies 3/3/0 once vsxds-c stopped${got()}`);
  });
});
