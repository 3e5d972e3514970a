import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../src/xds/index.js';
import { nodeFor, RawAdsStream } from './support/ads-client.js';
import { startAds, type AdsHarness } from './support/ads-harness.js';
import { endpoints, simplePipeline, snapshotInput } from './support/resources.js';

const GROUP = 'media/app=worker';
const NODE = nodeFor('media', { app: 'worker' }, 'media/worker-1');

describe('state-of-the-world ADS', () => {
  let ads: AdsHarness;
  const streams: RawAdsStream[] = [];
  const open = (): RawAdsStream => {
    const s = new RawAdsStream(ads.address, 'sotw');
    streams.push(s);
    return s;
  };

  beforeEach(async () => {
    ads = await startAds();
  });
  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await ads.stop();
  });

  it('serves clusters, then endpoints, then listeners, and accepts ACKs', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const s = open();
    s.send({ node: NODE, type_url: CLUSTER_TYPE });
    s.send({ type_url: LISTENER_TYPE });
    const cds = await s.next();
    expect(cds.type_url).toBe(CLUSTER_TYPE);
    expect(cds.resources.map((r) => r.name)).toEqual(['rtp']);
    s.send({ type_url: ENDPOINT_TYPE, resource_names: ['rtp'] });
    s.ack(cds);
    const eds = await s.next();
    expect(eds.type_url).toBe(ENDPOINT_TYPE);
    expect(eds.resources[0]?.value.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address).toBe('10.0.0.1');
    s.ack(eds, { resource_names: ['rtp'] });
    const lds = await s.next();
    expect(lds.type_url).toBe(LISTENER_TYPE);
    expect(lds.resources.map((r) => r.name)).toEqual(['rtp-listener']);
    s.ack(lds);
    const proxy = ads.server.status.list(GROUP)[0];
    await s.until(() => proxy?.types.get(LISTENER_TYPE)?.acked === lds.version_info, 2000, 'LDS ack recorded');
    expect(proxy?.types.get(CLUSTER_TYPE)?.acked).toBe(cds.version_info);
  });
});
