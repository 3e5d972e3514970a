import { deepFreeze } from '../model/canonical.js';
import type { ClusterSpec } from '../model/types.js';
import type { ResourceInput } from '../xds/snapshot.js';
import { assignmentPolicy, localityEndpoints, normalizeTargets, targetsKey, type EndpointTarget } from './lb-endpoint.js';
import { WeakValueCache } from './memo.js';
import type { PodIndex } from './pod-index.js';

/** The hosts of an EDS cluster: its IP endpoints, and the pods its selectors pick in `namespace`. */
export function edsTargets(spec: ClusterSpec, namespace: string, pods: PodIndex): EndpointTarget[] {
  const targets: EndpointTarget[] = [];
  for (const e of spec.endpoints) {
    const healthCheckPort = e.health_check_port ?? e.port;
    const weight = e.weight !== undefined ? { weight: e.weight } : {};
    if (e.host.address !== undefined) {
      targets.push({ address: e.host.address, port: e.port, healthCheckPort, draining: false, ...weight });
    } else if (e.host.selector !== undefined) {
      for (const pod of pods.select(namespace, e.host.selector)) {
        // A terminating pod that still reports ready is draining all the same.
        targets.push({ address: pod.ip as string, port: e.port, healthCheckPort, draining: pod.terminating, ...weight });
      }
    }
  }
  return normalizeTargets(targets);
}

// One entry per distinct (cluster, endpoint set): enough for every group of a large fleet and
// a few generations of pod churn, bounded so churn does not grow it forever.
const assignments = new WeakValueCache<string, ResourceInput>(65_536);

// The last assignment of each cluster spec: when its pods did not change, the same object
// comes back without a lookup by content.
const lastBySpec = new WeakMap<ClusterSpec, { readonly namespace: string; readonly key: string; readonly input: ResourceInput }>();

/**
 * The ClusterLoadAssignment of an EDS cluster. Equal inputs give the same object, across
 * groups and builds, so pod churn re-encodes only the assignments whose pods changed.
 */
export function assignmentResource(spec: ClusterSpec, namespace: string, pods: PodIndex): ResourceInput {
  const targets = edsTargets(spec, namespace, pods);
  const healthChecked = spec.health_check !== undefined;
  const key = `${spec.name}\u0000${healthChecked ? 'hc' : ''}\u0000${targetsKey(targets)}`;
  const last = lastBySpec.get(spec);
  if (last && last.key === key && last.namespace === namespace) return last.input;
  let input = assignments.get(key);
  if (!input) {
    input = deepFreeze({ name: spec.name, resource: { cluster_name: spec.name, endpoints: localityEndpoints(targets, healthChecked), ...assignmentPolicy(targets) } });
    assignments.set(key, input);
  }
  lastBySpec.set(spec, { namespace, key, input });
  return input;
}
