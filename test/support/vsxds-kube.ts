/**
 * vsxds against the real kube-apiserver of kube-env.ts: the CRD, pods as a kubelet would leave
 * them (no kubelet runs: the test writes podIP and Ready through the status subresource), and
 * vsxds serving from the cluster with short test windows.
 */
import path from 'node:path';
import type { Settings } from '../../src/main/config.js';
import { serve, type Running } from '../../src/main/serve.js';
import type { KubeEnv } from './kube-env.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');

/** Applies crds/ and waits until the API server serves VirtualServices. */
export async function installCrd(kube: KubeEnv): Promise<void> {
  await kube.kubectlOk(['apply', '-f', path.join(ROOT, 'crds')]);
  await kube.kubectlOk(['wait', '--for=condition=Established', 'crd/virtualservices.servicemesh.l7mp.io', '--timeout=60s']);
  // The API server's discovery lists the new type a moment after it is Established, and kubectl
  // keeps what it discovered before that: ask again until the type is there.
  for (let i = 0; ; i++) {
    kube.forgetDiscovery();
    if ((await kube.kubectl(['get', 'vsvc', '-A'])).code === 0) break;
    if (i >= 100) throw new Error('kubectl does not know the vsvc type 20 s after the CRD was Established');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  kube.forgetDiscovery();
}

/** A pod in `default` with its IP and Ready=True; with `finalizer`, deleting it leaves it Terminating. */
export async function readyPod(kube: KubeEnv, name: string, labels: Record<string, string>, ip: string, finalizer = false): Promise<void> {
  const manifest = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default', labels, ...(finalizer ? { finalizers: ['vsxds.test/hold'] } : {}) },
    spec: { containers: [{ name: 'app', image: 'example.invalid/app' }] },
  };
  await kube.kubectlOk(['apply', '-f', '-'], JSON.stringify(manifest));
  const status = { status: { podIP: ip, podIPs: [{ ip }], phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] } };
  await kube.kubectlOk(['patch', 'pod', name, '--subresource=status', '--type=merge', '-p', JSON.stringify(status)]);
}

/** vsxds on free loopback ports, watching the cluster, with short coalescing and status windows. */
export function serveKubernetes(kube: KubeEnv, extra: Settings = {}, env: NodeJS.ProcessEnv = {}): Promise<Running> {
  return serve(
    {
      source: 'kubernetes',
      kubeconfig: kube.kubeconfigPath,
      xdsAddress: '127.0.0.1:0',
      adminAddress: '127.0.0.1:0',
      coalesceMs: '20',
      statusMs: '50',
      logLevel: process.env['VSXDS_TEST_LOG'] ?? 'silent',
      shutdownGraceMs: '100',
      ...extra,
    },
    env,
  );
}
