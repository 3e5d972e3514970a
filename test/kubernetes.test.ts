import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { firstValueFrom } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Running } from '../src/main/serve.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../src/xds/index.js';
import { nodeFor, RawAdsStream, type Response } from './support/ads-client.js';
import { RTCP_CLUSTER, RTP_CLUSTER } from './support/envoy-scenario.js';
import { startKubeEnv, type KubeEnv } from './support/kube-env.js';
import { installCrd, readyPod as podReady, serveKubernetes } from './support/vsxds-kube.js';
import { waitUntil } from './support/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const INGRESS = nodeFor('default', { app: 'ingress' }, 'default/ingress-1');
const names = (r: Response) => r.resources.map((x) => x.name).sort();
const endpointsOf = (r: Response) =>
  Object.fromEntries(
    r.resources.map((cla) => [
      cla.name,
      (cla.value.endpoints?.[0]?.lb_endpoints ?? [])
        .map((e: any) => `${e.endpoint.address.socket_address.address}${e.health_status === 'DEGRADED' ? ' terminating' : ''}`)
        .sort(),
    ]),
  );



describe('with a real kube-apiserver', { timeout: 200_000 }, () => {
  let kube: KubeEnv;
  let vsxds: Running;
  let ingress: RawAdsStream;
  const opened: RawAdsStream[] = [];

  const readyPod = (name: string, labels: Record<string, string>, ip: string, finalizer = false) => podReady(kube, name, labels, ip, finalizer);

  async function vsStatus(name: string): Promise<any> {
    return JSON.parse(await kube.kubectlOk(['get', 'vsvc', name, '-o', 'json'])).status ?? {};
  }

  const condition = (status: any, type: string) => (status.conditions ?? []).find((c: any) => c.type === type);

  beforeAll(async () => {
    kube = await startKubeEnv();
    // vsxds starts before the CRD exists: it must report that, wait, and serve nothing meanwhile.
    vsxds = await serveKubernetes(kube);
  }, 45 * 60_000);

  afterAll(async () => {
    for (const s of opened) s.close();
    await vsxds?.shutdown('test over');
    await kube?.stop();
  });

  const open = (mode: 'sotw' | 'delta' = 'sotw') => {
    const s = new RawAdsStream(`127.0.0.1:${vsxds.xdsPort}`, mode);
    opened.push(s);
    return s;
  };

  it('serves nothing while the CRD is missing, and starts once it is applied', async () => {
    ingress = open();
    ingress.send({ node: INGRESS, type_url: CLUSTER_TYPE });
    ingress.send({ type_url: LISTENER_TYPE });
    const readyz = await fetch(`http://127.0.0.1:${vsxds.adminPort}/readyz`);
    expect(readyz.status).toBe(503);
    expect(ingress.responses).toEqual([]);

    await installCrd(kube);
    // Synced with no VirtualServices yet: an empty configuration is the truth now, and is served.
    const empty = await ingress.next(60_000);
    expect([empty.type_url, empty.resources]).toEqual([CLUSTER_TYPE, []]);
    ingress.ack(empty);
    const emptyLds = await ingress.next();
    expect([emptyLds.type_url, emptyLds.resources]).toEqual([LISTENER_TYPE, []]);
    ingress.ack(emptyLds);

    await readyPod('worker-1', { app: 'worker' }, '10.1.0.1');
    await readyPod('worker-2', { app: 'worker', canary: 'yes' }, '10.1.0.2');
    await readyPod('ingress-1', { app: 'ingress' }, '10.1.0.100');
    const examples = path.join(ROOT, 'examples', 'virtualservices');
    await kube.kubectlOk(['apply', '-f', path.join(examples, 'ingress.yaml'), '-f', path.join(examples, 'worker.yaml')]);

    const cds = await ingress.next(60_000);
    expect(cds.type_url).toBe(CLUSTER_TYPE);
    expect(names(cds)).toEqual([RTP_CLUSTER, RTCP_CLUSTER]);
    ingress.send({ type_url: ENDPOINT_TYPE, resource_names: [RTP_CLUSTER, RTCP_CLUSTER] });
    ingress.ack(cds);
    const eds = await ingress.next();
    expect(endpointsOf(eds)).toEqual({ [RTP_CLUSTER]: ['10.1.0.1', '10.1.0.2'], [RTCP_CLUSTER]: ['10.1.0.1', '10.1.0.2'] });
    ingress.ack(eds, { resource_names: [RTP_CLUSTER, RTCP_CLUSTER] });
    const lds = await ingress.next();
    expect(names(lds)).toEqual(['ingress-rtcp', 'ingress-rtp']);
    ingress.ack(lds);
    expect((await fetch(`http://127.0.0.1:${vsxds.adminPort}/readyz`)).status).toBe(200);
  });

  it('shows in kubectl get vsvc that the config is accepted and live', async () => {
    const status = await waitUntil(async () => {
      const s = await vsStatus('ingress');
      return condition(s, 'Synced')?.status === 'True' ? s : undefined;
    }, 'ingress Synced=True');
    // The worker's status is written in the same report or the next one.
    await waitUntil(async () => (condition(await vsStatus('worker'), 'Accepted') ? true : undefined), 'worker status written');
    expect(condition(status, 'Accepted')).toMatchObject({ status: 'True' });
    expect(status.proxies).toMatchObject({ matched: 1, synced: 1, nacked: 0, summary: '1/1' });
    expect(status.listeners).toBe(2);
    const generation = JSON.parse(await kube.kubectlOk(['get', 'vsvc', 'ingress', '-o', 'json'])).metadata.generation;
    expect(status.observedGeneration).toBe(generation);
    const table = await kube.kubectlOk(['get', 'vsvc']);
    expect(table).toMatch(/NAME\s+LISTENERS\s+ACCEPTED\s+SYNCED\s+PROXIES\s+AGE/);
    expect(table).toMatch(/ingress\s+2\s+True\s+True\s+1\/1\s+/);
    // No worker proxy is connected: the worker VirtualService is accepted but not live anywhere.
    expect(table).toMatch(/worker\s+2\s+True\s+Unknown\s+0\/0\s+/);
  });

  it('keeps no managedFields of the VirtualServices it watches (never read; a fifth of the heap of 10,000 VirtualServices)', async () => {
    const kept = (await firstValueFrom(vsxds.source.state$)).virtualServices;
    expect(kept.length).toBeGreaterThan(0);
    // The API server sets them on every object it stores.
    expect(JSON.parse(await kube.kubectlOk(['get', 'vsvc', 'ingress', '-o', 'json', '--show-managed-fields'])).metadata.managedFields).toBeDefined();
    expect(kept.filter((raw) => raw.metadata['managedFields'] !== undefined).map((raw) => raw.metadata.name)).toEqual([]);
  });

  it('sends pod changes as endpoint updates only, keeping terminating pods as DEGRADED', async () => {
    await readyPod('worker-3', { app: 'worker' }, '10.1.0.3', true);
    const added = await ingress.next();
    expect(added.type_url).toBe(ENDPOINT_TYPE);
    expect(endpointsOf(added)[RTP_CLUSTER]).toEqual(['10.1.0.1', '10.1.0.2', '10.1.0.3']);
    ingress.ack(added, { resource_names: [RTP_CLUSTER, RTCP_CLUSTER] });

    // The finalizer holds the pod in Terminating, as a kubelet would while it shuts down.
    await kube.kubectlOk(['delete', 'pod', 'worker-3', '--wait=false']);
    const draining = await ingress.next();
    expect(draining.type_url).toBe(ENDPOINT_TYPE);
    expect(endpointsOf(draining)[RTP_CLUSTER]).toEqual(['10.1.0.1', '10.1.0.2', '10.1.0.3 terminating']);
    ingress.ack(draining, { resource_names: [RTP_CLUSTER, RTCP_CLUSTER] });

    await kube.kubectlOk(['patch', 'pod', 'worker-3', '--type=json', '-p', '[{"op":"remove","path":"/metadata/finalizers"}]']);
    const gone = await ingress.next();
    expect(endpointsOf(gone)[RTP_CLUSTER]).toEqual(['10.1.0.1', '10.1.0.2']);
    ingress.ack(gone, { resource_names: [RTP_CLUSTER, RTCP_CLUSTER] });
    expect(ingress.responses.filter((r) => r.type_url !== ENDPOINT_TYPE)).toHaveLength(4);
  });

  it('rejects at admission what the schema can, and marks semantically invalid VirtualServices Accepted=False while the others keep being served', async () => {
    const bad = await readFile(path.join(ROOT, 'examples', 'virtualservices', 'worker.yaml'), 'utf8');
    const badPort = bad.replace(/name: worker\n/, 'name: bad-port\n').replace('port: 2001', 'port: 70000');
    const admission = await kube.kubectl(['apply', '-f', '-'], badPort);
    expect(admission.code).not.toBe(0);
    expect(admission.stderr).toMatch(/70000|port/i);

    const dnsInEds = {
      apiVersion: 'servicemesh.l7mp.io/v1',
      kind: 'VirtualService',
      metadata: { name: 'dns-in-eds', namespace: 'default' },
      spec: {
        selector: { app: 'ingress' },
        listeners: [{ name: 'dns', udp: { port: 3000, cluster: { name: 'dns', service_discovery: 'eds', endpoints: [{ host: { address: 'media.example.com' }, port: 1 }] } } }],
      },
    };
    await kube.kubectlOk(['apply', '-f', '-'], JSON.stringify(dnsInEds));
    const status = await waitUntil(async () => {
      const s = await vsStatus('dns-in-eds');
      return condition(s, 'Accepted')?.status === 'False' ? s : undefined;
    }, 'Accepted=False');
    expect(condition(status, 'Accepted').message).toMatch(/strictdns/);
    expect(await kube.kubectlOk(['get', 'vsvc', 'dns-in-eds'])).toMatch(/dns-in-eds\s+\S*\s+False/);
    // The ingress proxy was not disturbed: nothing new was sent to it.
    expect(condition(await vsStatus('ingress'), 'Synced')?.status).toBe('True');
    expect(ingress.responses).toHaveLength(8);
  });

  it('lets the oldest VirtualService win a port conflict and tells the other one who won', async () => {
    const clash = {
      apiVersion: 'servicemesh.l7mp.io/v1',
      kind: 'VirtualService',
      metadata: { name: 'clash', namespace: 'default' },
      spec: {
        selector: { app: 'ingress' },
        listeners: [
          { name: 'late-rtp', udp: { port: 2000, cluster: { name: 'late', service_discovery: 'strictdns', endpoints: [{ host: { address: '127.0.0.1' }, port: 9 }] } } },
          { name: 'extra', udp: { port: 2100, cluster: { name: 'extra', service_discovery: 'strictdns', endpoints: [{ host: { address: '127.0.0.1' }, port: 9 }] } } },
        ],
      },
    };
    await kube.kubectlOk(['apply', '-f', '-'], JSON.stringify(clash));
    const cds = await ingress.next();
    expect(names(cds)).toEqual([expect.stringMatching(/^vsxds-dns-9-[0-9a-f]{12}$/), RTP_CLUSTER, RTCP_CLUSTER]);
    ingress.ack(cds);
    const lds = await ingress.next();
    expect(names(lds)).toEqual(['extra', 'ingress-rtcp', 'ingress-rtp']);
    ingress.ack(lds);
    const status = await waitUntil(async () => {
      const s = await vsStatus('clash');
      return condition(s, 'Conflicted')?.status === 'True' ? s : undefined;
    }, 'Conflicted=True');
    expect(condition(status, 'Conflicted').message).toContain('default/ingress');
    expect(condition(status, 'Conflicted').message).toContain('2000');
    await kube.kubectlOk(['delete', 'vsvc', 'clash']);
    const cds2 = await ingress.next();
    expect(cds2.type_url).toBe(LISTENER_TYPE);
    ingress.ack(cds2);
    ingress.ack(await ingress.next());
  });

  it('reports a NACK on the VirtualService status', async () => {
    const update = JSON.parse(await kube.kubectlOk(['get', 'vsvc', 'ingress', '-o', 'json']));
    update.spec.listeners[0].udp.cluster.health_check.interval = 1500;
    await kube.kubectlOk(['apply', '-f', '-'], JSON.stringify({ apiVersion: update.apiVersion, kind: update.kind, metadata: { name: 'ingress', namespace: 'default' }, spec: update.spec }));
    const cds = await ingress.next();
    expect(cds.type_url).toBe(CLUSTER_TYPE);
    ingress.nack(cds, 'envoy says no: health check interval too odd', ingress.responses.filter((r) => r.type_url === CLUSTER_TYPE).at(-2)?.version_info);
    const status = await waitUntil(async () => {
      const s = await vsStatus('ingress');
      return condition(s, 'Synced')?.reason === 'Rejected' ? s : undefined;
    }, 'Synced=False/Rejected');
    expect(status.nackMessage).toBe('envoy says no: health check interval too odd');
    expect(status.proxies).toMatchObject({ matched: 1, nacked: 1 });
    expect(await kube.kubectlOk(['get', 'vsvc', 'ingress'])).toMatch(/ingress\s+2\s+True\s+False\s+0\/1/);
  });

  it('admits the session controls, refuses hash_key with hash_source_ip at admission, and shows a session limit on the status', async () => {
    const gateway = (cluster: object) => ({
      apiVersion: 'servicemesh.l7mp.io/v1',
      kind: 'VirtualService',
      metadata: { name: 'gateway', namespace: 'default' },
      spec: {
        selector: { app: 'gateway' },
        listeners: [{ name: 'gw', udp: { port: 4000, idle_timeout_ms: 30_000, per_packet_load_balancing: false, access_log: { destination: 'stdout', flush_interval_ms: 60_000 }, cluster } }],
      },
    });
    const cluster = { name: 'gw', service_discovery: 'eds', hash_source_ip: true, max_sessions: 50_000, endpoints: [{ host: { selector: { app: 'worker' } }, port: 2001, weight: 3 }] };
    const both = await kube.kubectl(['apply', '-f', '-'], JSON.stringify(gateway({ ...cluster, hash_key: 'call' })));
    expect(both.code).not.toBe(0);
    expect(both.stderr).toContain('hash_key and hash_source_ip: true exclude each other');
    const toFile = await kube.kubectl(['apply', '-f', '-'], JSON.stringify({ ...gateway(cluster), spec: { ...gateway(cluster).spec, listeners: [{ name: 'gw', udp: { port: 4000, access_log: { destination: '/etc/envoy/envoy.yaml' }, cluster } }] } }));
    expect(toFile.code).not.toBe(0);
    expect(toFile.stderr).toMatch(/destination/);

    await kube.kubectlOk(['apply', '-f', '-'], JSON.stringify(gateway(cluster)));
    // Nothing was pruned: the schema knows every field.
    const stored = JSON.parse(await kube.kubectlOk(['get', 'vsvc', 'gateway', '-o', 'json']));
    expect(stored.spec).toEqual(gateway(cluster).spec);
    const proxy = open('delta');
    proxy.send({ node: nodeFor('default', { app: 'gateway' }, 'default/gateway-1'), type_url: CLUSTER_TYPE });
    const status = await waitUntil(async () => {
      const st = await vsStatus('gateway');
      return st.sessionLimits ? st : undefined;
    }, 'sessionLimits on the status');
    expect(condition(status, 'Accepted')?.status).toBe('True');
    expect(status.sessionLimits).toEqual({ gw: 50_000 });
    expect(status.envoyClusters.gw).toMatch(/^vsxds-eds-2001-[0-9a-f]{12}$/);
    const cds = await proxy.next();
    expect(cds.resources.map((r) => r.value.circuit_breakers.thresholds[0].max_connections.value)).toEqual([50_000]);
    proxy.close();
  });

  it('resolves a proxy identified by node.id <namespace>/<pod> through the pod informer', async () => {
    const s = open('delta');
    s.send({ node: { id: 'default/ingress-1' }, type_url: LISTENER_TYPE });
    const lds = await s.next();
    expect(names(lds)).toEqual(['ingress-rtcp', 'ingress-rtp']);
    s.close();
  });

  it('recovers from an API server restart without pushing deletions, and follows changes made after it', async () => {
    const before = ingress.responses.length;
    await kube.stopApiServer({ signal: 'SIGKILL' });
    await new Promise((r) => setTimeout(r, 1_500));
    await kube.startApiServer();
    await readyPod('worker-4', { app: 'worker' }, '10.1.0.4');
    // A list/watch that the restarting API server accepted but never answered is started over
    // after 75 s (kubernetes-source.ts STALL_MS), then backs off at most 30 s.
    const next = await ingress.response(before, 150_000);
    expect(ingress.responses.length).toBe(before + 1);
    expect(next.type_url).toBe(ENDPOINT_TYPE);
    // The RTCP cluster is the one the proxy subscribed to from the start (the NACK test moved RTP to another).
    expect(endpointsOf(next)[RTCP_CLUSTER]).toEqual(['10.1.0.1', '10.1.0.2', '10.1.0.4']);
  });
});
