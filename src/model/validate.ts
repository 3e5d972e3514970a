import { deepEqual } from './canonical.js';
import {
  MAX_ACCESS_LOG_FLUSH_INTERVAL_MS,
  MAX_ENDPOINT_NAME_LENGTH,
  MAX_ENDPOINT_WEIGHT,
  MAX_ENDPOINTS,
  MAX_HASH_KEY_LENGTH,
  MAX_HEALTH_CHECK_INTERVAL_MS,
  MAX_IDLE_TIMEOUT_MS,
  MAX_LISTENERS,
  MAX_PORT,
  MAX_SELECTOR_LABELS,
  MAX_SESSIONS,
  MIN_ACCESS_LOG_FLUSH_INTERVAL_MS,
  MIN_PORT,
} from './limits.js';
import { addressKind, isDnsLabel, isDnsSubdomain, labelKeyProblem, labelValueProblem } from './names.js';
import { summarize, type Problem } from './problems.js';
import type { ClusterSpec, EndpointSpec, Labels, ListenerSpec, VirtualService } from './types.js';

export { acceptedCondition } from './condition.js';

export type ValidationResult =
  | { readonly accepted: true }
  | {
      readonly accepted: false;
      /** CamelCase, for a condition: InvalidListener, InvalidCluster, InvalidEndpoint, ... */
      readonly reason: string;
      readonly message: string;
    };

const NAME_RULE = 'must be a DNS-1123 label: at most 63 lowercase letters, digits or "-", starting and ending with a letter or digit';

/**
 * Everything the CRD schema checks at admission (files have no admission), and the rules a
 * schema cannot express: uniqueness within the VirtualService, addresses, and which service
 * discovery suits which kind of endpoint.
 */
export function validateVirtualService(vs: VirtualService): ValidationResult {
  const problems: Problem[] = [];
  const add = (path: string, message: string): void => void problems.push({ path, message });

  if (!isDnsSubdomain(vs.metadata.name)) add('metadata.name', `"${vs.metadata.name}" must be a DNS-1123 subdomain`);
  if (!isDnsLabel(vs.metadata.namespace)) add('metadata.namespace', `"${vs.metadata.namespace}" must be a DNS-1123 label`);
  // An empty selector would give these listeners to every proxy of the namespace, the workers'
  // sidecars included: say which proxies, always.
  if (Object.keys(vs.spec.selector).length === 0) add('spec.selector', 'must name at least one label of the proxies\' pods (an empty selector would select every proxy in the namespace)');
  checkSelector(vs.spec.selector, 'spec.selector', add);

  const listeners = vs.spec.listeners;
  if (listeners.length === 0) add('spec.listeners', 'must have at least one listener');
  if (listeners.length > MAX_LISTENERS) add('spec.listeners', `must have at most ${MAX_LISTENERS} listeners, has ${listeners.length}`);

  const listenerByName = new Map<string, number>();
  const listenerByPort = new Map<number, number>();
  const clusterByName = new Map<string, { spec: ClusterSpec; index: number }>();
  listeners.forEach((l, i) => {
    const path = `spec.listeners[${i}]`;
    if (!isDnsLabel(l.name)) add(`${path}.name`, `"${l.name}" ${NAME_RULE}`);
    const sameName = listenerByName.get(l.name);
    if (sameName !== undefined) {
      add(`${path}.name`, `"${l.name}" is also the name of spec.listeners[${sameName}]; listener names must be unique within a VirtualService`);
    } else listenerByName.set(l.name, i);

    const port = l.udp.port;
    if (!validPort(port)) add(`${path}.udp.port`, `${port} must be a port number (${MIN_PORT}-${MAX_PORT})`);
    const samePort = listenerByPort.get(port);
    if (samePort !== undefined) {
      add(`${path}.udp.port`, `UDP port ${port} is also used by spec.listeners[${samePort}]; listener ports must be unique within a VirtualService`);
    } else listenerByPort.set(port, i);
    checkSessionOptions(l.udp, `${path}.udp`, add);

    const cluster = l.udp.cluster;
    const cpath = `${path}.udp.cluster`;
    const sameCluster = clusterByName.get(cluster.name);
    if (sameCluster === undefined) {
      clusterByName.set(cluster.name, { spec: cluster, index: i });
      checkCluster(cluster, cpath, add);
    } else if (!deepEqual(sameCluster.spec, cluster)) {
      add(
        cpath,
        `cluster "${cluster.name}" is also defined by spec.listeners[${sameCluster.index}] differently; listeners may share a cluster only when they define it identically`,
      );
    }
  });

  return problems.length === 0 ? { accepted: true } : { accepted: false, ...summarize(problems) };
}

type Add = (path: string, message: string) => void;

