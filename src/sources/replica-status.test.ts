/**
 * The replica-status reader's watch when the network misbehaves in ways a real API server cannot
 * be made to (test/kubernetes-replica-status.test.ts runs it against one): a watch that goes
 * silent without closing, as over a half-open connection.
 */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { KubeHttp } from './kube-http.js';
import { KubeReplicaStatus } from './replica-status.js';

/** The API server's ConfigMaps as the reader sees them: one peer object whose renewals show in lists, while every watch stays silent. */
class SilentWatchApi {
  resourceVersion = 10;
  peer?: { resourceVersion: string; hash: string; payload: string };
  watches = 0;
  lists = 0;
  /** The peer's object answers 404 when read whole (deleted between the list and the read). */
  peerGone = false;
  /** Every watch ends as soon as it starts (a proxy that closes streams). */
  watchesEndAtOnce = false;

  renew(): void {
    if (this.peer) this.peer.resourceVersion = String(++this.resourceVersion);
  }

  async request(method: string, path: string): Promise<string> {
    // The reader's own object (it does not publish): there is none.
    if (method === 'DELETE' && path.endsWith('/vsxds-replica-leader')) throw Object.assign(new Error(`${method} ${path}`), { code: 404 });
    if (method !== 'GET') throw Object.assign(new Error(`${method} ${path}`), { code: 405 });
    if (path.includes('?labelSelector=')) {
      this.lists += 1;
      // The API server says `items: null` when there are none.
      const items = this.peer ? [{ metadata: { name: 'vsxds-replica-peer', resourceVersion: this.peer.resourceVersion, annotations: { 'vsxds.l7mp.io/contribution-sha256': this.peer.hash } } }] : null;
      return JSON.stringify({ metadata: { resourceVersion: String(this.resourceVersion) }, items });
    }
    if (path.endsWith('/vsxds-replica-peer') && this.peer && !this.peerGone) return JSON.stringify({ data: { 'contribution.json': this.peer.payload } });
    throw Object.assign(new Error(`GET ${path}`), { code: 404 });
  }

  watch(_path: string, _onLine: unknown, done: (err: unknown) => void): { abort: () => void; answered: Promise<void> } {
    this.watches += 1;
    if (this.watchesEndAtOnce) setImmediate(() => done(null));
    return { abort: () => undefined, answered: new Promise(() => undefined) };
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('replica status reader', () => {
  const readers: KubeReplicaStatus[] = [];
  afterEach(async () => {
    for (const r of readers.splice(0)) await r.stop();
  });

  const reader = (api: SilentWatchApi, log = pino({ level: 'silent' })) => {
    const r = new KubeReplicaStatus(api as unknown as KubeHttp, { namespace: 'ns', replica: 'leader', leaseDurationSeconds: 1, intervalMs: 100, log });
    r.publishing = false;
    r.reading = true;
    r.start();
    readers.push(r);
    return r;
  };

  it('with no other replica, lists once and watches, and has nothing to say', async () => {
    const api = new SilentWatchApi();
    const lines: string[] = [];
    const r = reader(api, pino({ level: 'info' }, { write: (line: string) => void lines.push(line) }));
    await sleep(1_000);
    expect(lines).toEqual([]);
    expect(api.lists).toBe(1);
    expect(api.watches).toBe(1);
    expect(r.peers().size).toBe(0);
  });

  it('a watch that ends as soon as it starts is started again once an interval, not back to back', async () => {
    const api = new SilentWatchApi();
    api.watchesEndAtOnce = true;
    reader(api);
    await sleep(1_000);
    // Ten intervals of 100 ms.
    expect(api.watches).toBeGreaterThan(3);
    expect(api.watches).toBeLessThanOrEqual(12);
  });

  it('an object deleted between the list and its read is no one’s contribution, and the list still counts', async () => {
    const api = new SilentWatchApi();
    api.peer = { resourceVersion: '5', hash: 'h1', payload: 'counts' };
    api.peerGone = true;
    const lines: string[] = [];
    const r = reader(api, pino({ level: 'info' }, { write: (line: string) => void lines.push(line) }));
    await sleep(500);
    expect(r.peers().size).toBe(0);
    expect(lines).toEqual([]);
    // The list was applied: the watch runs from it.
    expect(api.lists).toBe(1);
    expect(api.watches).toBe(1);
  });

  it('keeps counting a replica that renews while its watch is silent, and starts the watch over', async () => {
    const api = new SilentWatchApi();
    api.peer = { resourceVersion: '5', hash: 'h1', payload: 'counts' };
    const r = reader(api);
    // Renewals every third of the 1 s lease, which only lists show.
    for (let i = 0; i < 12; i++) {
      await sleep(330);
      api.renew();
      expect(r.peers().get('vsxds-replica-peer'), `after ${(i + 1) * 330} ms`).toBe('counts');
    }
    // Each time the contribution went unseen for half the lease, a list found it renewed, and the
    // watch that missed it was started over.
    expect(api.watches).toBeGreaterThan(2);
    // Lists only then: a few a second at most, not one every 100 ms tick.
    expect(api.lists).toBeLessThan(12 * 3);
  });

  it('stops counting a replica that stopped renewing, within the lease duration and a little more', async () => {
    const api = new SilentWatchApi();
    api.peer = { resourceVersion: '5', hash: 'h1', payload: 'counts' };
    const r = reader(api);
    await sleep(300);
    expect(r.peers().get('vsxds-replica-peer')).toBe('counts');
    const stopped = Date.now();
    while (r.peers().has('vsxds-replica-peer')) {
      expect(Date.now() - stopped, 'still counted').toBeLessThan(1_000 + 500);
      await sleep(20);
    }
    // Once expired, its leftover object is not listed over and over.
    const lists = api.lists;
    await sleep(1_000);
    expect(api.lists - lists).toBeLessThanOrEqual(1);
  });
});
