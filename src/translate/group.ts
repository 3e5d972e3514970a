import { resolveConflicts, type Conflict } from '../model/conflicts.js';
import { type ClusterSpec, type Pod, type VirtualService } from '../model/types.js';
import type { NodeGroup } from '../xds/node-identity.js';
import type { ResourceInput, SnapshotInput } from '../xds/snapshot.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../xds/type-urls.js';
import { assignmentResource } from './assignment.js';
import { clusterResource, envoyClusterSpec } from './cluster.js';
import { listenerResource } from './listener.js';
import { podIndex, type PodIndex } from './pod-index.js';
import { virtualServicesFor } from './select.js';

/** How a translation is done; the same for every group of a server. */
export interface TranslateOptions {
  /** One Envoy cluster for all user clusters of the same content (see envoyClusterSpec). */
  readonly shareClusters: boolean;
}

export const DEFAULT_TRANSLATE_OPTIONS: TranslateOptions = { shareClusters: true };

/** What one VirtualService gives one node group: the listeners it keeps, and the ones it lost. */
export interface Contribution {
  /** Sorted. */
  readonly listeners: readonly string[];
  /** Its clusters' names, user's → Envoy's, sorted by the user's: where operators find them in Envoy. */
  readonly clusters: ReadonlyMap<string, string>;
  readonly conflicts: readonly Conflict[];
}

export interface GroupTranslation {
  /** Listeners, clusters and assignments by type URL; all three types always present, each sorted by name. */
  readonly snapshot: SnapshotInput;
  /** By vsKey, sorted, for every VirtualService that selects the group (including those that kept nothing). */
  readonly contributions: ReadonlyMap<string, Contribution>;
  /** The EDS clusters whose assignments the snapshot carries, by name: what `reassign` recomputes. */
  readonly edsClusters: ReadonlyMap<string, ClusterSpec>;
}

/**
 * The Envoy resources for the proxies of one node group. `virtualServices` are the accepted
 * ones of every namespace; `pods` every known pod. Pure: the same input gives equal output,
 * and unchanged parts give the very same objects as the previous call. Both arrays are taken
 * as immutable: indexes over them are kept per array, for the other groups of the same build.
 */
export function translateGroup(
  group: NodeGroup,
  virtualServices: readonly VirtualService[],
  pods: readonly Pod[],
  options: TranslateOptions = DEFAULT_TRANSLATE_OPTIONS,
): GroupTranslation {
  return translateSelected(group, virtualServicesFor(group, virtualServices), podIndex(pods), undefined, options);
}

/**
 * translateGroup for callers that already know which VirtualServices select the group (in
 * any order) and keep their own pod index: the pipeline, which rebuilds one group without
 * looking at the others. With `previous`, the group's last translation, an EDS cluster whose
 * spec is the very same object keeps its assignment without selecting pods again: the caller
 * promises that `previous` is up to date with `index` (it `reassign`ed what pods changed).
 */
export function translateSelected(
  group: NodeGroup,
  selected: readonly VirtualService[],
  index: PodIndex,
  previous?: GroupTranslation,
  options: TranslateOptions = DEFAULT_TRANSLATE_OPTIONS,
): GroupTranslation {
  const previousAssignments = previous ? new Map((previous.snapshot[ENDPOINT_TYPE] ?? []).map((r) => [r.name, r])) : undefined;
  const { kept, conflicts } = resolveConflicts(selected);

  const listeners: ResourceInput[] = [];
  const clusters = new Map<string, ClusterSpec>();
  const contributions = new Map<string, Contribution>();
  for (const key of [...kept.keys()].sort()) {
    const specs = kept.get(key) ?? [];
    const names = new Map<string, string>();
    for (const l of specs) {
      // Two listeners sharing a user cluster define it identically (resolveConflicts made sure): the oldest's is used.
      const cluster = envoyClusterSpec(l.udp.cluster, options.shareClusters);
      listeners.push(listenerResource(l, cluster.name));
      if (!clusters.has(cluster.name)) clusters.set(cluster.name, cluster);
      names.set(l.udp.cluster.name, cluster.name);
    }
    contributions.set(key, {
      listeners: specs.map((l) => l.name).sort(),
      clusters: new Map([...names].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
      conflicts: conflicts.filter((c) => c.vs === key),
    });
  }
  const clusterInputs: ResourceInput[] = [];
  const assignmentInputs: ResourceInput[] = [];
  const edsClusters = new Map<string, ClusterSpec>();
  for (const spec of clusters.values()) {
    clusterInputs.push(clusterResource(spec));
    if (spec.service_discovery === 'eds') {
      const kept = previous?.edsClusters.get(spec.name) === spec ? previousAssignments?.get(spec.name) : undefined;
      assignmentInputs.push(kept ?? assignmentResource(spec, group.namespace, index));
      edsClusters.set(spec.name, spec);
    }
  }
  return {
    snapshot: {
      [LISTENER_TYPE]: byName(listeners),
      [CLUSTER_TYPE]: byName(clusterInputs),
      [ENDPOINT_TYPE]: byName(assignmentInputs),
    },
    contributions,
    edsClusters,
  };
}

/**
 * The translation after pods changed: the assignments of the named EDS clusters recomputed
 * against `index`, everything else the very same objects. Returns `translation` itself when
 * none of those assignments changed.
 */
export function reassign(translation: GroupTranslation, group: NodeGroup, clusterNames: Iterable<string>, index: PodIndex): GroupTranslation {
  const replaced = new Map<string, ResourceInput>();
  for (const name of clusterNames) {
    const spec = translation.edsClusters.get(name);
    if (spec) replaced.set(name, assignmentResource(spec, group.namespace, index));
  }
  const current = translation.snapshot[ENDPOINT_TYPE] ?? [];
  if (current.every((r) => (replaced.get(r.name) ?? r) === r)) return translation;
  return {
    ...translation,
    snapshot: { ...translation.snapshot, [ENDPOINT_TYPE]: current.map((r) => replaced.get(r.name) ?? r) },
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
  options: TranslateOptions = DEFAULT_TRANSLATE_OPTIONS,
): Map<string, GroupTranslation> {
  const out = new Map<string, GroupTranslation>();
  for (const group of [...groups].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) {
    out.set(group.key, translateGroup(group, virtualServices, pods, options));
  }
  return out;
}

