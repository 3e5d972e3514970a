import { EventEmitter } from 'node:events';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { decodeResponse, type Response } from '../../test/support/ads-client.js';
import { endpoints, simplePipeline, snapshotInput, udpListener, type Pipeline } from '../../test/support/resources.js';
import { DEFAULT_LIMITS, streamLimits } from './ads-server.js';
import { AdsStream } from './ads-stream.js';
import { DeltaStream } from './delta-stream.js';
import type { DeltaRequest, SotwRequest } from './requests.js';
import { SnapshotCache } from './snapshot-cache.js';
import { SotwStream } from './sotw-stream.js';
import { ProxyStatusRegistry } from './status-registry.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from './type-urls.js';

/**
 * Streams on in-memory calls, driven request by request, to see what they compute and send when a
 * snapshot keeps some types' ResourceSets: a type whose set and subscription did not change is
 * skipped (no `retained` walk, no candidate or diff), and everything else still happens.
 */

const GROUP = 'media/app=worker';
const NODE = { id: 'media/worker-1', cluster: 'test', metadata: { namespace: 'media', labels: { app: 'worker' } } };

class MemoryCall extends EventEmitter {
  readonly written: Buffer[] = [];
  getPeer(): string {
    return 'memory';
  }
  write(bytes: Buffer): boolean {
    this.written.push(bytes);
    return true;
  }
  end(): void {}
}

type Mode = 'sotw' | 'delta';

class Proxy {
  readonly call = new MemoryCall();
  private seen = 0;

  constructor(
    readonly mode: Mode,
    ctx: ConstructorParameters<typeof SotwStream>[1],
  ) {
    if (mode === 'sotw') new SotwStream(this.call as never, ctx, 'sotw');
    else new DeltaStream(this.call as never, ctx, 'delta');
  }

  /** Responses written since the last call. */
  take(): Response[] {
    const out = this.call.written.slice(this.seen).map((b) => decodeResponse(b, this.mode));
    this.seen = this.call.written.length;
    return out;
  }

  sotw(req: Partial<SotwRequest> & { typeUrl: string }): void {
    this.call.emit('data', { versionInfo: '', resourceNames: [], responseNonce: '', ...req } satisfies SotwRequest);
  }

  delta(req: Partial<DeltaRequest> & { typeUrl: string }): void {
    this.call.emit('data', { subscribe: [], unsubscribe: [], initialResourceVersions: {}, responseNonce: '', ...req } satisfies DeltaRequest);
  }

  ack(r: Response, names?: string[]): void {
    if (this.mode === 'sotw') this.sotw({ typeUrl: r.type_url, versionInfo: r.version_info ?? '', responseNonce: r.nonce, resourceNames: names ?? [] });
    else this.delta({ typeUrl: r.type_url, responseNonce: r.nonce });
  }

  nack(r: Response, previousVersion: string, names?: string[]): void {
    const errorDetail = { message: 'rejected' };
    if (this.mode === 'sotw') this.sotw({ typeUrl: r.type_url, versionInfo: previousVersion, responseNonce: r.nonce, resourceNames: names ?? [], errorDetail });
    else this.delta({ typeUrl: r.type_url, responseNonce: r.nonce, errorDetail });
  }

  /** CDS and LDS wildcard, EDS for `edsNames`, everything ACKed, as Envoy does. */
  sync(edsNames: string[]): { cds: Response; eds: Response; lds: Response } {
    if (this.mode === 'sotw') {
      this.sotw({ node: NODE, typeUrl: CLUSTER_TYPE });
      this.sotw({ typeUrl: LISTENER_TYPE });
    } else {
      this.delta({ node: NODE, typeUrl: CLUSTER_TYPE });
      this.delta({ typeUrl: LISTENER_TYPE });
    }
    const [cds] = this.take() as [Response];
    if (this.mode === 'sotw') this.sotw({ typeUrl: ENDPOINT_TYPE, resourceNames: edsNames });
    else this.delta({ typeUrl: ENDPOINT_TYPE, subscribe: edsNames });
    this.ack(cds);
    // The listeners reference only clusters the proxy now runs: they go with the endpoints.
    const [eds, lds] = this.take() as [Response, Response];
    this.ack(eds, edsNames);
    this.ack(lds);
    expect([cds, eds, lds].map((r) => r?.type_url)).toEqual([CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE]);
    expect(this.take()).toEqual([]);
    return { cds, eds, lds };
  }
}

const names = (r: Response | undefined): string[] => r?.resources.map((x) => x.name) ?? [];
const addresses = (r: Response | undefined): string[] =>
  r?.resources.flatMap((cla) => cla.value.endpoints[0].lb_endpoints.map((e: any) => e.endpoint.address.socket_address.address)) ?? [];

