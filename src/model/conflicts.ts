import { deepEqual } from './canonical.js';
import { vsKey, type ClusterSpec, type ListenerSpec, type VirtualService } from './types.js';

export type ConflictKind = 'ListenerName' | 'Port' | 'ClusterName';

/** A listener of one VirtualService that a proxy cannot hold because an older one has it. */
export interface Conflict {
  /** vsKey of the VirtualService whose listener is dropped. */
  readonly vs: string;
  readonly listener: string;
  readonly kind: ConflictKind;
  /** vsKey of the older VirtualService that keeps it. */
  readonly winner: string;
  readonly message: string;
}

export interface ConflictResolution {
  /** Every input VirtualService, with the listeners it keeps (possibly none), in spec order. */
  readonly kept: ReadonlyMap<string, readonly ListenerSpec[]>;
  /** In the order the losers were found: oldest VirtualService first, then spec order. */
  readonly conflicts: readonly Conflict[];
}

/**
 * Oldest first, by creationTimestamp, then namespace/name so equal timestamps (one-second
 * resolution) still give one order; a VirtualService without a timestamp (not yet stored) is
 * the youngest.
 */
export function compareAge(a: VirtualService, b: VirtualService): number {
  const ta = timeOf(a);
  const tb = timeOf(b);
  if (ta !== tb) return ta - tb;
  const ka = vsKey(a);
  const kb = vsKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

// Sorting compares each VirtualService many times: parse its timestamp once.
const times = new WeakMap<VirtualService, number>();

function timeOf(vs: VirtualService): number {
  const known = times.get(vs);
  if (known !== undefined) return known;
  const parsed = vs.metadata.creationTimestamp === undefined ? NaN : Date.parse(vs.metadata.creationTimestamp);
  const t = Number.isNaN(parsed) ? Number.POSITIVE_INFINITY : parsed;
  times.set(vs, t);
  return t;
}

interface Holder {
  readonly vs: string;
  readonly listener: ListenerSpec;
}

interface ClusterHolder extends Holder {
  readonly cluster: ClusterSpec;
  /** Kept listeners that use this cluster name. */
  users: number;
}

/**
 * The names and ports the listeners of one node group hold, kept so that a VirtualService
 * younger than all the others can be added, and one that won no conflict removed, without
 * resolving everything again: one VirtualService per call makes those the common changes.
 */
export class ConflictState {
  private readonly byName = new Map<string, Holder>();
  private readonly byPort = new Map<number, Holder>();
  private readonly byCluster = new Map<string, ClusterHolder>();
  /** Conflicts each VirtualService won (it is the `winner`), by key. */
  private readonly wins = new Map<string, number>();
  /** The youngest VirtualService ever added: a newcomer younger than it is younger than all. */
  private youngest?: VirtualService;

  /**
   * Adds a VirtualService younger than every one added before: its listeners that collide lose.
   * One that is not the youngest is added only when age decides nothing: no conflict is held
   * and none of its listener names, ports or cluster names is taken (the API server stamps
   * creationTimestamp before it stores an object, so two calls created together may reach a
   * watch out of age order). Returns undefined (and changes nothing) otherwise.
   */
  addYoungest(vs: VirtualService): { readonly keep: ListenerSpec[]; readonly conflicts: Conflict[] } | undefined {
    if (this.youngest && compareAge(vs, this.youngest) <= 0) {
      if (!this.takesNothingHeld(vs)) return undefined;
    } else {
      this.youngest = vs;
    }
    const key = vsKey(vs);
    const keep: ListenerSpec[] = [];
    const conflicts: Conflict[] = [];
    for (const listener of vs.spec.listeners) {
      const cluster = listener.udp.cluster;
      const sameName = this.byName.get(listener.name);
      const samePort = this.byPort.get(listener.udp.port);
      const sameCluster = this.byCluster.get(cluster.name);
      const clusterClash = sameCluster !== undefined && !deepEqual(sameCluster.cluster, cluster);
      const clash: [ConflictKind, Holder, string] | undefined = sameName
        ? ['ListenerName', sameName, `listener name "${listener.name}"`]
        : samePort
          ? ['Port', samePort, `port ${listener.udp.port}`]
          : clusterClash
            ? ['ClusterName', sameCluster, `cluster "${cluster.name}", which it defines differently`]
            : undefined;
      if (clash) {
        const [kind, winner, what] = clash;
        conflicts.push({
          vs: key,
          listener: listener.name,
          kind,
          winner: winner.vs,
          message: `listener "${listener.name}" (UDP port ${listener.udp.port}) conflicts with VirtualService ${winner.vs} on ${what}; the oldest VirtualService wins`,
        });
        this.wins.set(winner.vs, (this.wins.get(winner.vs) ?? 0) + 1);
        continue;
      }
      const holder = { vs: key, listener };
      keep.push(listener);
      this.byName.set(listener.name, holder);
      this.byPort.set(listener.udp.port, holder);
      if (sameCluster) sameCluster.users += 1;
      else this.byCluster.set(cluster.name, { ...holder, cluster, users: 1 });
    }
    return { keep, conflicts };
  }

  /** No conflict is held, and `vs`'s listeners touch no held name, port or cluster name, nor one another's. */
  private takesNothingHeld(vs: VirtualService): boolean {
    if (this.wins.size > 0) return false;
    const names = new Set<string>();
    const ports = new Set<number>();
    const clusters = new Set<string>();
    for (const l of vs.spec.listeners) {
      const cluster = l.udp.cluster.name;
      if (this.byName.has(l.name) || this.byPort.has(l.udp.port) || this.byCluster.has(cluster)) return false;
      if (names.has(l.name) || ports.has(l.udp.port) || clusters.has(cluster)) return false;
      names.add(l.name);
      ports.add(l.udp.port);
      clusters.add(cluster);
    }
    return true;
  }

  /**
   * Removes a VirtualService's kept listeners. Returns false (and changes nothing) when that
   * could change who wins elsewhere: it won a conflict, or holds a cluster name others use too.
   */
  remove(key: string, kept: readonly ListenerSpec[], conflicts: readonly Conflict[]): boolean {
    if ((this.wins.get(key) ?? 0) > 0) return false;
    for (const l of kept) {
      const holder = this.byCluster.get(l.udp.cluster.name);
      if (holder && holder.vs === key && holder.users > 1) return false;
    }
    for (const l of kept) {
      this.byName.delete(l.name);
      this.byPort.delete(l.udp.port);
      const holder = this.byCluster.get(l.udp.cluster.name);
      if (holder && --holder.users === 0) this.byCluster.delete(l.udp.cluster.name);
    }
    for (const c of conflicts) {
      const n = (this.wins.get(c.winner) ?? 0) - 1;
      if (n > 0) this.wins.set(c.winner, n);
      else this.wins.delete(c.winner);
    }
    return true;
  }
}

/**
 * Decides which listeners of the VirtualServices that apply to one node group a proxy of
 * that group gets. An Envoy holds one listener per name and per port, and one cluster per
 * name; a later VirtualService loses only the listener that collides, not its others. Two
 * listeners may use one cluster name when they define it identically. `state` is what the
 * resolution leaves, for adding and removing VirtualServices later (ConflictState).
 */
export function resolveConflicts(virtualServices: readonly VirtualService[]): ConflictResolution & { readonly state: ConflictState } {
  const state = new ConflictState();
  const kept = new Map<string, ListenerSpec[]>();
  const conflicts: Conflict[] = [];
  for (const vs of [...virtualServices].sort(compareAge)) {
    const added = state.addYoungest(vs) as NonNullable<ReturnType<ConflictState['addYoungest']>>;
    kept.set(vsKey(vs), added.keep);
    conflicts.push(...added.conflicts);
  }
  return { kept, conflicts, state };
}
