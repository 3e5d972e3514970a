import { describe, expect, it } from 'vitest';
import { BoundedCache, SpecMemo } from '../src/translate/memo.js';

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
