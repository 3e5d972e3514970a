/** B5's setup breakdown (bench/calls-breakdown.ts) on made-up change logs. */
import { describe, expect, it } from 'vitest';
import { breakdown, type Change } from '../bench/calls-breakdown.js';
import { summarize, type CallRecord } from './support/calls.js';

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
    sessions: new Map(),
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
    expect(b.stages['watch→datagram']?.p50).toBe(1650 - 1010);
  });

  it('times envoy→datagram to the call\'s own worker, leaves out types a change did not alter', () => {
    // First datagrams went to w2 through the previous call's listener; the call ended on w1.
    const r = { ...call(3, 1000, 1005, { w2: { n: 2, firstMs: 5, lastMs: 15 }, w1: { n: 9, firstMs: 700, lastMs: 1900 } }), reusedPort: true };
    const c = change('default/call-3', 1008);
    delete c.types?.['ClusterLoadAssignment'];
    const b = breakdown([r], [c]);
    expect(b.stages['envoy→datagram']?.p50).toBe(1700 - (1008 + 620));
    expect(b.stages['ClusterLoadAssignment push']).toBeUndefined();
  });
});

describe('calls summary: loss before and after a call runs on its own listener', () => {
  /** A call sending every 100 ms from t=0 (seq 0..n-1); `lostSeqs` never arrive, the others 1 ms after sending. */
  function sending(index: number, reusedPort: boolean, n: number, lostSeqs: number[], worker = 'w1'): CallRecord {
    const r = call(index, 0, 1, { [worker]: { n: n - lostSeqs.length, firstMs: 1, lastMs: (n - 1) * 100 + 1 } });
    const arrived = new Float64Array(1024);
    for (let seq = 0; seq < n; seq++) {
      r.sentAt.push(seq * 100);
      if (!lostSeqs.includes(seq)) arrived[seq] = seq * 100 + 1;
    }
    r.arrived.push(arrived);
    r.seq = n;
    return { ...r, reusedPort };
  }

  it('a silence early on a reused port is the handover, not loss of an established call', () => {
    // Seqs 3-7 lost: the previous call's listener forwarded 0-2, this call's own took over at 8.
    const s = summarize([sending(1, true, 30, [3, 4, 5, 6, 7])]);
    expect(s.established.lost).toBe(0);
    expect(s.handoverLoss).toEqual({ calls: 1, lost: 5 });
    expect(s.ownSetupMs.p50).toBe(801);
  });

  it('on a fresh port the same silence is loss', () => {
    const s = summarize([sending(1, false, 30, [3, 4, 5, 6, 7])]);
    expect(s.established).toEqual({ sent: 29, lost: 5, callsWithLoss: 1 });
    expect(s.handoverLoss.lost).toBe(0);
  });

  it('a single lost datagram on a reused port is loss', () => {
    const s = summarize([sending(1, true, 30, [12])]);
    expect(s.established.lost).toBe(1);
  });

  it('on a reused port, a later Envoy session on the same worker with no silence is the call\'s own listener', () => {
    // The previous call's listener forwarded seqs 0-3 to w1; the call's own listener took over at
    // seq 4 on the same worker without a gap: only the new session shows it.
    const r = { ...sending(1, true, 30, [8]), newSessionAt: 401 };
    const s = summarize([r]);
    expect(s.ownSetupMs.p50).toBe(401);
    expect(s.setupMs.p50).toBe(1);
    expect(s.established).toEqual({ sent: 25, lost: 1, callsWithLoss: 1 });
    expect(summarize([{ ...r, newSessionAt: undefined }]).ownSetupMs.p50).toBe(1);
  });
});
