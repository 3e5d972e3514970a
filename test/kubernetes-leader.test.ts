/**
 * Leader election against a real kube-apiserver, where clocks and networks misbehave: a holder
 * whose clock runs ahead, and a leader whose API server stops answering.
 */
import net from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KubeHttp } from '../src/sources/kube-http.js';
import { LeaseLeaderElection } from '../src/sources/leader-election.js';
import { startKubeEnv, type KubeEnv } from './support/kube-env.js';
import { waitUntil } from './support/wait.js';

/** A TCP relay to the API server that can be frozen: connections stay open and nothing passes. */
async function relay(target: URL): Promise<{ url: string; freeze(): void; close(): void }> {
  let frozen = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
    }
    client.on('data', (d) => void (frozen || upstream.write(d)));
    upstream.on('data', (d) => void (frozen || client.write(d)));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    freeze: () => void (frozen = true),
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

describe('leader election', { timeout: 120_000 }, () => {
  let kube: KubeEnv;
  const cleanup: Array<() => unknown> = [];

  const kubeConfig = (server?: string): KubeConfig => {
    const kc = new KubeConfig();
    kc.loadFromFile(kube.kubeconfigPath);
    if (!server) return kc;
    const out = new KubeConfig();
    out.loadFromOptions({ ...kc, clusters: kc.clusters.map((c) => ({ ...c, server })), currentContext: kc.currentContext });
    return out;
  };

  /** KubeHttp that counts its requests by method. */
  class CountingHttp extends KubeHttp {
    readonly requests: Record<string, number> = {};
    override request(...args: Parameters<KubeHttp['request']>): Promise<string> {
      this.requests[args[0]] = (this.requests[args[0]] ?? 0) + 1;
      return super.request(...args);
    }
  }

  const elect = (identity: string, name: string, kc = kubeConfig(), retryPeriodMs = 300) => {
    const changes: boolean[] = [];
    const http = new CountingHttp(kc);
    const election = new LeaseLeaderElection(http, {
      namespace: 'default',
      name,
      identity,
      leaseDurationSeconds: 3,
      retryPeriodMs,
      log: pino({ level: 'silent' }),
      onChange: (leader) => changes.push(leader),
    });
    election.start();
    cleanup.push(() => election.stop());
    return { election, changes, http };
  };

  beforeAll(async () => {
    kube = await startKubeEnv();
  }, 45 * 60_000);
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });
  afterAll(async () => {
    await kube?.stop();
  });

  it('takes over from a dead holder whose clock ran an hour ahead, after the lease duration it observed', async () => {
    const aheadByAnHour = new Date(Date.now() + 3_600_000).toISOString().replace('Z', '000Z');
    await kube.kubectlOk(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: 'skewed', namespace: 'default' },
        spec: { holderIdentity: 'vsxds-dead', leaseDurationSeconds: 3, renewTime: aheadByAnHour, acquireTime: aheadByAnHour },
      }),
    );
    const b = elect('vsxds-b', 'skewed');
    await waitUntil(() => b.election.isLeader, 'vsxds-b leading once the dead holder’s lease went unrenewed for 3 s', 30_000);
    const lease = JSON.parse(await kube.kubectlOk(['get', 'lease', 'skewed', '-o', 'json']));
    expect(lease.spec.holderIdentity).toBe('vsxds-b');
  });

  it('a leader whose retry period is as long as its renew deadline (3 s lease, 2 s period) stays leader', async () => {
    const a = elect('vsxds-a', 'short', kubeConfig(), 2_000);
    await waitUntil(() => a.election.isLeader, 'vsxds-a leading');
    // Five retry periods: before, each renewal came after the deadline of the one before.
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    expect(a.changes).toEqual([true]);
  });

  it('a leader renews with one write per retry period, and reads the lease again once anyone else wrote it', async () => {
    const a = elect('vsxds-a', 'renewals');
    await waitUntil(() => a.election.isLeader, 'vsxds-a leading');
    const before = { ...a.http.requests };
    // About seven retry periods of 300 ms.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(a.http.requests['GET'] ?? 0).toBe(before['GET'] ?? 0);
    expect((a.http.requests['PUT'] ?? 0) - (before['PUT'] ?? 0)).toBeGreaterThanOrEqual(4);
    // Someone else takes the lease: the leader's next renewal conflicts, it reads the lease and steps down.
    await kube.kubectlOk(['patch', 'lease', 'renewals', '--type=merge', '-p', JSON.stringify({ spec: { holderIdentity: 'vsxds-other' } })]);
    await waitUntil(() => a.changes.length > 1, 'vsxds-a stepping down');
    expect(a.changes.slice(0, 2)).toEqual([true, false]);
    expect(a.http.requests['GET']).toBeGreaterThan(before['GET'] ?? 0);
  });

  it('a leader whose lease is deleted writes it again and stays leader', async () => {
    const a = elect('vsxds-a', 'deleted');
    await waitUntil(() => a.election.isLeader, 'vsxds-a leading');
    await kube.kubectlOk(['delete', 'lease', 'deleted']);
    await waitUntil(async () => (await kube.kubectl(['get', 'lease', 'deleted', '-o', 'json'])).code === 0, 'the lease written again');
    const lease = JSON.parse(await kube.kubectlOk(['get', 'lease', 'deleted', '-o', 'json']));
    expect(lease.spec.holderIdentity).toBe('vsxds-a');
    expect(a.changes).toEqual([true]);
  });

  it('steps down when its API server stops answering, before its lease expires for the others', async () => {
    const front = await relay(new URL(kube.server));
    cleanup.push(() => front.close());
    const a = elect('vsxds-a', 'hung', kubeConfig(front.url));
    await waitUntil(() => a.election.isLeader, 'vsxds-a leading');
    front.freeze();
    // Its renewals now hang: it must stop writing status on its own.
    await waitUntil(() => !a.election.isLeader, 'vsxds-a stepping down while its renewal hangs', 30_000);
    expect(a.changes).toEqual([true, false]);
    // Another replica takes over once the lease it observed went unrenewed.
    const b = elect('vsxds-b', 'hung');
    await waitUntil(() => b.election.isLeader, 'vsxds-b leading', 30_000);
  });
});
