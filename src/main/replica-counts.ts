import type { Logger } from 'pino';
import type { VirtualService } from '../model/types.js';
import type { ReplicaExchange } from '../sources/source.js';
import { appliesTo } from '../translate/index.js';
import { nodeGroup, type NodeGroup } from '../xds/node-identity.js';
import type { ProxyInfo } from '../xds/status-registry.js';

/** What the proxies say of one VirtualService's configuration. */
export interface ProxyTally {
  readonly matched: number;
  readonly synced: number;
  readonly nacked: number;
  /** The first rejection's message, when one blames this VirtualService. */
  readonly nackMessage?: string;
}

/**
 * One replica's contribution, as written to its object:
 * - `groups`: `[namespace, labels, proxies]` per node group with proxies connected to it, so the
 *   leader can count them for a VirtualService the replica has not reported on yet (new, or at
 *   another generation), as matched and not synced;
 * - `vs`: per VirtualService its proxies match, `[generation, matched, synced, nacked]`, plus the
 *   index of its NACK message in `messages`. Counts at another generation than the leader's are
 *   about other configuration and are not taken.
 * At 2,000 VirtualServices of 25-character names that is about 35 bytes each, 70 KB, and 100 node
 * groups add about 5 KB, where a ConfigMap holds 1 MiB.
 */
interface Wire {
  readonly v: 1;
  readonly groups: ReadonlyArray<readonly [string, Record<string, string>, number]>;
  readonly messages: readonly string[];
  readonly vs: Record<string, readonly number[]>;
}

/** A contribution past this size keeps only its groups (the leader counts those proxies as not synced). */
const MAX_BYTES = 900_000;
const MAX_MESSAGES = 256;
const MAX_MESSAGE_CHARS = 1024;

/** This replica's own tallies, by VirtualService key, with the generation they are about. */
export class LocalTallies {
  private readonly byKey = new Map<string, { readonly generation: number; readonly tally: ProxyTally }>();
  private warnedTooLarge = false;

  constructor(private readonly log: Logger) {}

  set(key: string, generation: number | undefined, tally: ProxyTally | undefined): void {
    if (!tally || tally.matched === 0) this.byKey.delete(key);
    else this.byKey.set(key, { generation: generation ?? 0, tally });
  }

  delete(key: string): void {
    this.byKey.delete(key);
  }

  /** The contribution to publish: the proxies connected here, by group, and the tallies. */
  encode(proxies: readonly ProxyInfo[]): string {
    const groups = new Map<string, [string, Record<string, string>, number]>();
    for (const p of proxies) {
      if (!p.group) continue;
      const entry = groups.get(p.group.key);
      if (entry) entry[2] += 1;
      else groups.set(p.group.key, [p.group.namespace, { ...p.group.labels }, 1]);
    }
    const messages: string[] = [];
    const messageIndex = new Map<string, number>();
    const vs: Record<string, number[]> = {};
    for (const [key, { generation, tally }] of [...this.byKey].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const counts = [generation, tally.matched, tally.synced, tally.nacked];
      if (tally.nackMessage !== undefined) {
        const message = tally.nackMessage.slice(0, MAX_MESSAGE_CHARS);
        let i = messageIndex.get(message);
        if (i === undefined && messages.length < MAX_MESSAGES) messageIndex.set(message, (i = messages.push(message) - 1));
        counts.push(i ?? -1);
      }
      vs[key] = counts;
    }
    const wire: Wire = { v: 1, groups: [...groups.values()], messages, vs };
    const text = JSON.stringify(wire);
    if (Buffer.byteLength(text) <= MAX_BYTES) return text;
    if (!this.warnedTooLarge) {
      this.warnedTooLarge = true;
      this.log.warn({ virtualServices: this.byKey.size, bytes: Buffer.byteLength(text) }, 'replica status: the per-VirtualService counts do not fit one ConfigMap; publishing only the proxies per node group (the leader counts them as matched, not synced)');
    }
    return JSON.stringify({ ...wire, messages: [], vs: {} });
  }
}

interface Contribution {
  readonly groups: ReadonlyArray<{ readonly group: NodeGroup; readonly proxies: number }>;
  readonly messages: readonly string[];
  readonly vs: ReadonlyMap<string, readonly number[]>;
  /** Proxies of `groups` a VirtualService selects, remembered per VirtualService object. */
  readonly selected: WeakMap<VirtualService, number>;
}

