import { selectorMatches, type Labels, type Pod } from '../model/types.js';

/** A pod that can be an endpoint: it has an IP, and is ready or terminating (draining). */
export function canServe(pod: Pod): boolean {
  return Boolean(pod.ip) && (pod.ready || pod.terminating);
}

/**
 * The pods that can be endpoints, by namespace and by label, so a selector looks at the pods
 * carrying its rarest label instead of every pod. Kept up to date one pod at a time by the
 * pipeline; `podIndex` builds a fixed one from a list.
 */
export class PodIndex {
  private readonly byLabel = new Map<string, Map<string, Set<Pod>>>();

  constructor(pods: readonly Pod[] = []) {
    for (const pod of pods) this.add(pod);
  }

  /** Indexes a pod (ignored when it cannot serve). */
  add(pod: Pod): void {
    if (!canServe(pod)) return;
    let namespace = this.byLabel.get(pod.namespace);
    if (!namespace) this.byLabel.set(pod.namespace, (namespace = new Map()));
    for (const [k, v] of Object.entries(pod.labels)) {
      const key = labelKey(k, v);
      const set = namespace.get(key);
      if (set) set.add(pod);
      else namespace.set(key, new Set([pod]));
    }
  }

  /** Forgets a pod given to `add` (the same object). */
  remove(pod: Pod): void {
    const namespace = this.byLabel.get(pod.namespace);
    if (!namespace) return;
    for (const [k, v] of Object.entries(pod.labels)) {
      const key = labelKey(k, v);
      const set = namespace.get(key);
      if (!set) continue;
      set.delete(pod);
      if (set.size === 0) namespace.delete(key);
    }
    if (namespace.size === 0) this.byLabel.delete(pod.namespace);
  }

  /** Pods in `namespace` carrying every label of a non-empty `selector`. */
  select(namespace: string, selector: Labels): Pod[] {
    const smallest = this.rarest(namespace, selector);
    const out: Pod[] = [];
    if (smallest) for (const p of smallest) if (selectorMatches(selector, p.labels)) out.push(p);
    return out;
  }

  /** The label of a non-empty `selector` that the fewest serving pods of `namespace` carry. */
  rarestLabel(namespace: string, selector: Labels): string | undefined {
    let best: string | undefined;
    let bestSize = Infinity;
    const index = this.byLabel.get(namespace);
    for (const [k, v] of Object.entries(selector)) {
      const key = labelKey(k, v);
      const size = index?.get(key)?.size ?? 0;
      if (size < bestSize) [best, bestSize] = [key, size];
    }
    return best;
  }

  private rarest(namespace: string, selector: Labels): ReadonlySet<Pod> | undefined {
    const index = this.byLabel.get(namespace);
    if (!index) return undefined;
    let smallest: ReadonlySet<Pod> | undefined;
    for (const [k, v] of Object.entries(selector)) {
      const set = index.get(labelKey(k, v));
      if (!set) return undefined;
      if (!smallest || set.size < smallest.size) smallest = set;
    }
    return smallest;
  }
}

/** One label as one string key. */
export function labelKey(k: string, v: string): string {
  return `${k}\u0000${v}`;
}

// Every group of one build is translated against the same pod list: index it once.
const indexes = new WeakMap<readonly Pod[], PodIndex>();

/** A fixed index of a pod list (never changed afterwards: the list is taken as immutable). */
export function podIndex(pods: readonly Pod[]): PodIndex {
  let index = indexes.get(pods);
  if (!index) indexes.set(pods, (index = new PodIndex(pods)));
  return index;
}
