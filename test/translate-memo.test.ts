import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { listenerResource } from '../src/translate/listener.js';
import { BoundedCache, SpecMemo, WeakValueCache } from '../src/translate/memo.js';
import type { ListenerSpec } from '../src/model/types.js';

setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;
/** A full collection after the current job: WeakRef targets are kept until the job ends. */
async function collected(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    collect();
  }
}

describe('BoundedCache', () => {
  it('keeps recently used entries and forgets the rest beyond its capacity', () => {
    const c = new BoundedCache<string, number>(2);
    c.set('a', 1);
    c.set('b', 2);
    c.set('c', 3); // a and b move to the old generation
    expect(c.get('a')).toBe(1); // used again: back in the young one
    c.set('d', 4); // young (c, a) is full: b is forgotten
    expect(c.get('b')).toBeUndefined();
    expect(c.get('a')).toBe(1);
    expect(c.get('c')).toBe(3);
    expect(c.size).toBeLessThanOrEqual(4);
  });
});

describe('SpecMemo', () => {
  it('builds once per identity, and once per content for equal new objects', () => {
    let builds = 0;
    const memo = new SpecMemo((s: { n: number }) => ({ built: s.n, id: ++builds }), (s) => String(s.n), 10);
    const spec = { n: 1 };
    const first = memo.get(spec);
    expect(memo.get(spec)).toBe(first);
    expect(memo.get({ n: 1 })).toBe(first);
    expect(memo.get({ n: 2 })).not.toBe(first);
    expect(builds).toBe(2);
  });
});

describe('WeakValueCache', () => {
  it('answers while its value is held elsewhere, and lets go of it once nothing else holds it', async () => {
    const cache = new WeakValueCache<string, { n: number }>(100);
    let held: { n: number } | undefined = { n: 1 };
    cache.set('held', held);
    cache.set('dropped', { n: 2 });
    await collected();
    expect(cache.get('held')).toBe(held);
    expect(cache.get('dropped')).toBeUndefined();
    held = undefined;
    await collected();
    expect(cache.get('held')).toBeUndefined();
  });
});

describe('per-call listeners', () => {
  it('are not kept by the translation caches once nothing uses them: an ended call leaves nothing behind', async () => {
    const spec = (i: number): ListenerSpec =>
      ({ name: `call-${i}-l`, udp: { port: 20000 + i, cluster: { name: `call-${i}-c`, service_discovery: 'eds', hash_key: `call-${i}`, endpoints: [] } } }) as unknown as ListenerSpec;
    const gone = new FinalizationRegistry<number>((i) => collectedCalls.add(i));
    const collectedCalls = new Set<number>();
    for (let i = 0; i < 50; i++) gone.register(listenerResource(spec(i), 'shared'), i);
    await collected();
    expect(collectedCalls.size).toBe(50);
  });
});
