import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../src/xds/index.js';
import { nodeFor, RawAdsStream, type Response } from './support/ads-client.js';
import { startAds, type AdsHarness } from './support/ads-harness.js';
import { edsCluster, endpoints, simplePipeline, snapshotInput, udpListener } from './support/resources.js';

const GROUP = 'media/app=worker';
const NODE = nodeFor('media', { app: 'worker' }, 'media/worker-1');
const names = (r: Response): string[] => r.resources.map((x) => x.name);
const addresses = (r: Response): string[] =>
  r.resources.flatMap((cla) => cla.value.endpoints[0].lb_endpoints.map((e: any) => e.endpoint.address.socket_address.address));

describe('state-of-the-world ADS', () => {
  let ads: AdsHarness;
  const streams: RawAdsStream[] = [];
  const open = (): RawAdsStream => {
    const s = new RawAdsStream(ads.address, 'sotw');
    streams.push(s);
    return s;
  };

  const connectAndSync = (s: RawAdsStream, node = NODE, edsNames = ['rtp']) => s.syncLikeEnvoy(node, { edsNames });

  beforeEach(async () => {
    ads = await startAds();
  });
  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await ads.stop();
  });

  it('serves clusters, then endpoints, then listeners, and records ACKs', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const s = open();
    const { cds, eds, lds } = await connectAndSync(s);
    expect([cds.type_url, eds.type_url, lds.type_url]).toEqual([CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE]);
    expect(names(cds)).toEqual(['rtp']);
    expect(addresses(eds)).toEqual(['10.0.0.1']);
    expect(names(lds)).toEqual(['rtp-listener']);
    expect(new Set([cds.nonce, eds.nonce, lds.nonce]).size).toBe(3);
    const proxy = ads.server.status.list(GROUP)[0];
    await s.until(() => proxy?.types.get(LISTENER_TYPE)?.acked === lds.version_info, 2000, 'LDS ack recorded');
    expect(proxy?.types.get(CLUSTER_TYPE)?.acked).toBe(cds.version_info);
    expect(proxy?.types.get(ENDPOINT_TYPE)?.acked).toBe(eds.version_info);
  });

  it('sends full state for listeners and clusters: a removed resource is absent from the next response', async () => {
    const a = simplePipeline('a', 2000, ['10.0.0.1']);
    const b = simplePipeline('b', 2002, ['10.0.0.2']);
    const both = { listeners: [...a.listeners, ...b.listeners], clusters: [...a.clusters, ...b.clusters], endpoints: [...a.endpoints, ...b.endpoints] };
    ads.cache.setSnapshot(GROUP, snapshotInput(both));
    const s = open();
    const { cds, lds } = await connectAndSync(s, NODE, ['a', 'b']);
    expect(names(cds)).toEqual(['a', 'b']);
    expect(names(lds)).toEqual(['a-listener', 'b-listener']);

    // Listener b, its cluster and endpoints go away: break in reverse of make, the listener first
    // (while it exists its cluster and endpoints stay), then the cluster, then its endpoints.
    ads.cache.setSnapshot(GROUP, snapshotInput(a));
    const lds2 = await s.next();
    expect(lds2.type_url).toBe(LISTENER_TYPE);
    expect(names(lds2)).toEqual(['a-listener']);
    s.ack(lds2);
    const cds2 = await s.next();
    expect(cds2.type_url).toBe(CLUSTER_TYPE);
    expect(names(cds2)).toEqual(['a']);
    s.ack(cds2);
    const eds2 = await s.next();
    expect(eds2.type_url).toBe(ENDPOINT_TYPE);
    expect(names(eds2)).toEqual(['a']);
  });

  it('orders a change across types as CDS, then EDS, then LDS, waiting for each ACK', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const s = open();
    await connectAndSync(s);
    const more = simplePipeline('rtcp', 2001, ['10.0.0.1']);
    const base = simplePipeline('rtp', 2000, ['10.0.0.1']);
    ads.cache.setSnapshot(
      GROUP,
      snapshotInput({ listeners: [...base.listeners, ...more.listeners], clusters: [...base.clusters, ...more.clusters], endpoints: [...base.endpoints, ...more.endpoints] }),
    );
    const cds = await s.next();
    expect(cds.type_url).toBe(CLUSTER_TYPE);
    expect(names(cds)).toEqual(['rtcp', 'rtp']);
    // Like Envoy: subscribe to the new cluster's endpoints, then ACK the clusters.
    s.send({ type_url: ENDPOINT_TYPE, resource_names: ['rtp', 'rtcp'], version_info: s.responses[1]?.version_info, response_nonce: s.responses[1]?.nonce });
    s.ack(cds);
    const eds = await s.next();
    expect(eds.type_url).toBe(ENDPOINT_TYPE);
    expect(names(eds)).toEqual(['rtcp', 'rtp']);
    s.ack(eds, { resource_names: ['rtp', 'rtcp'] });
    const lds = await s.next();
    expect(lds.type_url).toBe(LISTENER_TYPE);
    expect(names(lds)).toEqual(['rtcp-listener', 'rtp-listener']);
  });

  it('ignores stale-nonce requests', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const s = open();
    const { eds } = await connectAndSync(s);
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.2'])));
    const eds2 = await s.next();
    expect(addresses(eds2)).toEqual(['10.0.0.2']);
    // A NACK that answers the superseded response is stale: no NACK is recorded, nothing changes.
    s.nack(eds, 'stale complaint', eds.version_info, { resource_names: ['rtp', 'other'] });
    s.ack(eds2, { resource_names: ['rtp'] });
    const proxy = ads.server.status.list(GROUP)[0];
    await s.until(() => proxy?.types.get(ENDPOINT_TYPE)?.acked === eds2.version_info, 2000, 'ACK of eds2');
    expect(ads.server.status.groupNacks(GROUP)).toEqual([]);
    expect(proxy?.types.get(ENDPOINT_TYPE)?.nack).toBeUndefined();
    // The stale request's subscription change (adding "other") was not applied either: the next
    // EDS response, for a real change, still holds only "rtp".
    ads.cache.setSnapshot(GROUP, snapshotInput({ ...simplePipeline('rtp', 2000, ['10.0.0.3']), endpoints: [endpoints('rtp', ['10.0.0.3']), endpoints('other', ['10.9.9.9'])] }));
    const eds3 = await s.next();
    expect(names(eds3)).toEqual(['rtp']);
  });

  it('takes node from the first request only', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    ads.cache.setSnapshot('media/app=other', snapshotInput(simplePipeline('other', 3000, ['10.0.0.9'])));
    const s = open();
    s.send({ node: NODE, type_url: CLUSTER_TYPE });
    const cds = await s.next();
    s.send({ node: nodeFor('media', { app: 'other' }, 'media/imposter'), type_url: LISTENER_TYPE });
    s.ack(cds);
    const lds = await s.next();
    expect(names(lds)).toEqual(['rtp-listener']);
    expect(ads.server.status.list(GROUP).map((p) => p.nodeId)).toEqual(['media/worker-1']);
  });

  it('does not re-send an unchanged config to a proxy that reconnects with the version it holds', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const first = open();
    const synced = await connectAndSync(first);
    first.close();

    const again = open();
    again.send({ node: NODE, type_url: CLUSTER_TYPE, version_info: synced.cds.version_info });
    again.send({ type_url: ENDPOINT_TYPE, resource_names: ['rtp'], version_info: synced.eds.version_info });
    again.send({ type_url: LISTENER_TYPE, version_info: synced.lds.version_info });
    // A real change afterwards is the first thing this stream receives: nothing was re-sent before it.
    await again.until(() => ads.server.status.list(GROUP).length === 1 && ads.server.status.list(GROUP)[0]?.types.size === 3, 2000, 'subscriptions');
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.5'])));
    const r = await again.next();
    expect(r.type_url).toBe(ENDPOINT_TYPE);
    expect(addresses(r)).toEqual(['10.0.0.5']);
    expect(again.responses).toHaveLength(1);
  });

  it('keeps two node groups apart', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    ads.cache.setSnapshot('media/app=ingress', snapshotInput(simplePipeline('in', 2000, ['10.0.1.1'])));
    const worker = open();
    const ingress = open();
    await connectAndSync(worker);
    const ing = await connectAndSync(ingress, nodeFor('media', { app: 'ingress' }, 'media/ingress-1'), ['in']);
    expect(names(ing.lds)).toEqual(['in-listener']);

    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.7'])));
    const w = await worker.next();
    expect(addresses(w)).toEqual(['10.0.0.7']);
    // The ingress group's next response is its own next change, not the worker's.
    ads.cache.setSnapshot('media/app=ingress', snapshotInput(simplePipeline('in', 2000, ['10.0.1.2'])));
    const i = await ingress.next();
    expect(addresses(i)).toEqual(['10.0.1.2']);
    expect(ingress.responses).toHaveLength(4);
  });

  it('pushes one update to 100 concurrent streams of one group, with identical bytes but for the nonce', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const many = Array.from({ length: 100 }, () => open());
    await Promise.all(many.map((s, i) => connectAndSync(s, nodeFor('media', { app: 'worker' }, `media/worker-${i}`))));
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1', '10.0.0.2'])));
    const updates = await Promise.all(many.map((s) => s.next()));
    for (const u of updates) {
      expect(u.type_url).toBe(ENDPOINT_TYPE);
      expect(addresses(u)).toEqual(['10.0.0.1', '10.0.0.2']);
    }
    expect(new Set(updates.map((u) => u.version_info)).size).toBe(1);
    const withoutNonce = (u: Response): string => u.raw.subarray(0, u.raw.length - (u.nonce.length + 2)).toString('hex');
    expect(new Set(updates.map(withoutNonce)).size).toBe(1);
    many.forEach((s, i) => s.ack(updates[i] as Response, { resource_names: ['rtp'] }));
    await many[0]?.until(() => ads.server.status.list(GROUP).every((p) => p.types.get(ENDPOINT_TYPE)?.acked === updates[0]?.version_info), 5000, 'all ACKs');
  });

  it('holds responses until the cache is ready, keeping the stream open', async () => {
    await ads.stop();
    ads = await startAds({ ready: false });
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const s = open();
    s.send({ node: NODE, type_url: CLUSTER_TYPE });
    await s.until(() => ads.server.status.list(GROUP).length === 1, 2000, 'stream registered');
    expect(s.responses).toEqual([]);
    expect(s.ended).toBeUndefined();
    ads.cache.markReady();
    const cds = await s.next();
    expect(names(cds)).toEqual(['rtp']);
  });

  it('after a NACK, keeps the rejected version recorded and does not send it again', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const s = open();
    const { cds } = await connectAndSync(s);
    ads.cache.setSnapshot(GROUP, snapshotInput({ ...simplePipeline('rtp', 2000, ['10.0.0.1']), clusters: [edsCluster('rtp', 'MAGLEV')] }));
    const bad = await s.next();
    expect(bad.type_url).toBe(CLUSTER_TYPE);
    s.nack(bad, 'maglev not supported here', cds.version_info);
    // The NACK answers the response; the same request again (Envoy re-sends on reconnect timers) changes nothing.
    await s.until(() => ads.server.status.groupNacks(GROUP).length === 1, 2000, 'NACK recorded');
    expect(ads.server.status.groupNacks(GROUP)[0]).toMatchObject({ typeUrl: CLUSTER_TYPE, version: bad.version_info, message: 'maglev not supported here' });
    ads.cache.setSnapshot(GROUP, snapshotInput({ ...simplePipeline('rtp', 2000, ['10.0.0.1']), clusters: [edsCluster('rtp', 'MAGLEV')] }));
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.4'])));
    const next = await s.next();
    // The next thing sent is the new configuration (clusters back to the accepted version), not the rejected one.
    expect(next.type_url).toBe(CLUSTER_TYPE);
    expect(next.version_info).toBe(cds.version_info);
    expect(ads.server.status.list(GROUP)[0]?.types.get(CLUSTER_TYPE)?.responses).toBe(3);
  });

  it('holds back later responses for a proxy that never ACKs, and sends it only the latest once it does', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const lazy = open();
    const good = open();
    await connectAndSync(good, nodeFor('media', { app: 'worker' }, 'media/good'));
    lazy.send({ node: NODE, type_url: CLUSTER_TYPE });
    lazy.send({ type_url: ENDPOINT_TYPE, resource_names: ['rtp'] });
    const cds = await lazy.next();
    // Endpoints do not wait for the clusters' ACK: Envoy ACKs new clusters only once they have them.
    const eds = await lazy.next();
    expect(addresses(eds)).toEqual(['10.0.0.1']);
    for (let i = 2; i <= 6; i++) {
      ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, [`10.0.0.${i}`])));
      const u = await good.next();
      expect(addresses(u)).toEqual([`10.0.0.${i}`]);
      good.ack(u, { resource_names: ['rtp'] });
    }
    expect(lazy.responses).toHaveLength(2);
    lazy.ack(cds);
    lazy.ack(eds, { resource_names: ['rtp'] });
    const latest = await lazy.next();
    expect(addresses(latest)).toEqual(['10.0.0.6']);
  });

  it('answers subscriptions to resources that do not exist with what does exist', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const s = open();
    s.send({ node: NODE, type_url: ENDPOINT_TYPE, resource_names: ['nope', 'rtp'] });
    const eds = await s.next();
    expect(names(eds)).toEqual(['rtp']);
    s.ack(eds, { resource_names: ['nope'] });
    const empty = await s.next();
    expect(empty.resources).toEqual([]);
  });

  it('takes an empty resource_names as unsubscribing once the client has named resources, not as the wildcard', async () => {
    const a = simplePipeline('a', 2000, ['10.0.0.1']);
    const b = simplePipeline('b', 2002, ['10.0.0.2']);
    ads.cache.setSnapshot(GROUP, snapshotInput({ listeners: [...a.listeners, ...b.listeners], clusters: [...a.clusters, ...b.clusters], endpoints: [...a.endpoints, ...b.endpoints] }));
    const s = open();
    s.send({ node: NODE, type_url: CLUSTER_TYPE, resource_names: ['a'] });
    const named = await s.next();
    expect(names(named)).toEqual(['a']);
    s.ack(named, { resource_names: [] });
    const none = await s.next();
    expect([none.type_url, names(none)]).toEqual([CLUSTER_TYPE, []]);
  });
});

