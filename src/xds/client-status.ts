import type { NodeInfo } from './node-identity.js';
import { resourcesVersion, type EncodedResource, type Snapshot } from './snapshot.js';
import type { ProxyInfo } from './status-registry.js';

/**
 * What CSDS reads of an ADS stream, per subscribed type: the protocol state the stream keeps
 * anyway (ACKed, in flight, subscription), read on demand; nothing is copied per request.
 */
export interface TypeView {
  readonly typeUrl: string;
  readonly wildcard: boolean;
  readonly names: ReadonlySet<string>;
  /** A response is out, not yet ACKed or NACKed. */
  readonly awaiting: boolean;
  /** Resources the proxy runs: ACKed on this stream, or reported when it (re)subscribed (seedLive). */
  readonly live: ReadonlyMap<string, EncodedResource>;
  /** Resources of the response in flight. */
  readonly inflight: ReadonlyMap<string, EncodedResource>;
}

export interface StreamView {
  /** The node of the stream's first request. */
  readonly node?: NodeInfo;
  /** The group's snapshot the stream serves, once it has one. */
  readonly snapshot?: Snapshot;
  readonly types: readonly TypeView[];
}

const views = new WeakMap<ProxyInfo, () => StreamView>();

/** Called by each ADS stream for its proxy record, so CSDS can read the stream's state. */
export function exposeStream(proxy: ProxyInfo, view: () => StreamView): void {
  views.set(proxy, view);
}

export function streamView(proxy: ProxyInfo): StreamView | undefined {
  return views.get(proxy)?.();
}

/** ConfigStatus of csds.proto: the management server's view of one resource. */
export type ConfigStatus = 'SYNCED' | 'NOT_SENT' | 'STALE' | 'ERROR';
/** admin.v3.ClientResourceStatus: what the proxy did with it. */
export type ClientResourceStatus = 'REQUESTED' | 'ACKED' | 'NACKED';

/** Times per type, wall clock in ms: when the proxy last ACKed and NACKed a response of the type. */
export interface TypeTimes {
  ackedAt?: number;
  nackedAt?: number;
}

/** One GenericXdsConfig, before encoding. */
export interface ResourceStatus {
  readonly typeUrl: string;
  readonly name: string;
  /**
   * The resource version this entry is about: the one the proxy runs (SYNCED), was sent (STALE),
   * rejected (ERROR) or is due (NOT_SENT).
   */
  readonly version: string;
  readonly resource?: EncodedResource;
  readonly configStatus: ConfigStatus;
  readonly clientStatus: ClientResourceStatus;
  /** Wall clock, ms. */
  readonly lastUpdated?: number;
  readonly error?: { readonly message: string; readonly version: string; readonly at?: number };
}

/**
 * The status of every resource a proxy runs, is being sent, or is due, per type in the stream's
 * order and by name. Per resource:
 * - sent and not answered, at a version other than the one it runs: STALE;
 * - due (in the snapshot) at a version it does not run: ERROR / NACKED while the type's last
 *   answer was a NACK, else NOT_SENT (held back for make-before-break, or not computed yet);
 * - otherwise, run: SYNCED / ACKED (STALE while a SotW response that drops it is in flight).
 * `lastUpdated` is when the proxy last accepted a response of the type (or, for STALE, when it was sent).
 */
