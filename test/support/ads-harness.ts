import pino from 'pino';
import type { AdsLimits } from '../../src/xds/ads-server.js';
import { AdsServer, SnapshotCache, type PodLookup } from '../../src/xds/index.js';

export interface AdsHarness {
  readonly cache: SnapshotCache;
  readonly server: AdsServer;
  readonly address: string;
  stop(): Promise<void>;
}

/** The real ADS server on 127.0.0.1 with a free port. */
export async function startAds(opts: { ready?: boolean; podLookup?: PodLookup; limits?: Partial<AdsLimits> } = {}): Promise<AdsHarness> {
  const cache = new SnapshotCache();
  if (opts.ready ?? true) cache.markReady();
  const server = new AdsServer({ cache, podLookup: opts.podLookup, limits: opts.limits, logger: pino({ level: process.env['VSXDS_TEST_LOG'] ?? 'silent' }) });
  const port = await server.listen('127.0.0.1:0');
  return {
    cache,
    server,
    address: `127.0.0.1:${port}`,
    stop: async () => server.forceClose(),
  };
}
