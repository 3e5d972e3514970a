import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { KubernetesSource } from '../src/sources/kubernetes-source.js';
import { waitUntil } from './support/wait.js';

/**
 * A fake API server. `answer` says whether a request gets an answer: lists an empty list,
 * watches a stream that `endWatchAfterMs` ends cleanly (as an API server shutting down does).
 * Unanswered requests hang: what a restarting API server under load was seen to do.
 */
async function fakeApiServer(answer: (isWatch: boolean) => boolean, endWatchAfterMs?: number) {
  const requests: string[] = [];
  const queries: URLSearchParams[] = [];
  const server = http.createServer((req, res) => {
    const query = new URL(req.url ?? '/', 'http://x').searchParams;
    const isWatch = query.get('watch') === 'true';
    requests.push(isWatch ? 'watch' : 'list');
    queries.push(query);
    if (!answer(isWatch)) return;
    if (!isWatch) {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ kind: 'List', items: [], metadata: { resourceVersion: '1' } }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('');
    if (endWatchAfterMs !== undefined) setTimeout(() => res.end(), endWatchAfterMs);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vsxds-stall-'));
  const kubeconfig = path.join(dir, 'kubeconfig');
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      `clusters: [{name: c, cluster: {server: "${url}", insecure-skip-tls-verify: true}}]`,
      'users: [{name: u, user: {token: t}}]',
      'contexts: [{name: x, context: {cluster: c, user: u}}]',
      'current-context: x',
    ].join('\n'),
  );
  return {
    kubeconfig,
    requests,
    queries,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

describe('Kubernetes source against an API server that stops answering', () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0)) await c();
  });

  async function source(kubeconfig: string, watchTimeoutS?: number): Promise<KubernetesSource> {
    const s = new KubernetesSource({ kubeconfig, log: pino({ level: process.env['VSXDS_TEST_LOG'] ?? 'silent' }), stallMs: 300, backoff: () => 100, watchTimeoutS });
    cleanup.push(() => s.stop());
    await s.start();
    return s;
  }

  it('starts over a list that gets no answer, instead of waiting forever', async () => {
    const api = await fakeApiServer(() => false);
    cleanup.push(api.close);
    const s = await source(api.kubeconfig);
    // Two informers (VirtualServices, pods): one list each, then one more after each stall.
    await waitUntil(() => (api.requests.length >= 6 ? true : undefined), 'stalled lists to be started over', 10_000);
    expect(api.requests.every((r) => r === 'list')).toBe(true);
    expect(s.watchRestarts).toBeGreaterThanOrEqual(4);
  });

  it('starts over a watch that reconnects on its own after a clean end and gets no answer', async () => {
    let answering = true;
    const api = await fakeApiServer(() => answering, 1000);
    cleanup.push(api.close);
    const s = await source(api.kubeconfig);
    await waitUntil(() => (s.state.synced ? true : undefined), 'the source to sync', 10_000);
    answering = false;
    const before = api.requests.length;
    // client-node reconnects each ended watch itself; the watchdog must catch that attempt too.
    await waitUntil(() => (s.watchRestarts >= 2 && api.requests.length >= before + 4 ? true : undefined), 'the hanging reconnects to be started over', 10_000);
  });

  it('starts over a watch that went silent without closing (a half-open connection), and asks the API server to end each watch in time', async () => {
    // Every watch is answered and then nothing: no event, no bookmark, no end.
    const api = await fakeApiServer(() => true);
    cleanup.push(api.close);
    const s = await source(api.kubeconfig, 1);
    await waitUntil(() => (s.state.synced ? true : undefined), 'the source to sync', 10_000);
    const watchesBefore = api.requests.filter((r) => r === 'watch').length;
    // Asked to end after ~1 s, silent for 1.25 s: taken for gone and started over.
    await waitUntil(() => (api.requests.filter((r) => r === 'watch').length >= watchesBefore + 2 ? true : undefined), 'the silent watches to be started over', 20_000);
    expect(s.watchRestarts).toBeGreaterThanOrEqual(2);
    const watches = api.queries.filter((q) => q.get('watch') === 'true');
    expect(watches.every((q) => q.get('timeoutSeconds') === '1' && q.get('allowWatchBookmarks') === 'true')).toBe(true);
  }, 30_000);
});
