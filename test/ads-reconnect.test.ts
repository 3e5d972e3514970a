/**
 * Make-before-break for a proxy that reconnects (to a restarted vsxds, or to another replica):
 * what it reports running (SotW `version_info`, delta `initial_resource_versions`) counts as
 * running, so the first change that moves a listener to a new cluster keeps the old cluster
 * until the listener has moved.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, messageType } from '../src/xds/index.js';
import { nodeFor, RawAdsStream, type Response } from './support/ads-client.js';
import { startAds, type AdsHarness } from './support/ads-harness.js';
import { edsCluster, endpoints, snapshotInput, udpListener } from './support/resources.js';

const GROUP = 'media/app=ingress';
const UDP_PROXY = messageType('envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig');
const udpProxyCluster = (listener: Record<string, any>): string =>
  String((UDP_PROXY.toObject(UDP_PROXY.decode(listener['listener_filters'][0].typed_config.value)) as { cluster: string }).cluster);
const NODE = nodeFor('media', { app: 'ingress' }, 'media/ingress-1');
const WORKERS = ['10.0.0.1', '10.0.0.2'];
/** The listener on port 2000 sends to `cluster`, an EDS cluster of the workers. */
const movedTo = (cluster: string) =>
  snapshotInput({ listeners: [udpListener('rtp', 2000, cluster)], clusters: [edsCluster(cluster)], endpoints: [endpoints(cluster, WORKERS)] });

/**
 * A proxy's view as Envoy keeps it: the clusters and listeners it runs (what it ACKed), and every
 * response in order with what the proxy ran when it came.
 */
class Proxy {
  readonly clusters = new Set<string>();
  readonly listeners = new Map<string, string>();
  readonly seen: Array<{ response: Response; clusters: string[]; listenerClusters: string[] }> = [];

  constructor(readonly s: RawAdsStream) {}

  /** Takes the next response and ACKs it as Envoy does (a CDS change re-subscribes EDS first). */
  async step(): Promise<Response> {
    const r = await this.s.next().catch((err: Error) => {
      throw new Error(`${err.message}; so far: ${this.story()}`);
    });
    this.seen.push({ response: r, clusters: [...this.clusters].sort(), listenerClusters: [...this.listeners.values()] });
    const delta = this.s.mode === 'delta';
    if (r.type_url === CLUSTER_TYPE) {
      if (!delta) this.clusters.clear();
      for (const c of r.resources) this.clusters.add(c.name);
      for (const name of r.removed_resources) this.clusters.delete(name);
      const names = [...this.clusters].sort();
      this.s.send(delta ? { type_url: ENDPOINT_TYPE, resource_names_subscribe: names } : { type_url: ENDPOINT_TYPE, resource_names: names });
      this.s.ack(r);
    } else if (r.type_url === LISTENER_TYPE) {
      if (!delta) this.listeners.clear();
      for (const l of r.resources) this.listeners.set(l.name, udpProxyCluster(l.value));
      for (const name of r.removed_resources) this.listeners.delete(name);
      this.s.ack(r);
    } else {
      this.s.ack(r, delta ? {} : { resource_names: [...this.clusters].sort() });
    }
    return r;
  }

  /** Steps until the proxy runs no cluster but `cluster` and its listener sends there. */
  async until(cluster: string): Promise<void> {
    for (let i = 0; i < 20; i++) {
      if (this.listeners.get('rtp') === cluster && [...this.clusters].join() === cluster) return;
      await this.step();
    }
    throw new Error(`the proxy never settled on ${cluster}: ${this.story()}`);
  }

  private story(): string {
    const short = (r: Response) => [r.type_url.split('.').pop(), r.resources.map((x) => x.name), r.removed_resources];
    return JSON.stringify(this.seen.map((x) => [...short(x.response), 'ran:', x.clusters, x.listenerClusters]));
  }

  /** No response ever left a listener the proxy runs without its cluster. */
  brokeNothing(): void {
    let clusters = new Set(this.seen[0]?.clusters);
    for (const { response, listenerClusters } of this.seen) {
      if (response.type_url !== CLUSTER_TYPE) continue;
      clusters = this.s.mode === 'delta' ? new Set([...clusters, ...response.resources.map((c) => c.name)]) : new Set(response.resources.map((c) => c.name));
      for (const name of response.removed_resources) clusters.delete(name);
      for (const used of listenerClusters) expect(clusters.has(used), `a CDS response removed ${used} while the listener ran on it`).toBe(true);
    }
  }
}

