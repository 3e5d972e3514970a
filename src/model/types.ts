/**
 * The VirtualService custom resource (servicemesh.l7mp.io/v1), with the field names of the
 * original operator. These are the shapes after parsing; validation (validate.ts) decides
 * whether a parsed object is usable.
 */

export const GROUP = 'servicemesh.l7mp.io';
export const VERSION = 'v1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'VirtualService';
export const PLURAL = 'virtualservices';

export type Labels = Readonly<Record<string, string>>;

export interface ObjectMeta {
  readonly name: string;
  readonly namespace: string;
  readonly uid?: string;
  readonly generation?: number;
  readonly resourceVersion?: string;
  /** RFC 3339; the oldest VirtualService wins a conflict. */
  readonly creationTimestamp?: string;
  readonly labels?: Labels;
}

export interface HealthCheckSpec {
  /** Milliseconds between checks. */
  readonly interval: number;
  readonly protocol: 'TCP';
}

export interface EndpointHost {
  /** Pod labels (all must match): the ready pods' IPs, kept live through EDS. */
  readonly selector?: Labels;
  /** An IP address or a DNS name. */
  readonly address?: string;
}

export interface EndpointSpec {
  readonly name?: string;
  readonly host: EndpointHost;
  readonly port: number;
  /** TCP port for the health check; defaults to `port`. */
  readonly health_check_port?: number;
  /** Envoy's load_balancing_weight of each host it names (1 when absent): a share of new sessions. */
  readonly weight?: number;
}

export interface ClusterSpec {
  readonly name: string;
  readonly service_discovery: 'strictdns' | 'eds';
  readonly health_check?: HealthCheckSpec;
  /** A constant key: every session of the listener goes to the endpoint it picks. */
  readonly hash_key?: string;
  /** Hash on the client's source IP instead: each client sticks to one endpoint, clients spread. */
  readonly hash_source_ip?: boolean;
  /** Concurrent UDP sessions the Envoy cluster carries (its max_connections circuit breaker). */
  readonly max_sessions?: number;
  readonly endpoints: readonly EndpointSpec[];
}

/** Where a listener's per-session access log goes: the proxy's own standard streams, never a file. */
export type AccessLogDestination = 'stdout' | 'stderr';

export interface AccessLogSpec {
  readonly destination: AccessLogDestination;
  /** Also write an entry every this many milliseconds while a session lasts (Envoy writes one when it ends). */
  readonly flush_interval_ms?: number;
}

export interface ListenerSpec {
  readonly name: string;
  readonly udp: {
    readonly port: number;
    readonly cluster: ClusterSpec;
    /** A session without a datagram either way for this long ends (Envoy's default: 60 s). */
    readonly idle_timeout_ms?: number;
    /** Pick an endpoint for every datagram instead of once per session. */
    readonly per_packet_load_balancing?: boolean;
    readonly access_log?: AccessLogSpec;
  };
}

export interface VirtualServiceSpec {
  /** Labels of the proxies' pods; all must match (Kubernetes matchLabels). */
  readonly selector: Labels;
  readonly listeners: readonly ListenerSpec[];
}

export interface Condition {
  readonly type: string;
  readonly status: 'True' | 'False' | 'Unknown';
  readonly reason: string;
  readonly message: string;
  readonly observedGeneration?: number;
  readonly lastTransitionTime?: string;
}

export interface ProxyCounts {
  /** Connected proxies this VirtualService selects. */
  readonly matched: number;
  /** Of those, the ones that accepted the current configuration. */
  readonly synced: number;
  /** Of those, the ones that rejected it. */
  readonly nacked: number;
}

export interface VirtualServiceStatus {
  readonly observedGeneration?: number;
  readonly conditions?: readonly Condition[];
  readonly listeners?: number;
  readonly proxies?: ProxyCounts & { readonly summary?: string };
  /** The latest rejection message, when a proxy NACKed this VirtualService's configuration. */
  readonly nackMessage?: string;
  /** Its clusters' names in Envoy, by the cluster's name in the spec (shared clusters are named by content). */
  readonly envoyClusters?: Readonly<Record<string, string>>;
  /** The session limit (max_connections) of each cluster that sets max_sessions, by the cluster's name in the spec. */
  readonly sessionLimits?: Readonly<Record<string, number>>;
}

export interface VirtualService {
  readonly apiVersion: typeof API_VERSION;
  readonly kind: typeof KIND;
  readonly metadata: ObjectMeta;
  readonly spec: VirtualServiceSpec;
  readonly status?: VirtualServiceStatus;
}

/** A pod as endpoints and node identity need it. */
export interface Pod {
  readonly namespace: string;
  readonly name: string;
  readonly uid?: string;
  readonly labels: Labels;
  readonly ip?: string;
  readonly ready: boolean;
  /** deletionTimestamp is set: kept (as a DEGRADED endpoint: its sessions stay, new ones go elsewhere) until it is gone. */
  readonly terminating: boolean;
}

/** `namespace/name`, the key of a VirtualService everywhere in vsxds. */
export function vsKey(vs: { readonly metadata: Pick<ObjectMeta, 'namespace' | 'name'> }): string {
  return `${vs.metadata.namespace}/${vs.metadata.name}`;
}

/** `namespace/name`, the key of a pod everywhere in vsxds. */
export function podKey(pod: Pick<Pod, 'namespace' | 'name'>): string {
  return `${pod.namespace}/${pod.name}`;
}

/** Kubernetes matchLabels: every selector label must be present with the same value. */
export function selectorMatches(selector: Labels, labels: Labels): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}
