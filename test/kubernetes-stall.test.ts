import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { KubernetesSource } from '../src/sources/kubernetes-source.js';
import { waitUntil } from './support/wait.js';

describe('Kubernetes source against an API server that accepts connections and never answers', () => {
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((socket) => {
    // Reads the request, answers nothing: what a starting API server under load was seen to do.
    connections++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  afterAll(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });

  it('starts a list/watch that gets no answer over, instead of waiting forever', async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vsxds-stall-'));
    const kubeconfig = path.join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters: [{name: c, cluster: {server: "http://127.0.0.1:' + port + '", insecure-skip-tls-verify: true}}]',
        'users: [{name: u, user: {token: t}}]',
        'contexts: [{name: x, context: {cluster: c, user: u}}]',
        'current-context: x',
      ].join('\n'),
    );
    const source = new KubernetesSource({ kubeconfig, log: pino({ level: process.env['VSXDS_TEST_LOG'] ?? 'silent' }), stallMs: 300 });
    await source.start();
    try {
      // Two informers (VirtualServices, pods): each connects once, then again after each stall.
      await waitUntil(async () => (connections >= 6 ? true : undefined), 'stalled list/watch attempts to be started over', 10_000);
      expect(source.watchRestarts).toBeGreaterThanOrEqual(4);
    } finally {
      await source.stop();
    }
  });
});
