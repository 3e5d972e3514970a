import { status } from '@grpc/grpc-js';
import { Subject } from 'rxjs';
import { afterEach, describe, expect, it } from 'vitest';
import { CLUSTER_TYPE, type PodIdentity, type PodLookup } from '../src/xds/index.js';
import { RawAdsStream } from './support/ads-client.js';
import { startAds, type AdsHarness } from './support/ads-harness.js';
import { simplePipeline, snapshotInput } from './support/resources.js';

/** The lookup the Kubernetes source will provide, reduced to a map the test fills in. */
class FakePods implements PodLookup {
  private readonly pods: PodIdentity[] = [];
  private readonly subject = new Subject<void>();
  readonly changes$ = this.subject.asObservable();
  add(pod: PodIdentity): void {
    this.pods.push(pod);
    this.subject.next();
  }
  byName(namespace: string, name: string) {
    return this.pods.find((p) => p.namespace === namespace && p.name === name);
  }
  byUid(uid: string) {
    return this.pods.find((p) => p.uid === uid);
  }
}

describe('node identity', () => {
  let ads: AdsHarness;
  const streams: RawAdsStream[] = [];
  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await ads.stop();
  });
  const open = () => {
    const s = new RawAdsStream(ads.address, 'sotw');
    streams.push(s);
    return s;
  };

  it('resolves node.id <namespace>/<pod> and a pod UID to the pod labels, sharing the group', async () => {
    const pods = new FakePods();
    pods.add({ namespace: 'media', name: 'worker-1', uid: 'uid-1', labels: { app: 'worker', tier: 'media' } });
    pods.add({ namespace: 'media', name: 'worker-2', uid: 'uid-2', labels: { tier: 'media', app: 'worker' } });
    ads = await startAds({ podLookup: pods });
    ads.cache.setSnapshot('media/app=worker,tier=media', snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const byName = open();
    const byUid = open();
    byName.send({ node: { id: 'media/worker-1' }, type_url: CLUSTER_TYPE });
    byUid.send({ node: { id: 'uid-2' }, type_url: CLUSTER_TYPE });
    const [a, b] = await Promise.all([byName.next(), byUid.next()]);
    expect(a.resources.map((r) => r.name)).toEqual(['rtp']);
    expect(b.raw.subarray(0, b.raw.length - b.nonce.length - 2)).toEqual(a.raw.subarray(0, a.raw.length - a.nonce.length - 2));
    expect(ads.server.status.list('media/app=worker,tier=media').map((p) => p.nodeId).sort()).toEqual(['media/worker-1', 'uid-2']);
  });

  it('keeps the stream of a proxy whose pod is not known yet, and serves it once the pod appears', async () => {
    const pods = new FakePods();
    ads = await startAds({ podLookup: pods });
    ads.cache.setSnapshot('media/app=worker', snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const s = open();
    s.send({ node: { id: 'media/worker-9' }, type_url: CLUSTER_TYPE });
    await s.until(() => ads.server.status.list().length === 1, 2000, 'proxy registered');
    expect(s.responses).toEqual([]);
    expect(s.ended).toBeUndefined();
    pods.add({ namespace: 'media', name: 'worker-9', labels: { app: 'worker' } });
    const cds = await s.next();
    expect(cds.resources.map((r) => r.name)).toEqual(['rtp']);
  });

  it('prefers node.metadata over node.id', async () => {
    const pods = new FakePods();
    pods.add({ namespace: 'media', name: 'worker-1', labels: { app: 'worker' } });
    ads = await startAds({ podLookup: pods });
    ads.cache.setSnapshot('other/app=gw', snapshotInput(simplePipeline('gw', 2000, ['10.0.0.1'])));
    const s = open();
    s.send({
      node: { id: 'media/worker-1', metadata: { fields: { namespace: { stringValue: 'other' }, labels: { structValue: { fields: { app: { stringValue: 'gw' } } } } } } },
      type_url: CLUSTER_TYPE,
    });
    const cds = await s.next();
    expect(cds.resources.map((r) => r.name)).toEqual(['gw']);
  });

  it('ends the stream of a proxy whose pod does not appear in time, naming the pod and the timeout, and lists it in the stream errors', async () => {
    ads = await startAds({ podLookup: new FakePods(), limits: { identifyTimeoutMs: 300 } });
    const s = open();
    s.send({ node: { id: 'default/no-such-pod' }, type_url: CLUSTER_TYPE });
    const end = await s.end();
    expect(end.code).toBe(status.NOT_FOUND);
    expect(end.details).toBe(
      'node.id names pod default/no-such-pod, which the pod source did not know within 0.3 s (the identification timeout); check node.id, or that the pod exists',
    );
    expect(ads.server.status.streamErrors().map((e) => [e.nodeId, e.code])).toEqual([['default/no-such-pod', 'NOT_FOUND']]);
  });

  it('bounds the requests a stream may send before its pod is known, by count and by bytes; other streams are served', async () => {
    const pods = new FakePods();
    pods.add({ namespace: 'media', name: 'worker-1', labels: { app: 'worker' } });
    ads = await startAds({ podLookup: pods, limits: { maxUnidentifiedBytes: 64 * 1024 } });
    ads.cache.setSnapshot('media/app=worker', snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    const many = open();
    many.send({ node: { id: 'default/no-such-pod' }, type_url: CLUSTER_TYPE });
    for (let i = 0; i < 40; i++) many.send({ type_url: CLUSTER_TYPE, resource_names: [`c${i}`] });
    const manyEnd = await many.end();
    expect(manyEnd.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(manyEnd.details).toBe(
      'this stream sent more than 16 requests before vsxds knew which proxy it is (its pod is not known yet): the limit for an unidentified stream',
    );
    const big = open();
    big.send({ node: { id: 'default/no-such-pod' }, type_url: CLUSTER_TYPE });
    for (let i = 0; i < 8; i++) big.send({ type_url: CLUSTER_TYPE, resource_names: Array.from({ length: 1000 }, (_, j) => `cluster-${i}-${j}`) });
    const bigEnd = await big.end();
    expect(bigEnd.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(bigEnd.details).toBe(
      'this stream sent more than 65536 bytes of requests before vsxds knew which proxy it is (its pod is not known yet): the limit for an unidentified stream',
    );
    expect(ads.server.status.streamErrors().map((e) => e.code)).toEqual(['RESOURCE_EXHAUSTED', 'RESOURCE_EXHAUSTED']);
    const known = open();
    known.send({ node: { id: 'media/worker-1' }, type_url: CLUSTER_TYPE });
    expect((await known.next()).resources.map((r) => r.name)).toEqual(['rtp']);
  });
});
