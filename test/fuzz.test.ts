import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { credentials } from '@grpc/grpc-js';
import pino from 'pino';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigPipeline } from '../src/main/config-pipeline.js';
import { FileSource } from '../src/sources/file-source.js';
import type { RawObject } from '../src/sources/source.js';
import { AdsServer } from '../src/xds/ads-server.js';
import { encodeDeltaRequest, encodeSotwRequest } from '../src/xds/requests.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, nodeGroup, SnapshotCache } from '../src/xds/index.js';
import { nodeFor, RawAdsStream } from './support/ads-client.js';
import { fuzzSeed, Prng } from './support/prng.js';
import { simplePipeline, snapshotInput } from './support/resources.js';
import { BehaviorSubject } from 'rxjs';

const ROOT = path.resolve(import.meta.dirname, '..');
const TYPES = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, '', 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration', 'garbage', 'type.googleapis.com/'];

/** A DiscoveryRequest (SotW or delta) with random, often nonsensical, field values. */
function randomRequest(rng: Prng, mode: 'sotw' | 'delta'): Record<string, unknown> {
  const names = Array.from({ length: rng.int(4) }, () => (rng.chance(0.3) ? '*' : rng.string(12)));
  const node = rng.chance(0.2)
    ? rng.pick([
        nodeFor('media', { app: 'worker' }),
        { id: rng.string(20) },
        { id: 'media/' + rng.string(8), metadata: { fields: { namespace: { stringValue: rng.string(6) }, labels: { numberValue: 3 } } } },
        { metadata: { fields: { namespace: { listValue: { values: [] } } } } },
      ])
    : undefined;
  const errorDetail = rng.chance(0.2) ? { code: rng.int(20), message: rng.string(30) } : undefined;
  const base = { node, type_url: rng.pick(TYPES), response_nonce: rng.chance(0.5) ? String(rng.int(10)) : rng.string(5), error_detail: errorDetail };
  return mode === 'sotw'
    ? { ...base, version_info: rng.string(16), resource_names: names }
    : { ...base, resource_names_subscribe: names, resource_names_unsubscribe: names.slice(0, 1), initial_resource_versions: rng.chance(0.3) ? { [rng.string(5)]: rng.string(5) } : {} };
}