/** The other live replicas' contributions, parsed once per change, and what they add to a VirtualService. */
export class PeerTallies {
  private contributions = new Map<string, { readonly payload: string; readonly contribution?: Contribution }>();

  constructor(
    private readonly exchange: ReplicaExchange,
    private readonly log: Logger,
  ) {}

  /** Parses what changed since the last call; a contribution that does not parse is reported and counts nothing. */
  refresh(): void {
    const next = new Map<string, { readonly payload: string; readonly contribution?: Contribution }>();
    for (const [replica, payload] of this.exchange.peers()) {
      const before = this.contributions.get(replica);
      if (before?.payload === payload) {
        next.set(replica, before);
        continue;
      }
      const parsed = parseContribution(payload);
      if (typeof parsed === 'string') this.log.warn({ replica, err: parsed }, 'replica status: ignoring a replica contribution that does not parse');
      next.set(replica, { payload, contribution: typeof parsed === 'string' ? undefined : parsed });
    }
    this.contributions = next;
  }

  /** What the other replicas' proxies say of this VirtualService (at this generation), if they have any it selects. */
  tally(key: string, vs: VirtualService, generation: number | undefined): ProxyTally | undefined {
    let matched = 0;
    let synced = 0;
    let nacked = 0;
    let nackMessage: string | undefined;
    for (const { contribution: c } of this.contributions.values()) {
      if (!c) continue;
      const counts = c.vs.get(key);
      if (counts && counts[0] === (generation ?? 0)) {
        matched += counts[1] as number;
        synced += counts[2] as number;
        nacked += counts[3] as number;
        if (counts.length > 4 && nackMessage === undefined) nackMessage = c.messages[counts[4] as number] ?? 'a proxy on another replica rejected the configuration (its message did not fit the replica status object)';
        continue;
      }
      let proxies = c.selected.get(vs);
      if (proxies === undefined) {
        proxies = 0;
        for (const g of c.groups) if (appliesTo(vs, g.group)) proxies += g.proxies;
        c.selected.set(vs, proxies);
      }
      matched += proxies;
    }
    if (matched === 0) return undefined;
    return { matched, synced, nacked, ...(nackMessage !== undefined ? { nackMessage } : {}) };
  }
}

/** A contribution as another replica wrote it, checked field by field; a string says what is wrong. */
export function parseContribution(text: string): Contribution | string {
  let wire: unknown;
  try {
    wire = JSON.parse(text);
  } catch (err) {
    return `not JSON: ${(err as Error).message}`;
  }
  const w = wire as Partial<Wire> | null;
  if (typeof w !== 'object' || w === null || w.v !== 1) return 'not a version 1 contribution';
  if (!Array.isArray(w.groups) || !Array.isArray(w.messages) || typeof w.vs !== 'object' || w.vs === null) return 'groups, messages or vs missing';
  const count = (n: unknown) => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
  const groups: Array<{ group: NodeGroup; proxies: number }> = [];
  for (const g of w.groups as unknown[]) {
    if (!Array.isArray(g) || g.length !== 3) return 'a group is not [namespace, labels, proxies]';
    const [namespace, labels, proxies] = g as [unknown, unknown, unknown];
    if (typeof namespace !== 'string' || typeof labels !== 'object' || labels === null || Array.isArray(labels) || !count(proxies)) return 'a group is not [namespace, labels, proxies]';
    if (!Object.values(labels).every((v) => typeof v === 'string')) return `a label of a group in ${namespace} is not a string`;
    groups.push({ group: nodeGroup(namespace, labels as Record<string, string>), proxies: proxies as number });
  }
  if (!(w.messages as unknown[]).every((m) => typeof m === 'string')) return 'a message is not a string';
  const vs = new Map<string, readonly number[]>();
  for (const [key, counts] of Object.entries(w.vs as Record<string, unknown>)) {
    if (!Array.isArray(counts) || counts.length < 4 || counts.length > 5 || !counts.slice(0, 4).every(count)) return `the counts of ${key} are not [generation, matched, synced, nacked, message?]`;
    const [, matched, synced, nacked] = counts as number[];
    if ((synced as number) > (matched as number) || (nacked as number) > (matched as number)) return `the counts of ${key} say more proxies synced or nacked than matched`;
    if (counts.length === 5 && !(Number.isSafeInteger(counts[4]) && (counts[4] as number) >= -1)) return `the message index of ${key} is not an index`;
    vs.set(key, counts as number[]);
  }
  return { groups, messages: w.messages as string[], vs, selected: new WeakMap() };
}
