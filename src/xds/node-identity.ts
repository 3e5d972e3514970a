import type { Observable } from 'rxjs';

/** Proxies with the same namespace and labels form one node group and share one snapshot. */
export interface NodeGroup {
  /** `<namespace>/<k=v,...>` with labels sorted: stable, and readable in logs and metrics. */
  readonly key: string;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** The parts of an Envoy `node` that identity uses, with `metadata` as plain JSON. */
export interface NodeInfo {
  readonly id: string;
  readonly cluster?: string;
  readonly metadata?: Readonly<Record<string, unknown>>;
}

export interface PodIdentity {
  readonly namespace: string;
  readonly name: string;
  readonly uid?: string;
  readonly labels: Readonly<Record<string, string>>;
  /** For node authentication by peer address. */
  readonly ip?: string;
}

/** Pod labels by name or UID; the Kubernetes source provides one. */
export interface PodLookup {
  byName(namespace: string, name: string): PodIdentity | undefined;
  byUid(uid: string): PodIdentity | undefined;
  /** Emits whenever the pods it knows change, so a proxy waiting for its pod can retry. */
  readonly changes$: Observable<unknown>;
}

/**
 * Which proxies share a snapshot. Without one, proxies with the same namespace and labels do;
 * with one, whatever it says (vsxds groups by the labels the namespace's selectors look at).
 */
export interface NodeGrouping {
  group(namespace: string, labels: Readonly<Record<string, string>>): NodeGroup;
  /** Emits a namespace whose proxies `group` may now place differently. */
  readonly changes$: Observable<string>;
}

export class NodeIdentityError extends Error {
  override name = 'NodeIdentityError';
}

export function nodeGroup(namespace: string, labels: Readonly<Record<string, string>>): NodeGroup {
  const sorted = Object.keys(labels).sort();
  const normalized: Record<string, string> = {};
  for (const k of sorted) normalized[k] = labels[k] as string;
  return {
    key: `${namespace}/${sorted.map((k) => `${k}=${labels[k]}`).join(',')}`,
    namespace,
    labels: normalized,
  };
}

/** How a node identifies itself, before any lookup. */
export type NodeReference =
  | { readonly kind: 'metadata'; readonly group: NodeGroup }
  | { readonly kind: 'pod-name'; readonly namespace: string; readonly name: string }
  | { readonly kind: 'pod-uid'; readonly uid: string };

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const POD_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/**
 * Reads a node's identity in the order of precedence: metadata `namespace` (+ `labels`), then
 * `node.id` as `<namespace>/<pod-name>`, then `node.id` as a pod UID.
 */
export function nodeReference(node: NodeInfo): NodeReference {
  const meta = node.metadata ?? {};
  const ns = meta['namespace'];
  if (ns !== undefined) {
    if (typeof ns !== 'string' || !DNS_LABEL.test(ns)) {
      throw new NodeIdentityError(`node.metadata.namespace must be a namespace name, got ${JSON.stringify(ns)}`);
    }
    const rawLabels = meta['labels'] ?? {};
    if (typeof rawLabels !== 'object' || rawLabels === null || Array.isArray(rawLabels)) {
      throw new NodeIdentityError('node.metadata.labels must be a map of strings');
    }
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(rawLabels)) {
      if (typeof v !== 'string') throw new NodeIdentityError(`node.metadata.labels.${k} must be a string`);
      labels[k] = v;
    }
    return { kind: 'metadata', group: nodeGroup(ns, labels) };
  }
  const id = node.id ?? '';
  const slash = id.indexOf('/');
  if (slash > 0) {
    const namespace = id.slice(0, slash);
    const name = id.slice(slash + 1);
    if (!DNS_LABEL.test(namespace) || !POD_NAME.test(name)) {
      throw new NodeIdentityError(`node.id "${id}" is not <namespace>/<pod-name>`);
    }
    return { kind: 'pod-name', namespace, name };
  }
  if (id === '') {
    throw new NodeIdentityError('node has neither metadata.namespace nor an id (<namespace>/<pod-name> or pod UID)');
  }
  return { kind: 'pod-uid', uid: id };
}

/** What a reference names, for messages: `pod <namespace>/<name>`, `pod UID <uid>` or the group key. */
export function describeReference(ref: NodeReference): string {
  if (ref.kind === 'metadata') return `node group ${ref.group.key}`;
  return ref.kind === 'pod-name' ? `pod ${ref.namespace}/${ref.name}` : `pod UID ${ref.uid}`;
}

/**
 * The group for a reference, with the pod it names (for node authentication), or undefined
 * while the lookup does not know the pod (yet).
 */
export function resolveReference(ref: NodeReference, lookup: PodLookup | undefined, grouping?: NodeGrouping): { group: NodeGroup; pod?: PodIdentity } | undefined {
  const group = (namespace: string, labels: Readonly<Record<string, string>>) => (grouping ? grouping.group(namespace, labels) : nodeGroup(namespace, labels));
  if (ref.kind === 'metadata') return { group: grouping ? group(ref.group.namespace, ref.group.labels) : ref.group };
  if (!lookup) {
    throw new NodeIdentityError(
      `node names ${describeReference(ref)}, but this vsxds has no pod source to resolve it; set node.metadata.namespace and node.metadata.labels, or run with the kubernetes source`,
    );
  }
  const pod = ref.kind === 'pod-name' ? lookup.byName(ref.namespace, ref.name) : lookup.byUid(ref.uid);
  return pod ? { group: group(pod.namespace, pod.labels), pod } : undefined;
}

/** google.protobuf.Struct as decoded by protobufjs (keepCase) → plain JSON. */
export function structToJson(struct: unknown): Record<string, unknown> {
  const fields = (struct as { fields?: Record<string, unknown> } | undefined)?.fields ?? {};
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) out[k] = valueToJson(v);
  return out;
}

function valueToJson(value: unknown): unknown {
  // protobufjs bundles google.protobuf.Value with camelCase field names.
  const v = (value ?? {}) as Record<string, unknown>;
  if ('stringValue' in v) return v['stringValue'];
  if ('numberValue' in v) return v['numberValue'];
  if ('boolValue' in v) return v['boolValue'];
  if ('structValue' in v) return structToJson(v['structValue']);
  if ('listValue' in v) return ((v['listValue'] as { values?: unknown[] }).values ?? []).map(valueToJson);
  return null;
}