/** Also the CRD's CEL message: Envoy's udp_proxy takes one hash policy. */
export const HASH_EXCLUSIVE = 'hash_key and hash_source_ip: true exclude each other (the proxy hashes on one of them)';

function validPort(port: number): boolean {
  return Number.isInteger(port) && port >= MIN_PORT && port <= MAX_PORT;
}

/** `value` (when set) is a whole number from min to max; `what` says what it counts. */
function checkRange(value: number | undefined, min: number, max: number, what: string, path: string, add: Add): void {
  if (value !== undefined && (!Number.isInteger(value) || value < min || value > max)) add(path, `${value} must be between ${min} and ${max}${what}`);
}

function checkSessionOptions(udp: ListenerSpec['udp'], path: string, add: Add): void {
  checkRange(udp.idle_timeout_ms, 1, MAX_IDLE_TIMEOUT_MS, ' milliseconds', `${path}.idle_timeout_ms`, add);
  const flush = udp.access_log?.flush_interval_ms;
  checkRange(flush, MIN_ACCESS_LOG_FLUSH_INTERVAL_MS, MAX_ACCESS_LOG_FLUSH_INTERVAL_MS, ' milliseconds', `${path}.access_log.flush_interval_ms`, add);
}

function checkSelector(selector: Labels, path: string, add: Add): void {
  const keys = Object.keys(selector);
  if (keys.length > MAX_SELECTOR_LABELS) add(path, `must have at most ${MAX_SELECTOR_LABELS} labels, has ${keys.length}`);
  for (const k of keys) {
    const problem = labelKeyProblem(k) ?? labelValueProblem(selector[k] ?? '');
    if (problem) add(`${path}.${k}`, problem);
  }
}

function checkCluster(c: ClusterSpec, path: string, add: Add): void {
  if (!isDnsLabel(c.name)) add(`${path}.name`, `"${c.name}" ${NAME_RULE}`);
  if (c.hash_key !== undefined && c.hash_key.length === 0) add(`${path}.hash_key`, 'must not be empty; leave it out for no hashing');
  if (c.hash_key !== undefined && c.hash_key.length > MAX_HASH_KEY_LENGTH) add(`${path}.hash_key`, `must be at most ${MAX_HASH_KEY_LENGTH} characters`);
  if (c.hash_key !== undefined && c.hash_source_ip === true) add(path, HASH_EXCLUSIVE);
  checkRange(c.max_sessions, 1, MAX_SESSIONS, ' sessions', `${path}.max_sessions`, add);
  checkRange(c.health_check?.interval, 1, MAX_HEALTH_CHECK_INTERVAL_MS, ' milliseconds', `${path}.health_check.interval`, add);
  if (c.endpoints.length === 0) add(`${path}.endpoints`, 'must have at least one endpoint');
  if (c.endpoints.length > MAX_ENDPOINTS) add(`${path}.endpoints`, `must have at most ${MAX_ENDPOINTS} endpoints, has ${c.endpoints.length}`);
  c.endpoints.forEach((e, i) => checkEndpoint(e, c.service_discovery, `${path}.endpoints[${i}]`, add));
}

function checkEndpoint(e: EndpointSpec, discovery: ClusterSpec['service_discovery'], path: string, add: Add): void {
  if (e.name !== undefined && e.name.length > MAX_ENDPOINT_NAME_LENGTH) add(`${path}.name`, `must be at most ${MAX_ENDPOINT_NAME_LENGTH} characters`);
  checkRange(e.weight, 1, MAX_ENDPOINT_WEIGHT, '', `${path}.weight`, add);
  if (!validPort(e.port)) add(`${path}.port`, `${e.port} must be a port number (${MIN_PORT}-${MAX_PORT})`);
  if (e.health_check_port !== undefined && !validPort(e.health_check_port)) {
    add(`${path}.health_check_port`, `${e.health_check_port} must be a port number (${MIN_PORT}-${MAX_PORT})`);
  }
  const { selector, address } = e.host;
  if (selector !== undefined) {
    // An empty selector would pick every pod in the namespace, proxies included.
    if (Object.keys(selector).length === 0) add(`${path}.host.selector`, 'must name at least one label');
    checkSelector(selector, `${path}.host.selector`, add);
    if (discovery === 'strictdns') add(`${path}.host.selector`, 'pod selectors are delivered through EDS: use service_discovery: eds');
  }
  if (address !== undefined) {
    const kind = addressKind(address);
    if (kind === undefined) add(`${path}.host.address`, `"${address}" is neither an IP address nor a DNS name`);
    if (kind === 'dns' && discovery === 'eds') {
      add(`${path}.host.address`, `"${address}" is a DNS name, but EDS carries IP addresses: use strictdns for DNS names`);
    }
  }
}
