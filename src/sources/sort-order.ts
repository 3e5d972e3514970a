/** Sources emit their objects sorted by `namespace/name`: raw objects and pods alike. */
export function compareByNamespacedName(
  a: { namespace?: string; name?: string; metadata?: { namespace: string; name: string } },
  b: { namespace?: string; name?: string; metadata?: { namespace: string; name: string } },
): number {
  const ka = a.metadata ? `${a.metadata.namespace}/${a.metadata.name}` : `${a.namespace}/${a.name}`;
  const kb = b.metadata ? `${b.metadata.namespace}/${b.metadata.name}` : `${b.namespace}/${b.name}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}
