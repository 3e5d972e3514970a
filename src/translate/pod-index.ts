import { selectorMatches, type Labels, type Pod } from '../model/types.js';

/**
 * The pods that can be endpoints (an IP, and ready or terminating), by namespace and by
 * label, so a selector looks at the pods carrying its rarest label instead of every pod.
 */
export class PodIndex {
  private readonly byLabel = new Map<string, Map<string, Pod[]>>();

  constructor(pods: readonly Pod[]) {
    for (const pod of pods) {
      if (!pod.ip || !(pod.ready || pod.terminating)) continue;
      let namespace = this.byLabel.get(pod.namespace);
      if (!namespace) this.byLabel.set(pod.namespace, (namespace = new Map()));
      for (const [k, v] of Object.entries(pod.labels)) {
        const key = labelKey(k, v);
        const list = namespace.get(key);
        if (list) list.push(pod);
        else namespace.set(key, [pod]);
      }
    }
  }

  /** Pods in `namespace` carrying every label of a non-empty `selector`. */
  select(namespace: string, selector: Labels): Pod[] {
    const index = this.byLabel.get(namespace);
    if (!index) return [];
    let smallest: Pod[] | undefined;
    for (const [k, v] of Object.entries(selector)) {
      const list = index.get(labelKey(k, v)) ?? [];
      if (!smallest || list.length < smallest.length) smallest = list;
    }
    return (smallest ?? []).filter((p) => selectorMatches(selector, p.labels));
  }
}

function labelKey(k: string, v: string): string {
  return `${k}\u0000${v}`;
}

// Every group of one build is translated against the same pod list: index it once.
const indexes = new WeakMap<readonly Pod[], PodIndex>();

export function podIndex(pods: readonly Pod[]): PodIndex {
  let index = indexes.get(pods);
  if (!index) indexes.set(pods, (index = new PodIndex(pods)));
  return index;
}
