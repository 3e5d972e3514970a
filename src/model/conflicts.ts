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

/**
 * Decides which listeners of the VirtualServices that apply to one node group a proxy of
 * that group gets. An Envoy holds one listener per name and per port, and one cluster per
 * name; a later VirtualService loses only the listener that collides, not its others. Two
 * listeners may use one cluster name when they define the cluster identically.
 */
export function resolveConflicts(virtualServices: readonly VirtualService[]): ConflictResolution {
  const byName = new Map<string, Holder>();
  const byPort = new Map<number, Holder>();
  const byCluster = new Map<string, Holder & { readonly cluster: ClusterSpec }>();
  const kept = new Map<string, ListenerSpec[]>();
  const conflicts: Conflict[] = [];

  for (const vs of [...virtualServices].sort(compareAge)) {
    const key = vsKey(vs);
    const keep: ListenerSpec[] = [];
    for (const listener of vs.spec.listeners) {
      const cluster = listener.udp.cluster;
      const sameName = byName.get(listener.name);
      const samePort = byPort.get(listener.udp.port);
      const sameCluster = byCluster.get(cluster.name);
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
        continue;
      }
      const holder = { vs: key, listener };
      keep.push(listener);
      byName.set(listener.name, holder);
      byPort.set(listener.udp.port, holder);
      if (!sameCluster) byCluster.set(cluster.name, { ...holder, cluster });
    }
    kept.set(key, keep);
  }
  return { kept, conflicts };
}
