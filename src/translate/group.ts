import { compareAge, resolveConflicts, type Conflict, type ConflictState } from '../model/conflicts.js';
import { vsKey, type ClusterSpec, type ListenerSpec, type Pod, type VirtualService } from '../model/types.js';
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
  /** The session limit of each of its clusters that sets max_sessions, by the user's name, sorted; absent when none does. */
  readonly sessionLimits?: ReadonlyMap<string, number>;
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
  selected: readonly VirtualService[] | ReadonlyMap<string, VirtualService>,
  index: PodIndex,
  previous?: GroupTranslation,
  options: TranslateOptions = DEFAULT_TRANSLATE_OPTIONS,
  /**
   * Keys of `selected` (or gone from it) that may differ since `previous`, when the caller
   * knows: the others are taken to be the same. Without it every key is compared.
   */
  changedKeys?: Iterable<string>,
): GroupTranslation {
  if (previous && selected instanceof Map) {
    const extended = extend(group, selected as ReadonlyMap<string, VirtualService>, index, previous, options, changedKeys);
    if (extended) return extended;
    return translateWhole(group, [...selected.values()], index, previous, options);
  }
  const list = selected instanceof Map ? [...(selected as ReadonlyMap<string, VirtualService>).values()] : (selected as readonly VirtualService[]);
  const keyed = previous && new Map(list.map((vs) => [vsKey(vs), vs]));
  // Two VirtualServices of one key (not from a source, but possible here) are translated whole.
  const extended = previous && keyed && keyed.size === list.length ? extend(group, keyed, index, previous, options) : undefined;
  return extended ?? translateWhole(group, list, index, previous, options);
}

/**
 * What a translation leaves for the next one of the same group to start from, when only a few
 * VirtualServices came or went. It is changed in place by that next translation, so only the
 * latest translation of a line owns it (`owner`); an older one is translated whole.
 */
interface Continuation {
  owner?: GroupTranslation;
  readonly shareClusters: boolean;
  readonly conflicts: ConflictState;
  /** The selected VirtualServices, by key. */
  readonly vss: Map<string, VirtualService>;
  /** What each kept and lost, by key. */
  readonly kept: Map<string, readonly ListenerSpec[]>;
  readonly lost: Map<string, readonly Conflict[]>;
  /** Kept listeners using each Envoy cluster, by its name. */
  readonly clusterUsers: Map<string, number>;
}

const continuations = new WeakMap<GroupTranslation, Continuation>();

/** More changed VirtualServices than this in one translation: translating the group whole is as cheap. */
const MAX_EXTENDED = 64;

