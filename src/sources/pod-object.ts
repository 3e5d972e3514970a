import type { Pod } from '../model/types.js';

/**
 * A v1 Pod object (API JSON or YAML) reduced to what endpoints and node identity need.
 * Returns undefined for an object that is not a usable pod.
 */
export function podFromObject(obj: unknown, defaultNamespace = 'default'): Pod | undefined {
  if (typeof obj !== 'object' || obj === null) return undefined;
  const o = obj as Record<string, any>;
  const meta = o['metadata'];
  if (typeof meta?.name !== 'string') return undefined;
  const conditions: any[] = Array.isArray(o['status']?.conditions) ? o['status'].conditions : [];
  const ip = typeof o['status']?.podIP === 'string' && o['status'].podIP !== '' ? (o['status'].podIP as string) : undefined;
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta.labels ?? {})) if (typeof v === 'string') labels[k] = v;
  return {
    namespace: typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : defaultNamespace,
    name: meta.name,
    uid: typeof meta.uid === 'string' ? meta.uid : undefined,
    labels,
    ip,
    ready: conditions.some((c) => c?.type === 'Ready' && c?.status === 'True'),
    terminating: meta.deletionTimestamp !== undefined && meta.deletionTimestamp !== null,
  };
}

export function compareByNamespacedName(
  a: { namespace?: string; name?: string; metadata?: { namespace: string; name: string } },
  b: { namespace?: string; name?: string; metadata?: { namespace: string; name: string } },
): number {
  const ka = a.metadata ? `${a.metadata.namespace}/${a.metadata.name}` : `${a.namespace}/${a.name}`;
  const kb = b.metadata ? `${b.metadata.namespace}/${b.metadata.name}` : `${b.namespace}/${b.name}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}
