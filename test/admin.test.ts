import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve, type Running } from '../src/main/serve.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../src/xds/index.js';
import { nodeFor, RawAdsStream } from './support/ads-client.js';
import { waitUntil } from './support/wait.js';
import { RTCP_CLUSTER, RTP_CLUSTER } from './support/envoy-scenario.js';

const ROOT = path.resolve(import.meta.dirname, '..');

describe('admin HTTP', () => {
  let dir: string;
  let vsxds: Running;
  let stream: RawAdsStream;
  const get = async (p: string) => {
    const res = await fetch(`http://127.0.0.1:${vsxds.adminPort}${p}`);
    return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vsxds-admin-'));
    await cp(path.join(ROOT, 'examples'), dir, { recursive: true });
    vsxds = await serve(
      { source: `file:${dir}`, xdsAddress: '127.0.0.1:0', adminAddress: '127.0.0.1:0', coalesceMs: '10', statusMs: '20', logLevel: 'silent', shutdownGraceMs: '50' },
      {},
    );
    stream = new RawAdsStream(`127.0.0.1:${vsxds.xdsPort}`, 'sotw');
    stream.send({ node: nodeFor('default', { app: 'ingress' }, 'default/ingress-1'), type_url: CLUSTER_TYPE });
    stream.send({ type_url: LISTENER_TYPE });
    const cds = await stream.next();
    stream.send({ type_url: ENDPOINT_TYPE, resource_names: [RTP_CLUSTER, RTCP_CLUSTER] });
    stream.ack(cds);
    const eds = await stream.next();
    stream.nack(eds, 'endpoints look wrong to me', '', { resource_names: [RTP_CLUSTER, RTCP_CLUSTER] });
    stream.ack(await stream.next());
  });
  afterAll(async () => {
    stream?.close();
    await vsxds?.shutdown('test over');
    await rm(dir, { recursive: true, force: true });
  });

  it('answers liveness and readiness probes', async () => {
    expect(await get('/healthz')).toMatchObject({ status: 200, text: 'ok\n' });
    expect(await get('/readyz')).toMatchObject({ status: 200, text: 'ok\n' });
  });

  it('exports Prometheus metrics: proxies per group, pushes, ACKs, NACKs, latency, builds', async () => {
    await stream.until(() => vsxds.ads.status.list()[0]?.types.get(LISTENER_TYPE)?.acked !== undefined, 5000, 'LDS ACK');
    const { status, type, text } = await get('/metrics');
    expect(status).toBe(200);
    expect(type).toContain('text/plain');
    expect(text).toContain('vsxds_connected_proxies{group="default/app=ingress"} 1');
    expect(text).toContain('vsxds_xds_pushes_total{type="CDS",mode="sotw"} 1');
    expect(text).toContain('vsxds_xds_acks_total{type="LDS",mode="sotw"} 1');
    expect(text).toContain('vsxds_xds_nacks_total{type="EDS",mode="sotw"} 1');
    expect(text).toMatch(/vsxds_xds_push_ack_seconds_count\{type="CDS"\} 1/);
    expect(text).toMatch(/vsxds_snapshot_build_seconds_count [1-9]/);
    expect(text).toContain('vsxds_ready 1');
    expect(text).toMatch(/vsxds_unsynced_proxies\{group="default\/app=ingress"\} [01]\n/);
    expect(text).toMatch(/vsxds_unsynced_seconds\{group="default\/app=ingress"\} \d/);
    expect(text).toContain('vsxds_virtualservices{accepted="true"} 2');
    expect(text).toContain('vsxds_process_resident_memory_bytes');
  });

  it('shows per proxy what was sent, ACKed and NACKed in /debug/syncz', async () => {
    const body = JSON.parse((await get('/debug/syncz')).text);
    expect(body).toHaveLength(1);
    expect(body[0]).toMatchObject({ node: 'default/ingress-1', group: 'default/app=ingress', mode: 'sotw' });
    expect(body[0].types.EDS.nack).toMatchObject({ message: 'endpoints look wrong to me' });
    expect(body[0].types.CDS.acked).toBe(body[0].types.CDS.sent);
  });

  it('dumps a node group configuration with its NACKs, by group key or node id', async () => {
    const byGroup = JSON.parse((await get('/debug/config_dump?node=default/app=ingress')).text);
    expect(Object.keys(byGroup.types).sort()).toEqual(['CDS', 'EDS', 'LDS']);
    expect(byGroup.types.LDS.resources.map((r: any) => r.name).sort()).toEqual(['ingress-rtcp', 'ingress-rtp']);
    expect(byGroup.nacks).toMatchObject([{ typeUrl: ENDPOINT_TYPE, message: 'endpoints look wrong to me', nodeIds: ['default/ingress-1'] }]);
    const byNode = JSON.parse((await get('/debug/config_dump?node=default/ingress-1')).text);
    expect(byNode.group).toBe('default/app=ingress');
    const missing = await get('/debug/config_dump?node=nobody');
    expect(missing.status).toBe(404);
    expect(missing.text).toContain('known groups: default/app=ingress');
  });

  it('shows the VirtualService statuses, with the NACK', async () => {
    await stream.until(() => JSON.stringify(vsxds.reporter.current().get('default/ingress') ?? {}).includes('Rejected'), 5000, 'status');
    const body = JSON.parse((await get('/debug/virtualservices')).text);
    expect(body['default/ingress'].nackMessage).toBe('endpoints look wrong to me');
    expect(body['default/ingress'].conditions.find((c: any) => c.type === 'Synced')).toMatchObject({ status: 'False', reason: 'Rejected' });
  });

  it('traces where a new call\'s time goes in /debug/changes and vsxds_change_seconds: queued, build, push and ACK per type', async () => {
    const call = {
      apiVersion: 'servicemesh.l7mp.io/v1',
      kind: 'VirtualService',
      metadata: { name: 'call-1', namespace: 'default' },
      spec: {
        selector: { app: 'ingress' },
        listeners: [
          {
            name: 'call-1-l',
            udp: { port: 20000, cluster: { name: 'call-1-c', service_discovery: 'eds', hash_key: 'call-1', health_check: { interval: 1000, protocol: 'TCP' }, endpoints: [{ name: 'worker', host: { selector: { app: 'worker' } }, port: 2001, health_check_port: 1233 }] } },
          },
        ],
      },
    };
    const before = Date.now();
    await writeFile(path.join(dir, 'virtualservices', 'call-1.yaml'), JSON.stringify(call));
    // Its cluster is the examples' RTP cluster, shared: only the listener is new.
    const lds = await stream.next();
    expect(lds.type_url).toBe(LISTENER_TYPE);
    expect(lds.resources.map((r) => r.name).sort()).toEqual(['call-1-l', 'ingress-rtcp', 'ingress-rtp']);
    stream.ack(lds);
    const trace = await waitUntil(async () => {
      const { changes } = JSON.parse((await get('/debug/changes')).text);
      const t = changes.find((c: any) => c.key === 'default/call-1');
      return t?.completedAt ? t : undefined;
    }, 'the call traced to its ACK');
    expect(trace).toMatchObject({ kind: 'upsert', groups: 1, proxies: 1 });
    expect(Object.keys(trace.types)).toEqual(['Listener']);
    const { receivedAt, buildStartedAt, builtAt } = trace;
    const { sentAt, ackedAt } = trace.types.Listener;
    const times = [before, receivedAt, buildStartedAt, builtAt, sentAt, ackedAt, trace.completedAt];
    expect([...times].sort((a, b) => a - b)).toEqual(times);
    expect(trace.completedAt).toBeLessThan(Date.now() + 1);
    const metrics = (await get('/metrics')).text;
    expect(metrics).toMatch(/vsxds_change_seconds_count\{stage="total",type=""\} [1-9]/);
    expect(metrics).toMatch(/vsxds_change_seconds_count\{stage="ack",type="LDS"\} [1-9]/);

    // A poller passes the `now` of its last answer as `since`: what closed before it is not sent again.
    const all = JSON.parse((await get('/debug/changes')).text);
    expect(all.changes.some((c: any) => c.key === 'default/call-1')).toBe(true);
    const later = JSON.parse((await get(`/debug/changes?since=${all.now}`)).text);
    expect(later.changes.some((c: any) => c.key === 'default/call-1')).toBe(false);
    const earlier = JSON.parse((await get(`/debug/changes?since=${trace.completedAt - 1}`)).text);
    expect(earlier.changes.some((c: any) => c.key === 'default/call-1')).toBe(true);
    expect((await get('/debug/changes?since=yesterday')).status).toBe(400);
  });
});