/** What the proxy reports when it reconnects, from what it ACKed on its first stream. */
function resubscribe(s: RawAdsStream, synced: { cds: Response; eds: Response; lds: Response }): void {
  const versions = (r: Response) => Object.fromEntries(r.resources.map((x) => [x.name, x.version as string]));
  const eds = synced.eds.resources.map((x) => x.name);
  if (s.mode === 'sotw') {
    s.send({ node: NODE, type_url: CLUSTER_TYPE, version_info: synced.cds.version_info });
    s.send({ type_url: ENDPOINT_TYPE, resource_names: eds, version_info: synced.eds.version_info });
    s.send({ type_url: LISTENER_TYPE, version_info: synced.lds.version_info });
  } else {
    s.send({ node: NODE, type_url: CLUSTER_TYPE, initial_resource_versions: versions(synced.cds) });
    s.send({ type_url: ENDPOINT_TYPE, resource_names_subscribe: eds, initial_resource_versions: versions(synced.eds) });
    s.send({ type_url: LISTENER_TYPE, initial_resource_versions: versions(synced.lds) });
  }
}

/**
 * A proxy syncs with one vsxds on workers-a, which goes away; the proxy comes back to a new vsxds
 * serving `served`, reporting what it runs: the proxy as it stands after its resubscription.
 */
async function comeBack(mode: 'sotw' | 'delta', served: string, streams: RawAdsStream[]): Promise<{ ads: AdsHarness; proxy: Proxy }> {
  const open = (ads: AdsHarness) => {
    const s = new RawAdsStream(ads.address, mode);
    streams.push(s);
    return s;
  };
  const before = await startAds();
  before.cache.setSnapshot(GROUP, movedTo('workers-a'));
  const synced = await open(before).syncLikeEnvoy(NODE);
  await before.stop();
  const ads = await startAds();
  ads.cache.setSnapshot(GROUP, movedTo(served));
  const proxy = new Proxy(open(ads));
  for (const c of synced.cds.resources) proxy.clusters.add(c.name);
  proxy.listeners.set('rtp', 'workers-a');
  resubscribe(proxy.s, synced);
  return { ads, proxy };
}

describe.each(['sotw', 'delta'] as const)('%s: a proxy that reconnects', (mode) => {
  let ads: AdsHarness | undefined;
  const streams: RawAdsStream[] = [];
  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await ads?.stop();
  });

  it('to a restarted vsxds keeps the old cluster until the listener moved to the new one', async () => {
    // vsxds restarts with the same configuration.
    const back = await comeBack(mode, 'workers-a', streams);
    ads = back.ads;
    const proxy = back.proxy;
    if (mode === 'delta') for (let i = 0; i < 3; i++) await proxy.step(); // "up to date", once per type
    await proxy.s.until(() => back.ads.server.status.list(GROUP)[0]?.synced === true, 2000, 'the reconnected proxy in step');

    ads.cache.setSnapshot(GROUP, movedTo('workers-b'));
    await proxy.until('workers-b');
    proxy.brokeNothing();
  });

});

describe('delta: a proxy that reconnects', () => {
  let ads: AdsHarness | undefined;
  const streams: RawAdsStream[] = [];
  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await ads?.stop();
  });

  // SotW reports one version per type: one this replica never built says nothing of what the proxy runs.
  it('to a replica that never built what it runs keeps every cluster it runs until its listeners moved', async () => {
    // The other replica has a newer configuration: the listener on workers-b.
    const back = await comeBack('delta', 'workers-b', streams);
    ads = back.ads;
    await back.proxy.until('workers-b');
    back.proxy.brokeNothing();
  });
});

describe.each(['sotw', 'delta'] as const)('%s: a listener moved to a new cluster', (mode) => {
  let ads: AdsHarness | undefined;
  const streams: RawAdsStream[] = [];
  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await ads?.stop();
  });

  it('keeps the old cluster for the removal delay after the move is ACKed, for replies still on their way', async () => {
    ads = await startAds({ limits: { removalDelayMs: 1_000 } });
    ads.cache.setSnapshot(GROUP, movedTo('workers-a'));
    const s = new RawAdsStream(ads.address, mode);
    streams.push(s);
    const synced = await s.syncLikeEnvoy(NODE);
    const proxy = new Proxy(s);
    for (const c of synced.cds.resources) proxy.clusters.add(c.name);
    proxy.listeners.set('rtp', 'workers-a');

    ads.cache.setSnapshot(GROUP, movedTo('workers-b'));
    let moved: Response | undefined;
    while (!moved) {
      const r = await proxy.step();
      if (r.type_url === LISTENER_TYPE) moved = r;
    }
    const registry = ads.server.status.list(GROUP)[0];
    await s.until(() => registry?.types.get(LISTENER_TYPE)?.responses === 2 && registry.types.get(LISTENER_TYPE)?.sentAt === undefined, 2_000, 'the move ACKed');
    // Answered, and the old cluster is still there: nothing was sent since the listener moved.
    expect(s.responses.at(-1)).toBe(moved);
    expect([...proxy.clusters].sort()).toEqual(['workers-a', 'workers-b']);
    await proxy.until('workers-b');
    proxy.brokeNothing();
  });
});
