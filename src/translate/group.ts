import { resolveConflicts, type Conflict } from '../model/conflicts.js';
import { type ClusterSpec, type Pod, type VirtualService } from '../model/types.js';
import type { NodeGroup } from '../xds/node-identity.js';
import type { ResourceInput, SnapshotInput } from '../xds/snapshot.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../xds/type-urls.js';
import { assignmentResource } from './assignment.js';
import { clusterResource } from './cluster.js';
import { listenerResource } from './listener.js';
import { podIndex } from './pod-index.js';
import { virtualServicesFor } from './select.js';

/** What one VirtualService gives one node group: the listeners it keeps, and the ones it lost. */
export interface Contribution {
  /** Sorted. */
  readonly listeners: readonly string[];
  readonly conflicts: readonly Conflict[];
}

export interface GroupTranslation {
  /** Listeners, clusters and assignments by type URL; all three types always present, each sorted by name. */
  readonly snapshot: SnapshotInput;
  /** By vsKey, sorted, for every VirtualService that selects the group (including those that kept nothing). */
  readonly contributions: ReadonlyMap<string, Contribution>;
}

/**
 * The Envoy resources for the proxies of one node group. `virtualServices` are the accepted
 * ones of every namespace; `pods` every known pod. Pure: the same input gives equal output,
 * and unchanged parts give the very same objects as the previous call. Both arrays are taken
 * as immutable: indexes over them are kept per array, for the other groups of the same build.
 */
export function translateGroup(group: NodeGroup, virtualServices: readonly VirtualService[], pods: readonly Pod[]): GroupTranslation {
  const { kept, conflicts } = resolveConflicts(virtualServicesFor(group, virtualServices));

  const listeners: ResourceInput[] = [];
  const clusters = new Map<string, ClusterSpec>();
  for (const specs of kept.values()) {
    for (const l of specs) {
      listeners.push(listenerResource(l));
      // Two listeners sharing a cluster define it identically (resolveConflicts made sure): the oldest's is used.
      if (!clusters.has(l.udp.cluster.name)) clusters.set(l.udp.cluster.name, l.udp.cluster);
    }
  }
  const index = podIndex(pods);
  const clusterInputs: ResourceInput[] = [];
  const assignmentInputs: ResourceInput[] = [];
  for (const spec of clusters.values()) {
    clusterInputs.push(clusterResource(spec));
    if (spec.service_discovery === 'eds') assignmentInputs.push(assignmentResource(spec, group.namespace, index));
  }

  const contributions = new Map<string, Contribution>();
  for (const key of [...kept.keys()].sort()) {
    contributions.set(key, {
      listeners: (kept.get(key) ?? []).map((l) => l.name).sort(),
      conflicts: conflicts.filter((c) => c.vs === key),
    });
  }
  return {
    snapshot: {
      [LISTENER_TYPE]: byName(listeners),
      [CLUSTER_TYPE]: byName(clusterInputs),
      [ENDPOINT_TYPE]: byName(assignmentInputs),
    },
    contributions,
  };
}

function byName(inputs: ResourceInput[]): ResourceInput[] {
  return inputs.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Every group's translation, by group key. */
export function translateAll(
  groups: readonly NodeGroup[],
  virtualServices: readonly VirtualService[],
  pods: readonly Pod[],
): Map<string, GroupTranslation> {
  const out = new Map<string, GroupTranslation>();
  for (const group of [...groups].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) {
    out.set(group.key, translateGroup(group, virtualServices, pods));
  }
  return out;
}

