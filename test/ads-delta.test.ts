import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../src/xds/index.js';
import { nodeFor, RawAdsStream, type Response } from './support/ads-client.js';
import { startAds, type AdsHarness } from './support/ads-harness.js';
import { endpoints, simplePipeline, snapshotInput, type Pipeline } from './support/resources.js';

const GROUP = 'media/app=worker';
const NODE = nodeFor('media', { app: 'worker' }, 'media/worker-1');
const names = (r: Response): string[] => r.resources.map((x) => x.name);
const addresses = (r: Response): string[] =>
  r.resources.flatMap((cla) => cla.value.endpoints[0].lb_endpoints.map((e: any) => e.endpoint.address.socket_address.address));

function merge(...ps: Required<Pipeline>[]): Required<Pipeline> {
  return { listeners: ps.flatMap((p) => p.listeners), clusters: ps.flatMap((p) => p.clusters), endpoints: ps.flatMap((p) => p.endpoints) };
}

describe('incremental (delta) ADS', () => {
  let ads: AdsHarness;
  const streams: RawAdsStream[] = [];
  const open = (): RawAdsStream => {
    const s = new RawAdsStream(ads.address, 'delta');
    streams.push(s);
    return s;
  };

  const connectAndSync = (s: RawAdsStream, edsNames: string[], initial: Record<string, Record<string, string>> = {}) =>
    s.syncLikeEnvoy(NODE, { edsNames, initial });

  beforeEach(async () => {
    ads = await startAds();
  });
  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await ads.stop();
  });

  it('sends each resource with its version, in CDS, EDS, LDS order', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const s = open();
    const { cds, eds, lds } = await connectAndSync(s, ['rtp']);
    expect([cds.type_url, eds.type_url, lds.type_url]).toEqual([CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE]);
    expect(names(cds)).toEqual(['rtp']);
    expect(addresses(eds)).toEqual(['10.0.0.1']);
    expect(names(lds)).toEqual(['rtp-listener']);
    const snap = ads.cache.getSnapshot(GROUP);
    expect(cds.resources[0]?.version).toBe(snap?.resources(CLUSTER_TYPE).get('rtp')?.version);
    expect(cds.system_version_info).toBe(snap?.resources(CLUSTER_TYPE).version);
    const proxy = ads.server.status.list(GROUP)[0];
    await s.until(() => proxy?.types.get(LISTENER_TYPE)?.acked === lds.system_version_info, 2000, 'LDS ACK');
  });

  it('sends only what changed, and names what was removed', async () => {
    const a = simplePipeline('a', 2000, ['10.0.0.1']);
    const b = simplePipeline('b', 2002, ['10.0.0.2']);
    ads.cache.setSnapshot(GROUP, snapshotInput(merge(a, b)));
    const s = open();
    await connectAndSync(s, ['a', 'b']);

    // Only b's endpoints change: one EDS response with only b.
    ads.cache.setSnapshot(GROUP, snapshotInput(merge(a, { ...b, endpoints: [endpoints('b', ['10.0.0.3'])] })));
    const eds = await s.next();
    expect(eds.type_url).toBe(ENDPOINT_TYPE);
    expect(names(eds)).toEqual(['b']);
    expect(addresses(eds)).toEqual(['10.0.0.3']);
    expect(eds.removed_resources).toEqual([]);
    s.ack(eds);

    // b goes away: its listener first, then its cluster, then its endpoints.
    ads.cache.setSnapshot(GROUP, snapshotInput(a));
    const lds = await s.next();
    expect([lds.type_url, lds.resources, lds.removed_resources]).toEqual([LISTENER_TYPE, [], ['b-listener']]);
    s.ack(lds);
    const cds = await s.next();
    expect([cds.type_url, cds.resources, cds.removed_resources]).toEqual([CLUSTER_TYPE, [], ['b']]);
    s.send({ type_url: ENDPOINT_TYPE, resource_names_unsubscribe: ['b'] });
    s.ack(cds);
    // b's endpoints were unsubscribed: nothing more to say about them. The next response is a new change.
    ads.cache.setSnapshot(GROUP, snapshotInput({ ...a, endpoints: [endpoints('a', ['10.0.0.9'])] }));
    const next = await s.next();
    expect([next.type_url, names(next), next.removed_resources]).toEqual([ENDPOINT_TYPE, ['a'], []]);
  });

  it('trusts initial_resource_versions on reconnect: unchanged resources are not sent again', async () => {
    const a = simplePipeline('a', 2000, ['10.0.0.1']);
    const b = simplePipeline('b', 2002, ['10.0.0.2']);
    ads.cache.setSnapshot(GROUP, snapshotInput(merge(a, b)));
    const first = open();
    const synced = await connectAndSync(first, ['a', 'b']);
    first.close();
    const versions = (r: Response) => Object.fromEntries(r.resources.map((x) => [x.name, x.version as string]));

    // While the proxy was away, b's endpoints changed and a listener went away.
    ads.cache.setSnapshot(GROUP, snapshotInput(merge(a, { ...b, listeners: [], endpoints: [endpoints('b', ['10.0.0.8'])] })));
    const again = open();
    again.send({ node: NODE, type_url: CLUSTER_TYPE, initial_resource_versions: versions(synced.cds) });
    again.send({ type_url: ENDPOINT_TYPE, resource_names_subscribe: ['a', 'b'], initial_resource_versions: versions(synced.eds) });
    again.send({ type_url: LISTENER_TYPE, initial_resource_versions: versions(synced.lds) });
    // Clusters are unchanged: the subscription is answered, with nothing in it.
    const cds = await again.next();
    expect([cds.type_url, cds.resources, cds.removed_resources]).toEqual([CLUSTER_TYPE, [], []]);
    again.ack(cds);
    const eds = await again.next();
    expect([eds.type_url, names(eds)]).toEqual([ENDPOINT_TYPE, ['b']]);
    again.ack(eds);
    const lds = await again.next();
    expect([lds.type_url, lds.resources, lds.removed_resources]).toEqual([LISTENER_TYPE, [], ['b-listener']]);
    again.ack(lds);
    // Clusters were unchanged: never sent on this stream. The next response is the next change.
    ads.cache.setSnapshot(GROUP, snapshotInput(merge(a, { ...b, listeners: [], endpoints: [endpoints('b', ['10.0.0.9'])] })));
    const eds2 = await again.next();
    expect([eds2.type_url, addresses(eds2)]).toEqual([ENDPOINT_TYPE, ['10.0.0.9']]);
    expect(again.responses.filter((r) => r.type_url === CLUSTER_TYPE).flatMap((r) => r.resources)).toEqual([]);
  });

  it('answers a reconnecting proxy that is up to date, so one that reconnected mid-startup finishes initializing, and shows the version it holds', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('a', 2000, ['10.0.0.1'])));
    const first = open();
    const synced = await connectAndSync(first, ['a']);
    first.close();
    const again = open();
    again.send({ node: NODE, type_url: CLUSTER_TYPE, initial_resource_versions: { a: synced.cds.resources[0]?.version } });
    const cds = await again.next();
    expect([cds.type_url, cds.resources, cds.removed_resources, cds.system_version_info]).toEqual([CLUSTER_TYPE, [], [], synced.cds.system_version_info]);
    const proxy = ads.server.status.list(GROUP)[0];
    expect(proxy?.types.get(CLUSTER_TYPE)?.acked).toBe(synced.cds.system_version_info);
    again.ack(cds);
    await again.until(() => proxy?.types.get(CLUSTER_TYPE)?.acked === synced.cds.system_version_info && proxy?.types.get(CLUSTER_TYPE)?.responses === 1, 2000, 'ACK');
  });

  it('answers the first wildcard request even when there is nothing, so the proxy can finish starting', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput({}));
    const s = open();
    s.send({ node: NODE, type_url: CLUSTER_TYPE });
    const cds = await s.next();
    expect([cds.type_url, cds.resources, cds.removed_resources]).toEqual([CLUSTER_TYPE, [], []]);
  });

  it('tells a proxy that a named resource does not exist, once', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const s = open();
    s.send({ node: NODE, type_url: ENDPOINT_TYPE, resource_names_subscribe: ['rtp', 'ghost'] });
    const eds = await s.next();
    expect([names(eds), eds.removed_resources]).toEqual([['rtp'], ['ghost']]);
    s.ack(eds);
    // When it appears, it is sent.
    ads.cache.setSnapshot(GROUP, snapshotInput({ ...simplePipeline('rtp', 2000, ['10.0.0.1']), endpoints: [endpoints('rtp', ['10.0.0.1']), endpoints('ghost', ['10.6.6.6'])] }));
    const appeared = await s.next();
    expect([names(appeared), appeared.removed_resources]).toEqual([['ghost'], []]);
  });

  it('records a NACK and does not offer the rejected versions again', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const s = open();
    await connectAndSync(s, ['rtp']);
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.66'])));
    const bad = await s.next();
    s.nack(bad, 'endpoint 10.0.0.66 is cursed');
    await s.until(() => ads.server.status.groupNacks(GROUP).length === 1, 2000, 'NACK recorded');
    expect(ads.server.status.groupNacks(GROUP)[0]).toMatchObject({ typeUrl: ENDPOINT_TYPE, version: bad.system_version_info, message: 'endpoint 10.0.0.66 is cursed' });
    // Re-setting the same snapshot offers nothing; a real change is the next response.
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.66'])));
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.2'])));
    const fixed = await s.next();
    expect(addresses(fixed)).toEqual(['10.0.0.2']);
    expect(s.responses).toHaveLength(5);
  });

  it('applies subscription changes carried by a request with a stale nonce', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput({ ...simplePipeline('rtp', 2000, ['10.0.0.1']), endpoints: [endpoints('rtp', ['10.0.0.1']), endpoints('rtcp', ['10.0.0.1'])] }));
    const s = open();
    s.send({ node: NODE, type_url: ENDPOINT_TYPE, resource_names_subscribe: ['rtp'] });
    const first = await s.next();
    s.ack(first);
    ads.cache.setSnapshot(GROUP, snapshotInput({ ...simplePipeline('rtp', 2000, ['10.0.0.2']), endpoints: [endpoints('rtp', ['10.0.0.2']), endpoints('rtcp', ['10.0.0.1'])] }));
    const second = await s.next();
    // Answer the old nonce while subscribing to rtcp: the ACK part is stale, the subscription is not.
    s.send({ type_url: ENDPOINT_TYPE, response_nonce: first.nonce, resource_names_subscribe: ['rtcp'] });
    s.ack(second);
    const third = await s.next();
    expect(names(third)).toEqual(['rtcp']);
  });

  it('sends everything again to a proxy that unsubscribes the wildcard and subscribes it again', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(merge(simplePipeline('a', 2000, ['10.0.0.1']), simplePipeline('b', 2002, ['10.0.0.2']))));
    const s = open();
    s.send({ node: NODE, type_url: CLUSTER_TYPE });
    const all = await s.next();
    expect(names(all)).toEqual(['a', 'b']);
    s.ack(all);
    s.send({ type_url: CLUSTER_TYPE, resource_names_unsubscribe: ['*'] });
    s.send({ type_url: CLUSTER_TYPE, resource_names_subscribe: ['*'] });
    const again = await s.next();
    expect([again.type_url, names(again), again.removed_resources]).toEqual([CLUSTER_TYPE, ['a', 'b'], []]);
  });
});