function merge(...ps: Required<Pipeline>[]): Required<Pipeline> {
  return { listeners: ps.flatMap((p) => p.listeners), clusters: ps.flatMap((p) => p.clusters), endpoints: ps.flatMap((p) => p.endpoints) };
}

describe.each(['sotw', 'delta'] as const)('%s stream against kept ResourceSets', (mode) => {
  let cache: SnapshotCache;
  let status: ProxyStatusRegistry;
  let retained: MockInstance;
  let a: Required<Pipeline>;
  let b: Required<Pipeline>;
  const open = (): Proxy =>
    new Proxy(mode, { cache, status, log: pino({ level: 'silent' }), nodeAuth: 'none', ...streamLimits({ ...DEFAULT_LIMITS, maxRequestsPerSecond: 0 }), onClose: () => {} });
  /** Type URLs the streams computed something for (every candidate or diff walks `retained` first). */
  const computed = (): string[] => retained.mock.calls.map((c) => c[0] as string);
  const withEndpointsOfB = (...ips: string[]) => snapshotInput(merge(a, { ...b, endpoints: [endpoints('b', ips)] }));

  beforeEach(() => {
    cache = new SnapshotCache();
    status = new ProxyStatusRegistry();
    cache.markReady();
    a = simplePipeline('a', 2000, ['10.0.0.1']);
    b = simplePipeline('b', 2002, ['10.0.0.2']);
    cache.setSnapshot(GROUP, snapshotInput(merge(a, b)));
    retained = vi.spyOn(AdsStream.prototype as unknown as { retained: () => unknown }, 'retained');
  });
  afterEach(() => {
    retained.mockRestore();
  });

  it('on an endpoint change, computes and sends EDS only; CDS and LDS are not looked at, and nothing after the ACK', () => {
    const proxies = [open(), open()];
    for (const p of proxies) p.sync(['a', 'b']);
    const before = cache.getSnapshot(GROUP);
    retained.mockClear();

    cache.setSnapshot(GROUP, withEndpointsOfB('10.0.0.3'));
    const after = cache.getSnapshot(GROUP);
    expect(after?.resources(CLUSTER_TYPE)).toBe(before?.resources(CLUSTER_TYPE));
    expect(after?.resources(LISTENER_TYPE)).toBe(before?.resources(LISTENER_TYPE));
    expect(computed()).toEqual([ENDPOINT_TYPE, ENDPOINT_TYPE]);
    const sent = proxies.map((p) => p.take());
    for (const [eds] of sent) {
      expect(eds?.type_url).toBe(ENDPOINT_TYPE);
      expect(names(eds)).toEqual(mode === 'sotw' ? ['a', 'b'] : ['b']);
      expect(addresses(eds)).toContain('10.0.0.3');
    }
    retained.mockClear();
    proxies.forEach((p, i) => p.ack(sent[i]?.[0] as Response, ['a', 'b']));
    expect(computed()).toEqual([]);
    expect(proxies.flatMap((p) => p.take())).toEqual([]);
    expect(status.list(GROUP).every((p) => p.synced && p.types.get(ENDPOINT_TYPE)?.acked !== undefined)).toBe(true);
  });

  it('makes before it breaks per listener: while new clusters are in flight, listeners of clusters the proxy runs still go', () => {
    const p = open();
    p.sync(['a', 'b']);
    // A new call: cluster c and its listener. Envoy has not ACKed c yet.
    const c = simplePipeline('c', 2004, ['10.0.0.3']);
    expect(status.list(GROUP)[0]?.unsyncedSince).toBeUndefined();
    const outOfStep = performance.now();
    cache.setSnapshot(GROUP, snapshotInput(merge(a, b, c)));
    const [cds, eds] = p.take();
    expect(cds?.type_url).toBe(CLUSTER_TYPE);
    expect(names(cds)).toEqual(mode === 'sotw' ? ['a', 'b', 'c'] : ['c']);
    // Another call, on cluster a, which the proxy runs: its listener goes at once; c's waits for c.
    const d = { listeners: [udpListener('d', 2006, 'a')], clusters: [], endpoints: [] };
    cache.setSnapshot(GROUP, snapshotInput(merge(a, b, c, d)));
    const sent = p.take();
    const early = sent.find((r) => r.type_url === LISTENER_TYPE);
    expect(early, `sent ${sent.map((r) => r.type_url)}`).toBeDefined();
    if (mode === 'sotw') expect(names(early)).toEqual(['a-listener', 'b-listener', 'd']);
    else expect(names(early)).toEqual(['d']);
    expect(sent.some((r) => r.type_url === CLUSTER_TYPE)).toBe(false);
    const ackedEarly = performance.now();
    p.ack(early as Response);
    expect(p.take()).toEqual([]);
    expect(status.list(GROUP)[0]?.synced).toBe(false);
    // Out of step since the new cluster went out, not since the last ACK: what vsxds_unsynced_seconds reports.
    expect(status.list(GROUP)[0]?.unsyncedSince).toBeGreaterThanOrEqual(outOfStep);
    expect(status.list(GROUP)[0]?.unsyncedSince).toBeLessThan(ackedEarly);
    // c ACKed: c's listener follows.
    // Envoy subscribes to the new cluster's endpoints (nothing else was sent for them yet).
    expect(eds).toBeUndefined();
    if (mode === 'sotw') p.sotw({ typeUrl: ENDPOINT_TYPE, resourceNames: ['a', 'b', 'c'] });
    else p.delta({ typeUrl: ENDPOINT_TYPE, subscribe: ['c'] });
    p.ack(cds as Response);
    const rest = p.take();
    const late = rest.find((r) => r.type_url === LISTENER_TYPE);
    if (mode === 'sotw') expect(names(late)).toEqual(['a-listener', 'b-listener', 'c-listener', 'd']);
    else expect(names(late)).toEqual(['c-listener']);
    for (const r of rest) p.ack(r, r.type_url === ENDPOINT_TYPE ? ['a', 'b', 'c'] : undefined);
    expect(p.take().filter((r) => r.type_url === LISTENER_TYPE)).toEqual([]);
    expect(status.list(GROUP)[0]?.synced).toBe(true);
    expect(status.list(GROUP)[0]?.unsyncedSince).toBeUndefined();
  });

  it('on a listener change, computes and sends LDS only', () => {
    const p = open();
    p.sync(['a', 'b']);
    retained.mockClear();
    const moved = simplePipeline('b', 2999, ['10.0.0.2']);
    cache.setSnapshot(GROUP, snapshotInput(merge(a, { ...b, listeners: moved.listeners })));
    expect(computed()).toEqual([LISTENER_TYPE]);
    const [lds] = p.take();
    expect(lds?.type_url).toBe(LISTENER_TYPE);
    p.ack(lds as Response);
    expect(p.take()).toEqual([]);
  });

  it('honours a subscription change that comes after a skip', () => {
    const p = open();
    p.sync(['a']);
    cache.setSnapshot(GROUP, withEndpointsOfB('10.0.0.3'));
    // b's endpoints changed, but this proxy only wants a's: nothing to send.
    expect(p.take()).toEqual([]);
    retained.mockClear();
    // Now it wants b's as well.
    const last = p.call.written.length;
    if (mode === 'sotw') {
      const lastEds = decodeResponse(p.call.written[1] as Buffer, 'sotw');
      p.sotw({ typeUrl: ENDPOINT_TYPE, versionInfo: lastEds.version_info ?? '', responseNonce: lastEds.nonce, resourceNames: ['a', 'b'] });
    } else {
      p.delta({ typeUrl: ENDPOINT_TYPE, subscribe: ['b'] });
    }
    expect(computed()).toEqual([ENDPOINT_TYPE]);
    expect(p.call.written.length).toBe(last + 1);
    const [eds] = p.take();
    expect(eds?.type_url).toBe(ENDPOINT_TYPE);
    expect(names(eds)).toEqual(mode === 'sotw' ? ['a', 'b'] : ['b']);
    expect(addresses(eds)).toContain('10.0.0.3');
    // The ACK repeats the subscription (SotW) or says nothing of it (delta): nothing more.
    retained.mockClear();
    p.ack(eds as Response, ['a', 'b']);
    expect(computed()).toEqual([]);
    expect(p.take()).toEqual([]);
    // Dropping b again: SotW answers with a only; delta has nothing to say (b was unsubscribed).
    if (mode === 'sotw') {
      p.sotw({ typeUrl: ENDPOINT_TYPE, versionInfo: eds?.version_info ?? '', responseNonce: eds?.nonce ?? '', resourceNames: ['a'] });
      expect(names(p.take()[0])).toEqual(['a']);
    } else {
      p.delta({ typeUrl: ENDPOINT_TYPE, unsubscribe: ['b'] });
      expect(computed()).toEqual([ENDPOINT_TYPE]);
      expect(p.take()).toEqual([]);
    }
  });

  it('does not send a rejected version again, also when other types change afterwards', () => {
    const p = open();
    const { eds: first } = p.sync(['a', 'b']);
    cache.setSnapshot(GROUP, withEndpointsOfB('10.0.0.3'));
    const [eds] = p.take();
    p.nack(eds as Response, first.version_info ?? '', ['a', 'b']);
    expect(p.take()).toEqual([]);
    const moved = simplePipeline('b', 2999, ['10.0.0.3']);
    cache.setSnapshot(GROUP, snapshotInput(merge(a, { ...b, listeners: moved.listeners, endpoints: [endpoints('b', ['10.0.0.3'])] })));
    const [lds] = p.take();
    expect(lds?.type_url).toBe(LISTENER_TYPE);
    p.ack(lds as Response);
    expect(p.take()).toEqual([]);
    // A new endpoint version is sent.
    cache.setSnapshot(GROUP, snapshotInput(merge(a, { ...b, listeners: moved.listeners, endpoints: [endpoints('b', ['10.0.0.4'])] })));
    expect(addresses(p.take()[0])).toContain('10.0.0.4');
  });

  it('keeps a removed cluster and its endpoints until the listener and then the cluster let go, with the other types kept', () => {
    const p = open();
    p.sync(['a', 'b']);
    // b's listener, cluster and endpoints go; a's are the very same objects, so nothing of a is recomputed for its own sake.
    cache.setSnapshot(GROUP, snapshotInput(a));
    const [lds] = p.take();
    expect(lds?.type_url).toBe(LISTENER_TYPE);
    expect(mode === 'sotw' ? names(lds) : lds?.removed_resources).toEqual(mode === 'sotw' ? ['a-listener'] : ['b-listener']);
    p.ack(lds as Response);
    const [cds] = p.take();
    expect(cds?.type_url).toBe(CLUSTER_TYPE);
    expect(mode === 'sotw' ? names(cds) : cds?.removed_resources).toEqual(mode === 'sotw' ? ['a'] : ['b']);
    // EDS goes only once the clusters that used b's endpoints are gone.
    expect(p.take()).toEqual([]);
    p.ack(cds as Response);
    const [eds] = p.take();
    expect(eds?.type_url).toBe(ENDPOINT_TYPE);
    expect(mode === 'sotw' ? names(eds) : eds?.removed_resources).toEqual(mode === 'sotw' ? ['a'] : ['b']);
    p.ack(eds as Response, ['a', 'b']);
    expect(p.take()).toEqual([]);
    expect(status.list(GROUP)[0]?.synced).toBe(true);
  });
});

