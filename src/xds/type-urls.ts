/** Type URLs of the resources vsxds serves, and the order ADS pushes them in. */
export const LISTENER_TYPE = 'type.googleapis.com/envoy.config.listener.v3.Listener';
export const CLUSTER_TYPE = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
export const ENDPOINT_TYPE = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';

/**
 * Make-before-break: clusters first, then their endpoints, then the listeners that use them.
 * Types not listed here are pushed after these, in type-URL order.
 */
export const PUSH_ORDER: readonly string[] = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE];

/** Types for which an empty SotW subscription (or the first delta request without names) means "everything". */
export const WILDCARD_TYPES: ReadonlySet<string> = new Set([LISTENER_TYPE, CLUSTER_TYPE]);

export const SHORT_TYPE_NAMES: Readonly<Record<string, string>> = {
  [LISTENER_TYPE]: 'LDS',
  [CLUSTER_TYPE]: 'CDS',
  [ENDPOINT_TYPE]: 'EDS',
};

export function shortTypeName(typeUrl: string): string {
  return SHORT_TYPE_NAMES[typeUrl] ?? typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
}

export function compareTypesForPush(a: string, b: string): number {
  const ia = PUSH_ORDER.indexOf(a);
  const ib = PUSH_ORDER.indexOf(b);
  if (ia !== ib) return (ia < 0 ? PUSH_ORDER.length : ia) - (ib < 0 ? PUSH_ORDER.length : ib);
  return a < b ? -1 : a > b ? 1 : 0;
}
