/**
 * vsxds's ADS server with the benchmark fleet in its SnapshotCache, and the control API the
 * load generator drives (the same one the Go peer and stub expose; see bench/internal/control).
 *
 *   node --expose-gc --import tsx bench/vsxds-server.ts --port 18000 --control-port 18100 \
 *     [--groups 100 --clusters 10 --endpoints 5] [--profile-dir DIR]
 *
 * With --profile-dir (and node --enable-source-maps), every measured all-groups change is
 * CPU-profiled from the change until the load generator reports it done, into
 * DIR/all-<gen>.cpuprofile.
 */
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { AdsServer, SnapshotCache } from '../src/xds/index.js';
import { GroupResources, groupKey, type Shape } from './fleet.js';
import { CpuProfiler } from './profiler.js';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '18000' },
    'control-port': { type: 'string', default: '18100' },
    groups: { type: 'string', default: '100' },
    clusters: { type: 'string', default: '10' },
    endpoints: { type: 'string', default: '5' },
    'profile-dir': { type: 'string' },
  },
});

const shape: Shape = { groups: Number(args.groups), clustersPerGroup: Number(args.clusters), endpointsPerCluster: Number(args.endpoints) };
const cache = new SnapshotCache();
const groups = [...Array(shape.groups).keys()].map((g) => new GroupResources(shape, g));
for (const gr of groups) cache.setSnapshot(groupKey(gr.g), gr.input());
cache.markReady();

const server = new AdsServer({ cache });
const port = await server.listen(`127.0.0.1:${args.port}`);

const profileDir = args['profile-dir'];
const profiler = new CpuProfiler();
let profiledGen = 0;

async function change(scope: string, gen: number, warmup: boolean): Promise<number> {
  if (scope === 'noop') {
    // What ConfigPipeline does to a group whose inputs changed but not its configuration.
    for (const gr of groups) cache.setSnapshot(groupKey(gr.g), gr.input());
    return 0;
  }
  const affected = scope === 'one' ? groups.slice(0, 1) : scope === 'all' ? groups : undefined;
  if (!affected) throw new Error('scope must be one, all or noop');
  if (profileDir && scope === 'all' && !warmup && !profiler.running) {
    await profiler.start();
    profiledGen = gen;
  }
  for (const gr of affected) {
    gr.change(gen);
    cache.setSnapshot(groupKey(gr.g), gr.input());
  }
  return affected.length;
}

async function done(): Promise<void> {
  if (profileDir) await profiler.stop(path.join(profileDir, `all-${profiledGen}.cpuprofile`));
}

const control = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://control');
  const reply = (status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  void (async () => {
    switch (url.pathname) {
      case '/ready':
        return reply(200, { port });
      case '/change': {
        // CLOCK_MONOTONIC (libuv's hrtime), the clock the load generator compares with: the
        // wall clock is only to the millisecond here, and performance.timeOrigin's mapping to
        // it drifts by tenths of a millisecond, as much as a one-group push takes.
        const startMonoNano = Number(process.hrtime.bigint());
        const start = performance.now();
        const n = await change(url.searchParams.get('scope') ?? '', Number(url.searchParams.get('gen')), url.searchParams.get('warmup') === 'true');
        return reply(200, { groups: n, applyMs: performance.now() - start, startMonoNano });
      }
      case '/done':
        await done();
        return reply(200, {});
      case '/gc':
        (globalThis as { gc?: () => void }).gc?.();
        return reply(200, {});
      case '/quit':
        reply(200, {});
        server.forceClose();
        setTimeout(() => process.exit(0), 50);
        return;
      default:
        return reply(404, {});
    }
  })().catch((err: Error) => reply(400, { error: err.message }));
});
control.listen(Number(args['control-port']), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
