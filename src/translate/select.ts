import { selectorMatches, type VirtualService } from '../model/types.js';
import type { NodeGroup } from '../xds/node-identity.js';

/** A VirtualService configures the proxies of its own namespace whose labels carry all of its selector. */
export function appliesTo(vs: VirtualService, group: NodeGroup): boolean {
  return vs.metadata.namespace === group.namespace && selectorMatches(vs.spec.selector, group.labels);
}

// translateAll looks at one list once per group: split it by namespace once.
const byNamespace = new WeakMap<readonly VirtualService[], ReadonlyMap<string, readonly VirtualService[]>>();

export function virtualServicesFor(group: NodeGroup, virtualServices: readonly VirtualService[]): VirtualService[] {
  let index = byNamespace.get(virtualServices);
  if (!index) {
    const m = new Map<string, VirtualService[]>();
    for (const vs of virtualServices) {
      const list = m.get(vs.metadata.namespace);
      if (list) list.push(vs);
      else m.set(vs.metadata.namespace, [vs]);
    }
    byNamespace.set(virtualServices, (index = m));
  }
  return (index.get(group.namespace) ?? []).filter((vs) => appliesTo(vs, group));
}
