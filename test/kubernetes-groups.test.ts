/**
 * Node groups against a real kube-apiserver: proxies that the same VirtualServices select share
 * one group whatever other labels their pods carry, and a relabelled pod's proxy follows its
 * labels on the stream it has.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Running } from '../src/main/serve.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../src/xds/index.js';
import { RawAdsStream, type Response } from './support/ads-client.js';
import { startKubeEnv, type KubeEnv } from './support/kube-env.js';
import { installCrd, readyPod, serveKubernetes } from './support/vsxds-kube.js';
import { waitUntil } from './support/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const EXAMPLES = path.join(ROOT, 'examples', 'virtualservices');
const names = (r: Response) => r.resources.map((x) => x.name).sort();

const gateway = {
  apiVersion: 'servicemesh.l7mp.io/v1',
  kind: 'VirtualService',
  metadata: { name: 'gateway', namespace: 'default' },
  spec: {
    selector: { app: 'gateway' },
    listeners: [{ name: 'gw', udp: { port: 3000, cluster: { name: 'gw', service_discovery: 'eds', endpoints: [{ host: { selector: { app: 'worker' } }, port: 2001 }] } } }],
  },
};

describe('node groups with a real kube-apiserver', { timeout: 200_000 }, () => {
  let kube: KubeEnv;
  let vsxds: Running;
  const opened: RawAdsStream[] = [];
  const open = () => {
    const s = new RawAdsStream(`127.0.0.1:${vsxds.xdsPort}`, 'sotw');
    opened.push(s);
    return s;
  };
  const groupOf = (nodeId: string) => vsxds.ads.status.list().find((p) => p.nodeId === nodeId)?.group?.key;

  beforeAll(async () => {
    kube = await startKubeEnv();
    await installCrd(kube);
    vsxds = await serveKubernetes(kube);
    await kube.kubectlOk(['apply', '-f', path.join(EXAMPLES, 'ingress.yaml'), '-f', path.join(EXAMPLES, 'worker.yaml'), '-f', '-'], JSON.stringify(gateway));
  }, 45 * 60_000);

  afterAll(async () => {
    for (const s of opened) s.close();
    await vsxds?.shutdown('test over');
    await kube?.stop();
  });

  it('puts the proxies of one StatefulSet in one group, by the labels the selectors look at', async () => {
    for (const i of [0, 1]) {
      await readyPod(kube, `worker-${i}`, { app: 'worker', 'statefulset.kubernetes.io/pod-name': `worker-${i}`, 'controller-revision-hash': `worker-${i === 0 ? 'a1' : 'b2'}` }, `10.2.0.${i + 1}`);
    }
    const streams = [0, 1].map((i) => {
      const s = open();
      s.send({ node: { id: `default/worker-${i}` }, type_url: CLUSTER_TYPE });
      return s;
    });
    const [a, b] = await Promise.all(streams.map((s) => s.next(30_000)));
    expect(names(a as Response)).toEqual(names(b as Response));
    await waitUntil(() => groupOf('default/worker-0') && groupOf('default/worker-1'), 'both proxies grouped');
    expect([groupOf('default/worker-0'), groupOf('default/worker-1')]).toEqual(['default/app=worker', 'default/app=worker']);
    const metrics = await (await fetch(`http://127.0.0.1:${vsxds.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/vsxds_connected_proxies\{group="default\/app=worker"\} 2/);
    expect(metrics).not.toContain('statefulset.kubernetes.io');
  });

  it('moves the proxy of a relabelled pod to its new configuration on the same stream', async () => {
    await readyPod(kube, 'edge-1', { app: 'ingress', 'pod-template-hash': '5d8f' }, '10.2.0.50');
    const s = open();
    const synced = await s.syncLikeEnvoy({ id: 'default/edge-1' }, { timeoutMs: 30_000 });
    expect(names(synced.lds)).toEqual(['ingress-rtcp', 'ingress-rtp']);

    await kube.kubectlOk(['label', 'pod', 'edge-1', 'app=gateway', '--overwrite']);
    // Take what comes as Envoy does, until the listeners are the gateway's.
    let clusters = names(synced.cds);
    for (let i = 0; i < 10; i++) {
      const r = await s.next(30_000);
      if (r.type_url === CLUSTER_TYPE) {
        clusters = names(r);
        s.send({ type_url: ENDPOINT_TYPE, resource_names: clusters });
        s.ack(r);
      } else if (r.type_url === ENDPOINT_TYPE) {
        s.ack(r, { resource_names: clusters });
      } else {
        s.ack(r);
        if (r.type_url === LISTENER_TYPE && names(r).join() === 'gw') break;
      }
    }
    expect(s.ended).toBeUndefined();
    expect(groupOf('default/edge-1')).toBe('default/app=gateway');
    expect(names(s.responses.filter((r) => r.type_url === LISTENER_TYPE).at(-1) as Response)).toEqual(['gw']);
  });

  it('splits a group when a VirtualService selects by a label no selector named before', async () => {
    await readyPod(kube, 'zone-a', { app: 'ingress', zone: 'a' }, '10.2.0.61');
    await readyPod(kube, 'zone-b', { app: 'ingress', zone: 'b' }, '10.2.0.62');
    const a = open();
    const b = open();
    await Promise.all([a.syncLikeEnvoy({ id: 'default/zone-a' }, { timeoutMs: 30_000 }), b.syncLikeEnvoy({ id: 'default/zone-b' }, { timeoutMs: 30_000 })]);
    expect([groupOf('default/zone-a'), groupOf('default/zone-b')]).toEqual(['default/app=ingress', 'default/app=ingress']);
    const zoned = { ...gateway, metadata: { name: 'zone-a-only', namespace: 'default' }, spec: { ...gateway.spec, selector: { app: 'ingress', zone: 'a' } } };
    await kube.kubectlOk(['apply', '-f', '-'], JSON.stringify(zoned));
    await waitUntil(() => groupOf('default/zone-a') === 'default/app=ingress,zone=a' && groupOf('default/zone-b') === 'default/app=ingress,zone=b', 'the two proxies in groups of their own');
    expect([a.ended, b.ended]).toEqual([undefined, undefined]);
  });
});