describe.each(['sotw', 'delta'] as const)('%s nonces', (mode) => {
  let cache: SnapshotCache;
  const open = (): Proxy =>
    new Proxy(mode, { cache, status: new ProxyStatusRegistry(), log: pino({ level: 'silent' }), nodeAuth: 'none', ...streamLimits({ ...DEFAULT_LIMITS, maxRequestsPerSecond: 0 }), onClose: () => {} });
  const endpointsAt = (ip: string) => snapshotInput(simplePipeline('a', 2000, [ip]));

  beforeEach(() => {
    cache = new SnapshotCache();
    cache.markReady();
    cache.setSnapshot(GROUP, endpointsAt('10.0.0.1'));
  });

  it('streams due the same response share one Buffer; a stream never gets a nonce twice, and stale nonces stay stale', () => {
    const one = open();
    const two = open();
    one.sync(['a']);
    two.sync(['a']);
    expect(two.call.written.map((b, i) => b === one.call.written[i])).toEqual([true, true, true]);

    cache.setSnapshot(GROUP, endpointsAt('10.0.0.2'));
    expect(one.call.written[3]).toBe(two.call.written[3]);
    const [eds] = one.take();
    expect(addresses(eds)).toEqual(['10.0.0.2']);
    one.ack(eds as Response, ['a']);
    // The same response is due again: a SotW resubscription that holds nothing, a delta
    // unsubscribe and subscribe. It goes under a nonce of its own.
    if (mode === 'sotw') {
      one.sotw({ typeUrl: ENDPOINT_TYPE, resourceNames: ['a'] });
    } else {
      one.delta({ typeUrl: ENDPOINT_TYPE, unsubscribe: ['a'] });
      one.delta({ typeUrl: ENDPOINT_TYPE, subscribe: ['a'] });
    }
    const [again] = one.take();
    expect(addresses(again)).toEqual(['10.0.0.2']);
    expect(again?.nonce).not.toBe(eds?.nonce);
    expect(again?.raw.subarray(0, -(again.nonce.length + 2))).toEqual(eds?.raw.subarray(0, -(eds.nonce.length + 2)));
    const nonces = one.call.written.map((b) => decodeResponse(b, mode).nonce);
    expect(new Set(nonces).size).toBe(nonces.length);
    // The earlier response's nonce is stale now: an ACK with it answers nothing, so the next
    // change waits for the ACK of the response in flight.
    one.ack(eds as Response, ['a']);
    cache.setSnapshot(GROUP, endpointsAt('10.0.0.3'));
    expect(one.take()).toEqual([]);
    one.ack(again as Response, ['a']);
    expect(addresses(one.take()[0])).toEqual(['10.0.0.3']);
  });
});
