import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installKube, startKubeEnv, type KubeEnv } from '../support/kube-env.js';

// The first run on a machine builds kube-apiserver, kubectl and etcd from Go modules
// (test/env/install-kube.sh, ~5 min on 2 cores); later runs use the cache.
const INSTALL_TIMEOUT_MS = 40 * 60_000;

interface PodJson {
  metadata: { name: string; namespace: string; uid: string };
  status?: {
    phase?: string;
    podIP?: string;
    podIPs?: { ip: string }[];
    conditions?: { type: string; status: string }[];
  };
}

describe('kube-env smoke test (real etcd + kube-apiserver, no kubelet)', () => {
  let env: KubeEnv | undefined;
  const kube = (): KubeEnv => {
    if (env === undefined) throw new Error('kube env was not started');
    return env;
  };

  beforeAll(async () => {
    await installKube({ timeoutMs: INSTALL_TIMEOUT_MS });
    env = await startKubeEnv();
  }, INSTALL_TIMEOUT_MS + 5 * 60_000);

  afterAll(async () => {
    const kubeconfig = env?.kubeconfigPath;
    await env?.stop();
    if (kubeconfig !== undefined) expect(existsSync(kubeconfig)).toBe(false);
  }, 60_000);

  it('serves the API and kubectl talks to it', async () => {
    const out = await kube().kubectlOk(['version', '-o', 'json']);
    const v = JSON.parse(out) as { clientVersion: { gitVersion: string }; serverVersion: { gitVersion: string } };
    expect(v.serverVersion.gitVersion).toMatch(/^v1\.\d+\.\d+$/);
    expect(v.clientVersion.gitVersion).toBe(v.serverVersion.gitVersion);
    expect(kube().server).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  }, 60_000);

  it('creates a namespace', async () => {
    const r = await kube().kubectl(['create', 'namespace', 'x']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('namespace/x created');
  }, 60_000);

  it('stores a Pod that stays Pending and accepts a status written through the status subresource', async () => {
    const manifest = JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p', namespace: 'x', labels: { app: 'demo' } },
      spec: { containers: [{ name: 'c', image: 'registry.invalid/none:1' }] },
    });
    const applied = await kube().kubectlOk(['apply', '-f', '-'], manifest);
    expect(applied).toContain('pod/p created');

    const before = JSON.parse(await kube().kubectlOk(['get', 'pod', 'p', '-n', 'x', '-o', 'json'])) as PodJson;
    expect(before.status?.phase).toBe('Pending');
    expect(before.status?.podIP).toBeUndefined();

    const status = {
      status: {
        phase: 'Running',
        podIP: '10.1.2.3',
        podIPs: [{ ip: '10.1.2.3' }],
        conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') }],
      },
    };
    await kube().kubectlOk(['patch', 'pod', 'p', '-n', 'x', '--subresource=status', '--type=merge', '-p', JSON.stringify(status)]);

    const after = JSON.parse(await kube().kubectlOk(['get', 'pod', 'p', '-n', 'x', '-o', 'json'])) as PodJson;
    expect(after.status?.podIP).toBe('10.1.2.3');
    expect(after.status?.phase).toBe('Running');
    expect(after.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
  }, 60_000);

  it('keeps the data across API server restarts (graceful and SIGKILL) on the same port', async () => {
    const env = kube();
    const server = env.server;
    const uid = (JSON.parse(await env.kubectlOk(['get', 'pod', 'p', '-n', 'x', '-o', 'json'])) as PodJson).metadata.uid;

    await env.stopApiServer();
    const down = await env.kubectl(['get', 'pod', 'p', '-n', 'x', '--request-timeout=5s']);
    expect(down.code).not.toBe(0);
    await env.startApiServer();
    expect(env.server).toBe(server);
    let pod = JSON.parse(await env.kubectlOk(['get', 'pod', 'p', '-n', 'x', '-o', 'json'])) as PodJson;
    expect(pod.metadata.uid).toBe(uid);
    expect(pod.status?.podIP).toBe('10.1.2.3');

    await env.stopApiServer({ signal: 'SIGKILL' });
    await env.startApiServer();
    pod = JSON.parse(await env.kubectlOk(['get', 'pod', 'p', '-n', 'x', '-o', 'json'])) as PodJson;
    expect(pod.metadata.uid).toBe(uid);
    expect(pod.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
  }, 180_000);
});