export function resourceStatuses(proxy: ProxyInfo, view: StreamView, times: ReadonlyMap<string, TypeTimes>): ResourceStatus[] {
  const out: ResourceStatus[] = [];
  for (const type of view.types) {
    const set = view.snapshot?.resources(type.typeUrl);
    const sync = proxy.types.get(type.typeUrl);
    const t = times.get(type.typeUrl) ?? {};
    const nack = sync?.nack;
    const sentAt = sync?.sentAt === undefined ? undefined : performance.timeOrigin + sync.sentAt;
    const due = (name: string): EncodedResource | undefined => (type.wildcard || type.names.has(name) ? set?.get(name) : undefined);
    const claimedAll = proxy.mode === 'sotw' && set && sync?.acked !== undefined && sync.acked === sotwVersion(type, set);
    const names = new Set<string>([...type.live.keys(), ...(type.awaiting ? type.inflight.keys() : [])]);
    if (set) for (const name of type.wildcard ? set.names : type.names) if (set.get(name)) names.add(name);
    for (const name of [...names].sort()) {
      const wanted = due(name);
      const live = type.live.get(name);
      const runs = live?.version ?? (claimedAll && wanted ? wanted.version : undefined);
      const sent = type.awaiting ? type.inflight.get(name) : undefined;
      const base = { typeUrl: type.typeUrl, name };
      if (sent && sent.version !== runs) {
        out.push({ ...base, version: sent.version, resource: sent, configStatus: 'STALE', clientStatus: runs ? 'ACKED' : 'REQUESTED', lastUpdated: sentAt });
      } else if (wanted && wanted.version !== runs) {
        if (nack) {
          out.push({
            ...base,
            version: wanted.version,
            resource: wanted,
            configStatus: 'ERROR',
            clientStatus: 'NACKED',
            lastUpdated: t.ackedAt,
            error: { message: nack.message, version: nack.version, at: t.nackedAt },
          });
        } else {
          out.push({ ...base, version: wanted.version, resource: wanted, configStatus: 'NOT_SENT', clientStatus: runs ? 'ACKED' : 'REQUESTED', lastUpdated: t.ackedAt });
        }
      } else if (runs !== undefined) {
        const removing = !wanted && type.awaiting && !sent;
        out.push({ ...base, version: runs, resource: live ?? wanted, configStatus: removing ? 'STALE' : 'SYNCED', clientStatus: 'ACKED', lastUpdated: t.ackedAt });
      }
    }
  }
  return out;
}

/** The version a SotW response of this subscription carries for `set` (see SotwStream's candidates). */
function sotwVersion(type: TypeView, set: NonNullable<ReturnType<Snapshot['resources']>>): string {
  if (type.wildcard) return set.version;
  const picked: EncodedResource[] = [];
  for (const name of [...type.names].sort()) {
    const r = set.get(name);
    if (r) picked.push(r);
  }
  return resourcesVersion(picked);
}

// ---------------------------------------------------------------------------------------------
// envoy.type.matcher.v3.NodeMatcher, on the node of the stream's first request
// ---------------------------------------------------------------------------------------------

/** A decoded StringMatcher (protobufjs plain object, oneofs named). */
export type StringMatcher = Record<string, any>;

export class UnsupportedMatcher extends Error {
  override name = 'UnsupportedMatcher';
}

export function matchString(m: StringMatcher | undefined, value: string): boolean {
  if (!m) return true;
  const ci = m['ignore_case'] === true;
  const v = ci ? value.toLowerCase() : value;
  const arg = (key: string) => (ci ? String(m[key]).toLowerCase() : String(m[key]));
  switch (m['match_pattern']) {
    case 'exact':
      return v === arg('exact');
    case 'prefix':
      return v.startsWith(arg('prefix'));
    case 'suffix':
      return v.endsWith(arg('suffix'));
    case 'contains':
      return v.includes(arg('contains'));
    case 'safe_regex':
      // RE2 and JavaScript agree on the common syntax; the whole value must match, as in Envoy.
      return new RegExp(`^(?:${m['safe_regex']?.regex ?? ''})$`).test(value);
    case undefined:
      return true;
    default:
      throw new UnsupportedMatcher(`string matcher ${String(m['match_pattern'])} is not supported`);
  }
}

/** A decoded NodeMatcher: node_id, and node_metadatas (StructMatchers: path of keys, ValueMatcher). */
export function matchNode(matcher: Record<string, any>, node: NodeInfo | undefined): boolean {
  if (!node) return false;
  if (!matchString(matcher['node_id'], node.id)) return false;
  for (const sm of (matcher['node_metadatas'] ?? []) as Record<string, any>[]) {
    let value: unknown = node.metadata;
    for (const seg of (sm['path'] ?? []) as Record<string, any>[]) {
      value = value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>)[seg['key']] : undefined;
    }
    if (!matchValue(sm['value'], value)) return false;
  }
  return true;
}

function matchValue(m: Record<string, any> | undefined, value: unknown): boolean {
  if (!m) return true;
  switch (m['match_pattern']) {
    case 'string_match':
      return typeof value === 'string' && matchString(m['string_match'], value);
    case 'bool_match':
      return value === m['bool_match'];
    case 'present_match':
      return (value !== undefined && value !== null) === (m['present_match'] === true);
    case 'null_match':
      return value === null || value === undefined;
    case 'double_match': {
      const d = m['double_match'];
      if (typeof value !== 'number') return false;
      if (d?.exact !== undefined) return value === d.exact;
      if (d?.range) return value >= (d.range.start ?? -Infinity) && value < (d.range.end ?? Infinity);
      return true;
    }
    default:
      throw new UnsupportedMatcher(`value matcher ${String(m['match_pattern'])} is not supported`);
  }
}
