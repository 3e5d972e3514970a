import { isObject } from './fields.js';
import { deepFreeze } from './canonical.js';
import { timestampText } from './time.js';
import type { Pod } from './types.js';

export type PodParseResult =
  | { readonly ok: true; readonly pod: Pod }
  | { readonly ok: false; readonly key?: string; readonly message: string };

/**
 * A Kubernetes v1 Pod (from the apiserver, client-node, or a YAML file) reduced to what
 * endpoints and node identity use. Ready is the pod's Ready condition, so readiness probes
 * decide when a worker takes traffic; a pod with deletionTimestamp is terminating.
 */
export function parsePod(obj: unknown, defaultNamespace?: string): PodParseResult {
  if (!isObject(obj) || !isObject(obj['metadata'])) return { ok: false, message: 'a Pod must be an object with metadata' };
  const meta = obj['metadata'];
  const name = typeof meta['name'] === 'string' ? meta['name'] : '';
  const namespace = (typeof meta['namespace'] === 'string' && meta['namespace']) || defaultNamespace || '';
  if (!name || !namespace) return { ok: false, message: `Pod: metadata.${name ? 'namespace' : 'name'} is required` };
  const key = `${namespace}/${name}`;

  const labels: Record<string, string> = {};
  if (isObject(meta['labels'])) {
    for (const [k, v] of Object.entries(meta['labels'])) {
      if (typeof v !== 'string') return { ok: false, key, message: `Pod ${key}: metadata.labels.${k} must be a string` };
      labels[k] = v;
    }
  }
  const status = isObject(obj['status']) ? obj['status'] : {};
  const ip = podIp(status);
  const conditions = Array.isArray(status['conditions']) ? status['conditions'] : [];
  const ready = conditions.some((c) => isObject(c) && c['type'] === 'Ready' && c['status'] === 'True');
  const uid = typeof meta['uid'] === 'string' && meta['uid'] ? meta['uid'] : undefined;
  const pod: Pod = {
    namespace,
    name,
    ...(uid ? { uid } : {}),
    labels,
    ...(ip ? { ip } : {}),
    ready,
    terminating: timestampText(meta['deletionTimestamp']) !== undefined,
  };
  return { ok: true, pod: deepFreeze(pod) };
}

function podIp(status: Record<string, unknown>): string | undefined {
  if (typeof status['podIP'] === 'string' && status['podIP']) return status['podIP'];
  const ips = status['podIPs'];
  const first: unknown = Array.isArray(ips) ? ips[0] : undefined;
  return isObject(first) && typeof first['ip'] === 'string' && first['ip'] ? first['ip'] : undefined;
}