function translateWhole(group: NodeGroup, selected: readonly VirtualService[], index: PodIndex, previous: GroupTranslation | undefined, options: TranslateOptions): GroupTranslation {
  const previousAssignments = previous ? new Map((previous.snapshot[ENDPOINT_TYPE] ?? []).map((r) => [r.name, r])) : undefined;
  const { kept, conflicts, state } = resolveConflicts(selected);
  const lost = new Map<string, Conflict[]>();
  for (const c of conflicts) {
    const list = lost.get(c.vs);
    if (list) list.push(c);
    else lost.set(c.vs, [c]);
  }

  const listeners: ResourceInput[] = [];
  const clusters = new Map<string, ClusterSpec>();
  const clusterUsers = new Map<string, number>();
  const contributions = new Map<string, Contribution>();
  for (const key of [...kept.keys()].sort()) {
    const specs = kept.get(key) ?? [];
    for (const l of specs) {
      // Two listeners sharing a user cluster define it identically (resolveConflicts made sure): the first's is used.
      const cluster = envoyClusterSpec(l.udp.cluster, options.shareClusters);
      listeners.push(listenerResource(l, cluster.name));
      if (!clusters.has(cluster.name)) clusters.set(cluster.name, cluster);
      clusterUsers.set(cluster.name, (clusterUsers.get(cluster.name) ?? 0) + 1);
    }
    const made = contribution(specs, lost.get(key) ?? [], options);
    // The previous object when nothing in it changed: what reads contributions (the status
    // reporter) tells a changed one by identity, and a whole translation changes few.
    const before = previous?.contributions.get(key);
    contributions.set(key, before && sameContribution(before, made) ? before : made);
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
  const translation: GroupTranslation = {
    snapshot: {
      [LISTENER_TYPE]: byName(listeners),
      [CLUSTER_TYPE]: byName(clusterInputs),
      [ENDPOINT_TYPE]: byName(assignmentInputs),
    },
    contributions,
    edsClusters,
  };
  continuations.set(translation, {
    owner: translation,
    shareClusters: options.shareClusters,
    conflicts: state,
    vss: new Map(selected.map((vs) => [vsKey(vs), vs])),
    // resolveConflicts made it, and nothing else holds it.
    kept: kept as Map<string, readonly ListenerSpec[]>,
    lost,
    clusterUsers,
  });
  return translation;
}

function contribution(kept: readonly ListenerSpec[], lost: readonly Conflict[], options: TranslateOptions): Contribution {
  const names = new Map<string, string>();
  const limits = new Map<string, number>();
  for (const l of kept) {
    names.set(l.udp.cluster.name, envoyClusterSpec(l.udp.cluster, options.shareClusters).name);
    if (l.udp.cluster.max_sessions !== undefined) limits.set(l.udp.cluster.name, l.udp.cluster.max_sessions);
  }
  return {
    listeners: kept.map((l) => l.name).sort(),
    clusters: sortedByKey(names),
    ...(limits.size > 0 ? { sessionLimits: sortedByKey(limits) } : {}),
    conflicts: lost,
  };
}

function sameContribution(a: Contribution, b: Contribution): boolean {
  const sameMap = <V>(x: ReadonlyMap<string, V> | undefined, y: ReadonlyMap<string, V> | undefined) => {
    if (x === undefined || y === undefined) return x === y;
    if (x.size !== y.size) return false;
    for (const [k, v] of x) if (y.get(k) !== v) return false;
    return true;
  };
  return (
    a.listeners.length === b.listeners.length &&
    a.listeners.every((name, i) => name === b.listeners[i]) &&
    sameMap(a.clusters, b.clusters) &&
    sameMap(a.sessionLimits, b.sessionLimits) &&
    a.conflicts.length === b.conflicts.length &&
    a.conflicts.every((c, i) => {
      const d = b.conflicts[i] as Conflict;
      return c.vs === d.vs && c.listener === d.listener && c.kind === d.kind && c.winner === d.winner && c.message === d.message;
    })
  );
}

function sortedByKey<V>(map: ReadonlyMap<string, V>): Map<string, V> {
  return new Map([...map].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * `previous` with the VirtualServices that went taken out and those that came added, when that
 * gives what translating the group whole would (see ConflictState): the newcomers are younger
 * than every VirtualService before them, and those gone won no conflict. Its cost follows the
 * change, not the group's size, which is what one VirtualService per call needs. Undefined when
 * the group must be translated whole.
 */
function extend(
  group: NodeGroup,
  selected: ReadonlyMap<string, VirtualService>,
  index: PodIndex,
  previous: GroupTranslation,
  options: TranslateOptions,
  changedKeys?: Iterable<string>,
): GroupTranslation | undefined {
  const c = continuations.get(previous);
  if (!c || c.owner !== previous || c.shareClusters !== options.shareClusters) return undefined;
  let removed: string[] = [];
  let added: VirtualService[] = [];
  if (changedKeys) {
    for (const key of new Set(changedKeys)) {
      const vs = selected.get(key);
      const old = c.vss.get(key);
      if (old === vs) continue;
      if (old) removed.push(key);
      if (vs) added.push(vs);
    }
  }
  // Without the keys, or when they do not add up to `selected`, every key is compared.
  if (!changedKeys || selected.size - added.length !== c.vss.size - removed.length) {
    removed = [];
    added = [];
    for (const [key, vs] of selected) {
      const old = c.vss.get(key);
      if (old === vs) continue;
      if (old) removed.push(key);
      added.push(vs);
    }
    // Some of what it had is not selected any more (the unchanged ones are selected.size - added.length).
    if (selected.size - added.length !== c.vss.size - removed.length) {
      for (const key of c.vss.keys()) if (!selected.has(key)) removed.push(key);
    }
  }
  if (removed.length === 0 && added.length === 0) return previous;
  if (removed.length + added.length > MAX_EXTENDED) return undefined;
  // From here on the continuation is changed in place: on any way out it is dropped.
  c.owner = undefined;

  const snapshot = previous.snapshot;
  const listeners = [...(snapshot[LISTENER_TYPE] ?? [])];
  const clusters = [...(snapshot[CLUSTER_TYPE] ?? [])];
  const assignments = [...(snapshot[ENDPOINT_TYPE] ?? [])];
  const contributions = new Map(previous.contributions);
  const edsClusters = new Map(previous.edsClusters);
  /** Assignments of clusters this change dropped: one it brings back keeps its assignment. */
  const dropped = new Map<string, { readonly spec: ClusterSpec; readonly assignment?: ResourceInput }>();

  for (const key of removed) {
    const kept = c.kept.get(key) ?? [];
    if (!c.conflicts.remove(key, kept, c.lost.get(key) ?? [])) return undefined;
    for (const l of kept) {
      removeByName(listeners, l.name);
      const cluster = envoyClusterSpec(l.udp.cluster, options.shareClusters);
      const users = (c.clusterUsers.get(cluster.name) ?? 0) - 1;
      if (users > 0) {
        c.clusterUsers.set(cluster.name, users);
        continue;
      }
      c.clusterUsers.delete(cluster.name);
      removeByName(clusters, cluster.name);
      dropped.set(cluster.name, { spec: edsClusters.get(cluster.name) ?? cluster, assignment: removeByName(assignments, cluster.name) });
      edsClusters.delete(cluster.name);
    }
    c.vss.delete(key);
    c.kept.delete(key);
    c.lost.delete(key);
    contributions.delete(key);
  }

  for (const vs of added.sort(compareAge)) {
    const result = c.conflicts.addYoungest(vs);
    if (!result) return undefined;
    const key = vsKey(vs);
    for (const l of result.keep) {
      const cluster = envoyClusterSpec(l.udp.cluster, options.shareClusters);
      insertByName(listeners, listenerResource(l, cluster.name));
      const users = (c.clusterUsers.get(cluster.name) ?? 0) + 1;
      c.clusterUsers.set(cluster.name, users);
      if (users > 1) continue;
      insertByName(clusters, clusterResource(cluster));
      if (cluster.service_discovery === 'eds') {
        const back = dropped.get(cluster.name);
        insertByName(assignments, (back?.spec === cluster ? back.assignment : undefined) ?? assignmentResource(cluster, group.namespace, index));
        edsClusters.set(cluster.name, cluster);
      }
    }
    c.vss.set(key, vs);
    c.kept.set(key, result.keep);
    c.lost.set(key, result.conflicts);
    contributions.set(key, contribution(result.keep, result.conflicts, options));
  }

  const translation: GroupTranslation = {
    snapshot: { ...snapshot, [LISTENER_TYPE]: listeners, [CLUSTER_TYPE]: clusters, [ENDPOINT_TYPE]: assignments },
    contributions,
    edsClusters,
  };
  c.owner = translation;
  continuations.set(translation, c);
  return translation;
}

/** Index of `name` in an array sorted by name, or where it would go (as ~index). */
function findByName(inputs: readonly ResourceInput[], name: string): number {
  let lo = 0;
  let hi = inputs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const n = (inputs[mid] as ResourceInput).name;
    if (n === name) return mid;
    if (n < name) lo = mid + 1;
    else hi = mid - 1;
  }
  return ~lo;
}

function insertByName(inputs: ResourceInput[], input: ResourceInput): void {
  const at = findByName(inputs, input.name);
  if (at >= 0) inputs[at] = input;
  else inputs.splice(~at, 0, input);
}

function removeByName(inputs: ResourceInput[], name: string): ResourceInput | undefined {
  const at = findByName(inputs, name);
  return at >= 0 ? inputs.splice(at, 1)[0] : undefined;
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
  const next: GroupTranslation = {
    ...translation,
    snapshot: { ...translation.snapshot, [ENDPOINT_TYPE]: current.map((r) => replaced.get(r.name) ?? r) },
  };
  // Listeners and clusters are those of `translation`: the next translation may extend this one.
  const c = continuations.get(translation);
  if (c?.owner === translation) {
    c.owner = next;
    continuations.set(next, c);
  }
  return next;
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

