/** B5's setup breakdown (bench/calls-breakdown.ts) on made-up change logs. */
import { describe, expect, it } from 'vitest';
import { breakdown, type Change } from '../bench/calls-breakdown.js';
import type { CallRecord } from './support/calls.js';

function call(index: number, createSentAt: number, firstAt: number | undefined, byWorker: CallRecord['byWorker'] = {}): CallRecord {
  return {
    index,
    name: `call-${index}`,
    port: 20_000 + index,
    reusedPort: false,
    sampled: false,
    createSentAt,
    ...(firstAt !== undefined ? { firstAt } : {}),
    workers: new Set(Object.keys(byWorker)),
    byWorker,
    seq: 0,
    sentAt: [],
    arrived: [],
    received: 0,
    probesSent: 0,
    stale: 0,
  };
}

const change = (key: string, receivedAt: number, extra: Partial<Change> = {}): Change => ({
  key,
  kind: 'upsert',
  receivedAt,
  buildStartedAt: receivedAt + 100,
  builtAt: receivedAt + 102,
  groups: 1,
  proxies: 1,
  types: {
    Cluster: { sentAt: receivedAt + 103, ackedAt: receivedAt + 600 },
    ClusterLoadAssignment: { sentAt: receivedAt + 104, ackedAt: receivedAt + 110 },
    Listener: { sentAt: receivedAt + 601, ackedAt: receivedAt + 620 },
  },
  completedAt: receivedAt + 620,
  ...extra,
});

describe('B5 setup breakdown', () => {
  it('splits each connected call into stages from its first upsert after the create', () => {
    const records = [call(1, 1000, 1650, { w1: { n: 5, firstMs: 650, lastMs: 900 } }), call(2, 2000, undefined)];
    const changes = [
      // An upsert of the same name from before the create (an earlier call of that name) is not this call's.
      change('default/call-1', 500),
      change('default/call-1', 1010),
      { ...change('default/call-1', 1010), kind: 'delete' as const, receivedAt: 1900 },
      change('default/call-2', 2010),
    ];
    const b = breakdown(records, changes);
    expect(b.calls).toBe(1);
    expect(b.stages['api']).toEqual({ p50: 10, p99: 10, n: 1 });
    expect(b.stages['queue']?.p50).toBe(100);
    expect(b.stages['build']?.p50).toBe(2);
    expect(b.stages['Cluster push']?.p50).toBe(1);
    expect(b.stages['Cluster ack']?.p50).toBe(497);
    expect(b.stages['Listener push']?.p50).toBe(499);
    expect(b.stages['Listener ack']?.p50).toBe(19);
    expect(b.stages['envoy→datagram']?.p50).toBe(20);
  });

  it('times envoy→datagram to the call\'s own worker, leaves out types a change did not alter', () => {
    // First datagrams went to w2 through the previous call's listener; the call ended on w1.
    const r = call(3, 1000, 1005, { w2: { n: 2, firstMs: 5, lastMs: 15 }, w1: { n: 9, firstMs: 700, lastMs: 1900 } });
    const c = change('default/call-3', 1008);
    delete c.types?.['ClusterLoadAssignment'];
    const b = breakdown([r], [c]);
    expect(b.stages['envoy→datagram']?.p50).toBe(1700 - (1008 + 620));
    expect(b.stages['ClusterLoadAssignment push']).toBeUndefined();
  });
});