describe('fuzzing', { timeout: 300_000 }, () => {
  const seed = fuzzSeed();
  beforeAll(() => console.log(`fuzz seed ${seed} (replay with FUZZ_SEED=${seed})`));

  describe('the ADS server with 100,000 random and malformed DiscoveryRequests', () => {
    let server: AdsServer;
    let cache: SnapshotCache;
    let address: string;
    beforeAll(async () => {
      cache = new SnapshotCache();
      cache.setSnapshot('media/app=worker', snapshotInput(simplePipeline('rtp', 2000, ['10.0.0.1'])));
      cache.setSnapshot('media/app=bystander', snapshotInput(simplePipeline('calm', 2000, ['10.0.0.2'])));
      cache.markReady();
      // No request-rate limit here: the point is that every request is processed.
      server = new AdsServer({ cache, logger: pino({ level: 'silent' }), limits: { maxRequestsPerSecond: 0 } });
      address = `127.0.0.1:${await server.listen('127.0.0.1:0')}`;
    });
    afterAll(() => server.forceClose());

    it('never crashes, answers each bad stream with a status or keeps it up, and leaves other proxies unaffected', async () => {
      const rng = new Prng(seed);
      // Another proxy has a connection of its own.
      const bystander = new RawAdsStream(address, 'sotw', credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
      bystander.send({ node: nodeFor('media', { app: 'bystander' }), type_url: CLUSTER_TYPE });
      const first = await bystander.next();

      const TOTAL = 100_000;
      // Short streams, so most requests are processed before a malformed one ends their stream.
      const PER_STREAM = 20;
      const BATCH = 50;
      let sent = 0;
      const endings = new Map<number, number>();
      while (sent < TOTAL) {
        const batch: RawAdsStream[] = [];
        for (let b = 0; b < BATCH && sent < TOTAL; b++) {
          const mode = rng.pick(['sotw', 'delta'] as const);
          const s = new RawAdsStream(address, mode);
          batch.push(s);
          // Most streams start well, then go wrong.
          if (rng.chance(0.7)) s.send({ node: nodeFor('media', { app: 'worker' }), type_url: CLUSTER_TYPE });
          const count = Math.min(PER_STREAM, TOTAL - sent);
          for (let i = 0; i < count; i++) {
            const roll = rng.next();
            if (roll < 0.01) s.sendRaw(rng.bytes(rng.int(64)));
            else if (roll < 0.03) {
              const valid = mode === 'sotw' ? encodeSotwRequest(randomRequest(rng, mode)) : encodeDeltaRequest(randomRequest(rng, mode));
              for (let k = 0; k < 3 && valid.length > 0; k++) valid[rng.int(valid.length)] = rng.int(256);
              s.sendRaw(valid);
            } else s.send(randomRequest(rng, mode));
          }
          sent += count;
        }
        await new Promise((r) => setTimeout(r, 30));
        for (const s of batch) {
          if (s.ended) endings.set(s.ended.code, (endings.get(s.ended.code) ?? 0) + 1);
          s.close();
        }
      }
      console.log(`fuzz: ${sent} requests; stream endings by gRPC code: ${JSON.stringify(Object.fromEntries(endings))}`);
      // Every stream that ended did so with a status that names the problem, never INTERNAL or UNKNOWN.
      expect(endings.has(13)).toBe(false);
      expect(endings.has(2)).toBe(false);

      // The bystander still works: it ACKs and receives the next change.
      bystander.ack(first);
      cache.setSnapshot('media/app=bystander', snapshotInput(simplePipeline('calm2', 2000, ['10.0.0.2'])));
      const next = await bystander.next(10_000);
      expect(next.resources.map((r) => r.name)).toEqual(['calm2']);
      bystander.close();
      await bystander.until(() => server.streamCount === 0, 10_000, 'every stream to be closed');
    });
  });

  describe('the sources and the pipeline with malformed VirtualServices', () => {
    it('marks 10,000 mutated VirtualServices accepted or not without throwing, and keeps serving the valid one', async () => {
      const rng = new Prng(seed + 1);
      const base = parseYaml(await readFile(path.join(ROOT, 'examples', 'virtualservices', 'ingress.yaml'), 'utf8'));
      const good: RawObject = { ...base, metadata: { ...base.metadata, namespace: 'default' } };
      const mutants: RawObject[] = [];
      for (let i = 0; i < 10_000; i++) {
        const m = mutate(structuredClone(base), rng);
        const meta = typeof m?.metadata === 'object' && m.metadata !== null ? m.metadata : {};
        mutants.push({ ...(typeof m === 'object' && m !== null ? m : {}), metadata: { ...meta, name: `m${i}`, namespace: 'other' } } as RawObject);
      }
      const subject = new BehaviorSubject({ virtualServices: [good, ...mutants], pods: [], synced: true, problems: [] });
      const cache = new SnapshotCache();
      const pipeline = new ConfigPipeline({
        source: { name: 'fuzz', state$: subject.asObservable(), start: async () => {}, stop: async () => {} },
        cache,
        log: pino({ level: 'silent' }),
        coalesceMs: 1,
      });
      cache.watch(nodeGroup('default', { app: 'ingress' }), () => {});
      cache.watch(nodeGroup('other', { app: 'ingress' }), () => {});
      pipeline.start();
      await new Promise((r) => setTimeout(r, 500));
      const view = pipeline.current;
      expect(view.builds).toBeGreaterThan(0);
      expect(view.buildErrors.size).toBe(0);
      const rejected = [...view.evaluated.values()].filter((e) => !e.accepted);
      expect(rejected.length).toBeGreaterThan(1000);
      for (const e of rejected) expect(e.message.length).toBeGreaterThan(0);
      console.log(`fuzz: ${rejected.length} of ${mutants.length} mutated VirtualServices rejected, ${mutants.length - rejected.length} still valid`);
      expect(cache.getSnapshot('default/app=ingress')?.resources(LISTENER_TYPE).names).toEqual(['ingress-rtcp', 'ingress-rtp']);
      pipeline.stop();
    });

    it('keeps serving a directory when garbage files appear in it', async () => {
      const rng = new Prng(seed + 2);
      const dir = await mkdtemp(path.join(os.tmpdir(), 'vsxds-fuzz-'));
      await writeFile(path.join(dir, 'good.yaml'), await readFile(path.join(ROOT, 'examples', 'virtualservices', 'ingress.yaml')));
      const source = new FileSource(dir, pino({ level: 'silent' }));
      await source.start();
      for (let i = 0; i < 200; i++) {
        const content = rng.chance(0.5) ? rng.bytes(rng.int(400)) : `kind: VirtualService\n${rng.string(200)}`;
        await writeFile(path.join(dir, `junk-${i}.yaml`), content);
      }
      await source.reload();
      expect(source.state.virtualServices.map((v) => v.metadata.name)).toContain('ingress');
      await source.stop();
      await rm(dir, { recursive: true, force: true });
    });
  });
});

/** One random structural mutation somewhere in a JSON-like tree. */
function mutate(value: any, rng: Prng, depth = 0): any {
  const replacements = [null, 0, -1, 70000, 1.5, '', 'x'.repeat(300), true, [], {}, 'not-a-port', { nested: { deeper: [1, 2] } }, '10.0.0.1', 'a.b.c', '*'];
  if (value === null || typeof value !== 'object' || depth > 6 || rng.chance(0.15)) {
    return rng.chance(0.5) ? rng.pick(replacements) : value;
  }
  if (Array.isArray(value)) {
    if (value.length > 0 && rng.chance(0.2)) value.splice(rng.int(value.length), 1);
    else if (rng.chance(0.2)) value.push(structuredClone(value[0] ?? {}));
    else if (value.length > 0) {
      const i = rng.int(value.length);
      value[i] = mutate(value[i], rng, depth + 1);
    }
    return value;
  }
  const keys = Object.keys(value);
  if (keys.length > 0 && rng.chance(0.15)) delete value[rng.pick(keys)];
  else if (rng.chance(0.1)) value[rng.string(8)] = rng.pick(replacements);
  else if (keys.length > 0) {
    const k = rng.pick(keys);
    value[k] = mutate(value[k], rng, depth + 1);
  }
  return value;
}