describe('ADS with bad clients', () => {
  let ads: AdsHarness;
  const streams: RawAdsStream[] = [];
  const open = (mode: 'sotw' | 'delta' = 'sotw'): RawAdsStream => {
    const s = new RawAdsStream(ads.address, mode);
    streams.push(s);
    return s;
  };
  beforeEach(async () => {
    ads = await startAds();
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
  });
  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await ads.stop();
  });

  it.each(['sotw', 'delta'] as const)('%s: ends a stream whose first request has no node, with a status that says so', async (mode) => {
    const s = open(mode);
    s.send({ type_url: CLUSTER_TYPE });
    const end = await s.end();
    expect(end.code).toBe(3);
    expect(end.details).toContain('must carry node');
  });

  it.each(['sotw', 'delta'] as const)('%s: ends a stream that sends bytes that are not a request, and other streams carry on', async (mode) => {
    const bystander = open('sotw');
    bystander.send({ node: NODE, type_url: CLUSTER_TYPE });
    await bystander.next();
    const s = open(mode);
    // A length-delimited field that claims 5 bytes and has 1: resource_names (SotW) or node (delta).
    s.sendRaw(Buffer.from(mode === 'sotw' ? [0x12, 0x05, 0x61] : [0x0a, 0x05, 0x61]));
    const end = await s.end();
    expect(end.code).toBe(3);
    expect(end.details).toMatch(/malformed (Delta)?DiscoveryRequest/);
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp2', 2000, ['10.0.0.1'])));
    bystander.ack(bystander.responses[0] as Response);
    const next = await bystander.next();
    expect(names(next)).toEqual(['rtp2']);
  });

  it('ends a stream that omits type_url', async () => {
    const s = open();
    s.send({ node: NODE });
    const end = await s.end();
    expect(end.code).toBe(3);
    expect(end.details).toContain('type_url');
  });

  it('ignores an unknown type URL and keeps serving the others on the same stream', async () => {
    const s = open();
    s.send({ node: NODE, type_url: 'type.googleapis.com/no.such.Type', resource_names: ['x'] });
    s.send({ type_url: CLUSTER_TYPE });
    const cds = await s.next();
    expect(cds.type_url).toBe(CLUSTER_TYPE);
    expect(s.ended).toBeUndefined();
  });

  it('ends the stream of a node with an invalid identity, naming what is wrong', async () => {
    const s = open();
    s.send({ node: { id: 'media/worker', metadata: { fields: { namespace: { stringValue: 'Not_A_Namespace' } } } }, type_url: CLUSTER_TYPE });
    const end = await s.end();
    expect(end.code).toBe(3);
    expect(end.details).toContain('node.metadata.namespace');
  });

  it('ends the stream of a node that names a pod when there is no pod source', async () => {
    const s = open();
    s.send({ node: { id: 'media/worker-7' }, type_url: CLUSTER_TYPE });
    const end = await s.end();
    expect(end.code).toBe(3);
    expect(end.details).toContain('no pod source');
  });
});

export { udpListener };
