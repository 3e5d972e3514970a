import { credentials, ServerCredentials } from '@grpc/grpc-js';
import pino from 'pino';
import { Subject } from 'rxjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { adsCredentials, AdsServer, type AdsLimits } from '../src/xds/ads-server.js';
import type { NodeAuthMode } from '../src/xds/node-auth.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, SnapshotCache, type PodIdentity, type PodLookup } from '../src/xds/index.js';
import { nodeFor, RawAdsStream } from './support/ads-client.js';
import { TestCa, type Issued } from './support/certs.js';
import { simplePipeline, snapshotInput } from './support/resources.js';

const PODS: PodIdentity[] = [
  { namespace: 'media', name: 'ingress-1', labels: { app: 'ingress' }, ip: '127.0.0.1' },
  { namespace: 'media', name: 'worker-1', labels: { app: 'worker' }, ip: '10.9.9.9' },
];
const lookup: PodLookup = {
  byName: (ns, name) => PODS.find((p) => p.namespace === ns && p.name === name),
  byUid: () => undefined,
  changes$: new Subject<void>(),
};

describe('ADS security and limits', () => {
  let ca: TestCa;
  let serverCert: Issued;
  let ingressCert: Issued;
  let server: AdsServer | undefined;
  const streams: RawAdsStream[] = [];

  beforeAll(() => {
    ca = new TestCa();
    serverCert = ca.issue('server', { san: ['IP:127.0.0.1', 'DNS:localhost'] });
    ingressCert = ca.issue('ingress', { client: true, san: ['URI:spiffe://cluster.local/ns/media/pod/ingress-1'] });
  });
  afterEach(() => {
    for (const s of streams.splice(0)) s.close();
    server?.forceClose();
  });

  async function start(opts: { tls?: 'tls' | 'mtls'; nodeAuth?: NodeAuthMode; limits?: Partial<AdsLimits> } = {}): Promise<string> {
    const cache = new SnapshotCache();
    cache.setSnapshot('media/app=ingress', snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
    cache.setSnapshot('media/app=worker', snapshotInput(simplePipeline('app', 2001, ['127.0.0.1'])));
    cache.markReady();
    server = new AdsServer({ cache, podLookup: lookup, nodeAuth: opts.nodeAuth, limits: opts.limits, logger: pino({ level: 'silent' }) });
    const creds = opts.tls
      ? adsCredentials({ cert: serverCert.cert, key: serverCert.key, clientCa: opts.tls === 'mtls' ? ca.cert : undefined })
      : ServerCredentials.createInsecure();
    const port = await server.listen('127.0.0.1:0', creds);
    return `127.0.0.1:${port}`;
  }

  const open = (address: string, creds = credentials.createInsecure(), mode: 'sotw' | 'delta' = 'sotw') => {
    const s = new RawAdsStream(address, mode, creds);
    streams.push(s);
    return s;
  };
  const tlsClient = (cert?: Issued) => credentials.createSsl(ca.cert, cert?.key ?? null, cert?.cert ?? null);

  it('serves over TLS, and a plaintext client cannot connect', async () => {
    const address = await start({ tls: 'tls' });
    const ok = open(address, tlsClient());
    ok.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE });
    expect((await ok.next()).resources.map((r) => r.name)).toEqual(['rtp']);
    const plain = open(address);
    plain.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE });
    expect((await plain.end(10_000)).code).toBe(14); // UNAVAILABLE
  });

  it('with mutual TLS, refuses a client without a certificate from the CA', async () => {
    const address = await start({ tls: 'mtls' });
    const ok = open(address, tlsClient(ingressCert));
    ok.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE });
    expect((await ok.next()).resources.map((r) => r.name)).toEqual(['rtp']);
    const anonymous = open(address, tlsClient());
    anonymous.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE });
    expect((await anonymous.end(10_000)).code).toBe(14);
    const otherCa = new TestCa('someone else');
    const stranger = otherCa.issue('stranger', { client: true, san: ['URI:spiffe://cluster.local/ns/media/pod/ingress-1'] });
    const impostor = open(address, tlsClient(stranger));
    impostor.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE });
    expect((await impostor.end(10_000)).code).toBe(14);
  });

  it('node authentication by client certificate: a proxy gets only the configuration of the pod its certificate names', async () => {
    const address = await start({ tls: 'mtls', nodeAuth: 'client-cert' });
    const honest = open(address, tlsClient(ingressCert));
    honest.send({ node: { id: 'media/ingress-1' }, type_url: CLUSTER_TYPE });
    expect((await honest.next()).resources.map((r) => r.name)).toEqual(['rtp']);

    const liar = open(address, tlsClient(ingressCert));
    liar.send({ node: { id: 'media/worker-1' }, type_url: CLUSTER_TYPE });
    const end = await liar.end();
    expect(end.code).toBe(7); // PERMISSION_DENIED
    expect(end.details).toBe('the client certificate names media/ingress-1, not pod media/worker-1');

    const byMetadata = open(address, tlsClient(ingressCert));
    byMetadata.send({ node: nodeFor('media', { app: 'worker' }), type_url: CLUSTER_TYPE });
    expect((await byMetadata.end()).details).toContain('identify with node.id');
  });

  it('node authentication by peer address: the stream must come from the pod IP', async () => {
    const address = await start({ nodeAuth: 'peer-ip' });
    const fromIngress = open(address);
    fromIngress.send({ node: { id: 'media/ingress-1' }, type_url: CLUSTER_TYPE });
    expect((await fromIngress.next()).resources.map((r) => r.name)).toEqual(['rtp']);
    const notFromWorker = open(address);
    notFromWorker.send({ node: { id: 'media/worker-1' }, type_url: CLUSTER_TYPE });
    const end = await notFromWorker.end();
    expect(end.code).toBe(7);
    expect(end.details).toBe('the stream comes from 127.0.0.1, not from pod media/worker-1 (10.9.9.9)');
  });

  it('refuses streams beyond the concurrent stream limit, naming it, and serves again when one closes', async () => {
    const address = await start({ limits: { maxStreams: 2 } });
    const a = open(address);
    const b = open(address);
    for (const s of [a, b]) s.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE });
    await Promise.all([a.next(), b.next()]);
    const c = open(address);
    c.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE });
    const end = await c.end();
    expect(end.code).toBe(8); // RESOURCE_EXHAUSTED
    expect(end.details).toBe('vsxds serves at most 2 concurrent ADS streams (the stream limit)');
    a.close();
    await c.until(() => server?.streamCount === 1, 5000, 'stream count to drop');
    const d = open(address);
    d.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE });
    expect((await d.next()).resources.map((r) => r.name)).toEqual(['rtp']);
  });

  it('refuses a request larger than the message size limit, naming it', async () => {
    const address = await start({ limits: { maxMessageBytes: 64 * 1024 } });
    const s = open(address);
    s.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE, resource_names: Array.from({ length: 5000 }, (_, i) => `cluster-name-${i}`) });
    const end = await s.end();
    expect(end.code).toBe(8);
    expect(end.details).toMatch(/^the request is \d+ bytes, more than the 65536 bytes vsxds accepts \(--max-message-bytes\)$/);
    expect(server?.status.streamErrors().map((e) => e.code)).toEqual(['RESOURCE_EXHAUSTED']);
  });

  it('ends a stream that floods requests beyond the per-stream rate, naming the limit; others are unaffected', async () => {
    const address = await start({ limits: { maxRequestsPerSecond: 50 } });
    const calm = open(address);
    calm.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE });
    const first = await calm.next();
    const flood = open(address, credentials.createInsecure(), 'delta');
    flood.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE });
    for (let i = 0; i < 500; i++) flood.send({ type_url: CLUSTER_TYPE, resource_names_subscribe: [`x${i}`] });
    const end = await flood.end();
    expect(end.code).toBe(8);
    expect(end.details).toBe('this stream sent more than 50 requests per second (the per-stream limit)');
    calm.ack(first);
    expect(calm.ended).toBeUndefined();
  });

  it('ends a delta stream that subscribes to more names than the subscription limit, naming it', async () => {
    const address = await start({ limits: { maxSubscribedNames: 100 } });
    const s = open(address, credentials.createInsecure(), 'delta');
    s.send({ node: nodeFor('media', { app: 'ingress' }), type_url: CLUSTER_TYPE });
    await s.next();
    for (let i = 0; i < 3; i++) {
      s.send({ type_url: ENDPOINT_TYPE, resource_names_subscribe: Array.from({ length: 40 }, (_, j) => `cla-${i}-${j}`) });
    }
    const end = await s.end();
    expect(end.code).toBe(8);
    expect(end.details).toBe('this stream subscribed to more than 100 resource names (the subscription limit)');
  });
});
