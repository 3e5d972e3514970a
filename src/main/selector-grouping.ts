import { Subject, type Observable, type Subscription } from 'rxjs';
import type { RawObject, SourceState } from '../sources/source.js';
import { nodeGroup, type NodeGroup, type NodeGrouping } from '../xds/node-identity.js';

/**
 * Groups proxies by the labels that the VirtualService selectors of their namespace look at.
 * Two proxies whose pods agree on those labels are selected by the same VirtualServices, so they
 * get the same configuration and share one snapshot; the labels no selector names (a
 * StatefulSet's `statefulset.kubernetes.io/pod-name`, a Deployment's `pod-template-hash`) neither
 * split groups nor reach metric labels. The group key keeps its form, `<namespace>/<k=v,...>`.
 */
export class SelectorKeyGrouping implements NodeGrouping {
  /** Per namespace, how many VirtualServices' selectors name each label key. */
  private readonly keyUses = new Map<string, Map<string, number>>();
  /** The selector keys each VirtualService was counted with, by `namespace/name`. */
  private readonly counted = new Map<string, { readonly namespace: string; readonly keys: readonly string[] }>();
  private readonly changes = new Subject<string>();
  private readonly subscription: Subscription;
  readonly changes$: Observable<string> = this.changes.asObservable();

  constructor(state$: Observable<SourceState>) {
    this.subscription = state$.subscribe((state) => this.update(state));
  }

  group(namespace: string, labels: Readonly<Record<string, string>>): NodeGroup {
    const keys = this.keyUses.get(namespace);
    const picked: Record<string, string> = {};
    if (keys) for (const [k, v] of Object.entries(labels)) if (keys.has(k)) picked[k] = v;
    return nodeGroup(namespace, picked);
  }

  stop(): void {
    this.subscription.unsubscribe();
  }

  private update(state: SourceState): void {
    const touched = new Set<string>();
    if (state.changes) {
      for (const [key, vs] of state.changes.virtualServices) this.count(key, vs, touched);
    } else {
      const present = new Set<string>();
      for (const vs of state.virtualServices) {
        const key = `${vs.metadata.namespace}/${vs.metadata.name}`;
        present.add(key);
        this.count(key, vs, touched);
      }
      for (const key of [...this.counted.keys()]) if (!present.has(key)) this.count(key, undefined, touched);
    }
    for (const namespace of touched) this.changes.next(namespace);
  }

  /** Counts `vs` (undefined: gone) under `key`; adds the namespace to `touched` when its key set changed. */
  private count(key: string, vs: RawObject | undefined, touched: Set<string>): void {
    const before = this.counted.get(key);
    const keys = vs ? selectorKeys(vs) : [];
    if (before && vs && before.namespace === vs.metadata.namespace && sameKeys(before.keys, keys)) return;
    if (before) {
      const uses = this.keyUses.get(before.namespace);
      for (const k of before.keys) {
        const n = (uses?.get(k) ?? 0) - 1;
        if (n > 0) uses?.set(k, n);
        else {
          uses?.delete(k);
          touched.add(before.namespace);
        }
      }
      if (uses?.size === 0) this.keyUses.delete(before.namespace);
      this.counted.delete(key);
    }
    if (!vs) return;
    const namespace = vs.metadata.namespace;
    let uses = this.keyUses.get(namespace);
    if (!uses && keys.length > 0) this.keyUses.set(namespace, (uses = new Map()));
    for (const k of keys) {
      const n = uses?.get(k) ?? 0;
      if (n === 0) touched.add(namespace);
      uses?.set(k, n + 1);
    }
    this.counted.set(key, { namespace, keys });
  }
}

/** The label keys a VirtualService's `spec.selector` names, as received (valid or not: a finer group is never wrong). */
function selectorKeys(vs: RawObject): string[] {
  const spec = vs['spec'];
  const selector = typeof spec === 'object' && spec !== null ? (spec as Record<string, unknown>)['selector'] : undefined;
  if (typeof selector !== 'object' || selector === null || Array.isArray(selector)) return [];
  return Object.keys(selector).sort();
}

function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((k, i) => k === b[i]);
}
