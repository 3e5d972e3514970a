/**
 * B5's breakdown of a call's setup: vsxds's /debug/changes entries matched with the rig's own
 * create and first-datagram times (epoch ms, one clock). No side effects, so a test can check it.
 */
import { ownFirstAt, quantile, type CallRecord } from '../test/support/calls.js';

/** One entry of vsxds's GET /debug/changes (newest last). */
export interface Change {
  key: string;
  kind: 'upsert' | 'delete';
  receivedAt: number;
  buildStartedAt?: number;
  builtAt?: number;
  groups?: number;
  proxies?: number;
  types?: Record<string, { sentAt?: number | null; ackedAt?: number | null }>;
  completedAt?: number | null;
}

export interface Breakdown {
  calls: number;
  /** Each stage's p50 / p99 in ms over the calls that have it. */
  stages: Record<string, { p50: number; p99: number; n: number }>;
}

export const TYPES = ['Cluster', 'ClusterLoadAssignment', 'Listener'] as const;

/** Where each connected call's setup went, from vsxds's change log and the rig's own times. */
export function breakdown(records: readonly CallRecord[], changes: Iterable<Change>): Breakdown {
  const upserts = new Map<string, Change[]>();
  for (const c of changes) {
    if (c.kind !== 'upsert') continue;
    const list = upserts.get(c.key) ?? [];
    list.push(c);
    upserts.set(c.key, list);
  }
  const samples: Record<string, number[]> = {};
  const add = (stage: string, from: number | null | undefined, to: number | null | undefined) => {
    if (from === undefined || to === undefined || from === null || to === null) return;
    (samples[stage] ??= []).push(to - from);
  };
  let calls = 0;
  for (const r of records) {
    if (r.firstAt === undefined) continue;
    // The first upsert vsxds received after the create was sent (1 ms of clock slack).
    const c = (upserts.get(`default/${r.name}`) ?? []).filter((x) => x.receivedAt >= r.createSentAt - 1).sort((a, b) => a.receivedAt - b.receivedAt)[0];
    if (!c) continue;
    calls += 1;
    add('api', r.createSentAt, c.receivedAt);
    add('queue', c.receivedAt, c.buildStartedAt);
    add('build', c.buildStartedAt, c.builtAt);
    for (const t of TYPES) {
      add(`${t} push`, c.builtAt, c.types?.[t]?.sentAt);
      add(`${t} ack`, c.types?.[t]?.sentAt, c.types?.[t]?.ackedAt);
    }
    // To the first datagram through the call's own listener: on a reused port the previous
    // call's listener may have forwarded earlier ones.
    add('envoy→datagram', c.types?.['Listener']?.ackedAt, ownFirstAt(r));
    // All of it after the API server: what vsxds and Envoy take, the part the API server's tail is not in.
    add('watch→datagram', c.receivedAt, ownFirstAt(r));
  }
  const stages: Breakdown['stages'] = {};
  for (const [k, xs] of Object.entries(samples)) stages[k] = { p50: quantile(xs, 0.5), p99: quantile(xs, 0.99), n: xs.length };
  return { calls, stages };
}

