import { describe, expect, it } from 'vitest';
import { backoffMs } from '../src/sources/kube-errors.js';

describe('Kubernetes retry backoff', () => {
  it('spreads the retries of replicas that failed together over the upper half of each step', () => {
    const low = () => 0;
    const high = () => 1;
    expect([0, 1, 2, 3].map((a) => backoffMs(a, 500, 30_000, low))).toEqual([250, 500, 1000, 2000]);
    expect([0, 1, 2, 3].map((a) => backoffMs(a, 500, 30_000, high))).toEqual([500, 1000, 2000, 4000]);
    const draws = new Set(Array.from({ length: 50 }, () => backoffMs(5)));
    expect(draws.size).toBeGreaterThan(1);
  });

  it('never waits longer than the cap', () => {
    expect(backoffMs(40, 500, 30_000, () => 1)).toBe(30_000);
    expect(backoffMs(40, 500, 30_000, () => 0)).toBe(15_000);
  });
});
