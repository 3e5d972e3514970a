/**
 * A TCP proxy in front of the API server that can make the connections through it go silent
 * without closing them: a half-open connection, as when a NAT or load balancer between vsxds and
 * the API server forgets a connection (its packets dropped, no FIN, no RST). New connections go
 * through as before, so whoever gives up on a silent connection and connects again gets answers.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  frozen: boolean;
}

export class FreezeProxy {
  private readonly pairs = new Set<Pair>();
  /** Connections accepted so far. */
  accepted = 0;
  /** The most connections open at once (not frozen) since the proxy started or `resetMostLive`. */
  mostLive = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(target: { host: string; port: number }): Promise<FreezeProxy> {
    let proxy: FreezeProxy | undefined;
    const server = createServer((client) => {
      const upstream = createConnection(target.port, target.host);
      const pair: Pair = { client, upstream, frozen: false };
      (proxy as FreezeProxy).accepted += 1;
      (proxy as FreezeProxy).pairs.add(pair);
      (proxy as FreezeProxy).mostLive = Math.max((proxy as FreezeProxy).mostLive, (proxy as FreezeProxy).live);
      // Frozen: what either side sends is dropped; neither learns anything, not even a close.
      client.on('data', (d) => void (pair.frozen || upstream.write(d)));
      upstream.on('data', (d) => void (pair.frozen || client.write(d)));
      const end = () => {
        (proxy as FreezeProxy).pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('close', end).on('error', end);
      upstream.on('close', () => void (pair.frozen || end())).on('error', () => void (pair.frozen || end()));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    proxy = new FreezeProxy(server, (server.address() as { port: number }).port);
    return proxy;
  }

  /** Makes every connection open now go silent; returns how many. */
  freeze(): number {
    let n = 0;
    for (const p of this.pairs) {
      if (!p.frozen) n += 1;
      p.frozen = true;
    }
    return n;
  }

  /** Connections open through the proxy and not frozen. */
  get live(): number {
    return [...this.pairs].filter((p) => !p.frozen).length;
  }

  resetMostLive(): void {
    this.mostLive = this.live;
  }

  /** A copy of `kubeconfigPath` whose server is this proxy (same TLS names: 127.0.0.1). */
  kubeconfig(kubeconfigPath: string): string {
    const text = readFileSync(kubeconfigPath, 'utf8').replace(/server: *"?https:\/\/127\.0\.0\.1:\d+"?/, `server: https://127.0.0.1:${this.port}`);
    if (!text.includes(`127.0.0.1:${this.port}`)) throw new Error(`no server https://127.0.0.1:<port> in ${kubeconfigPath}`);
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'vsxds-freeze-')), 'kubeconfig');
    writeFileSync(file, text, { mode: 0o600 });
    return file;
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    this.pairs.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
