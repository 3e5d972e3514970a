import { Subject } from 'rxjs';
import type { NodeGroup } from './node-identity.js';

export interface NackRecord {
  readonly typeUrl: string;
  readonly version: string;
  readonly message: string;
  /** Node ids of the proxies that rejected this version. */
  readonly nodeIds: ReadonlySet<string>;
}

/** Hooks for metrics; called synchronously on every push and answer, so keep them cheap. */
export interface XdsObserver {
  pushed(typeUrl: string, mode: 'sotw' | 'delta', bytes: number): void;
  streamFailed(code: string): void;
  answered(typeUrl: string, mode: 'sotw' | 'delta', accepted: boolean, latencyMs: number | undefined): void;
}

/** Follows versions through pushes and ACKs (where a change's time goes); called on every push and ACK, so keep it cheap. */
export interface PushTracer {
  sent(proxy: ProxyInfo, typeUrl: string, version: string): void;
  acked(proxy: ProxyInfo, typeUrl: string, version: string): void;
  disconnected(proxy: ProxyInfo): void;
}

export interface TypeSyncState {
  /** Version of the last response sent on the stream. */
  sent?: string;
  /** Responses of this type sent on the stream. */
  responses: number;
  /** Version the proxy last accepted. */
  acked?: string;
  /** Set while the last answered response was rejected. */
  nack?: { version: string; message: string };
  /** performance.now() when the unanswered response went out. */
  sentAt?: number;
}

export interface ProxyInfo {
  readonly streamId: number;
  readonly nodeId: string;
  readonly mode: 'sotw' | 'delta';
  readonly peer: string;
  group?: NodeGroup;
  readonly types: Map<string, TypeSyncState>;
  /** Every subscribed type is in step with the group's current snapshot, nothing in flight. */
  synced: boolean;
  /** performance.now() when the proxy last fell out of step (or connected); undefined while in step. */
  unsyncedSince?: number;
  /** The version of a resource the proxy runs (accepted), if it runs it. */
  runs?(typeUrl: string, name: string): string | undefined;
}

/** A stream vsxds ended with an error status: why a proxy is not getting configuration. */
export interface StreamError {
  readonly at: string;
  readonly nodeId: string;
  readonly peer: string;
  readonly code: string;
  readonly details: string;
}

const KEPT_STREAM_ERRORS = 100;

export type ProxyEvent =
  | { readonly kind: 'connected' | 'disconnected' | 'grouped'; readonly proxy: ProxyInfo }
  | { readonly kind: 'ack'; readonly proxy: ProxyInfo; readonly typeUrl: string; readonly version: string }
  | { readonly kind: 'nack'; readonly proxy: ProxyInfo; readonly typeUrl: string; readonly version: string; readonly message: string };

/**
 * What every connected proxy was sent, accepted and rejected, per type, and the rejected versions
 * per node group. This is the surface the rest of vsxds (status writer, metrics, debug endpoints)
 * reads; it is written only by the ADS streams.
 */
export class ProxyStatusRegistry {
  private readonly proxies = new Map<number, ProxyInfo>();
  private readonly nacks = new Map<string, Map<string, { version: string; message: string; nodeIds: Set<string> }>>();
  private readonly subject = new Subject<ProxyEvent>();
  readonly events$ = this.subject.asObservable();
  observer?: XdsObserver;
  tracer?: PushTracer;
  private readonly errors: StreamError[] = [];

  connected(proxy: ProxyInfo): void {
    this.proxies.set(proxy.streamId, proxy);
    this.subject.next({ kind: 'connected', proxy });
  }

  grouped(proxy: ProxyInfo, group: NodeGroup): void {
    // A proxy that moves leaves its old group's rejections behind.
    if (proxy.group && proxy.group.key !== group.key) this.forgetNacks(proxy, proxy.group);
    proxy.group = group;
    this.subject.next({ kind: 'grouped', proxy });
  }

  disconnected(proxy: ProxyInfo): void {
    if (!this.proxies.delete(proxy.streamId)) return;
    this.tracer?.disconnected(proxy);
    if (proxy.group) this.forgetNacks(proxy, proxy.group);
    this.subject.next({ kind: 'disconnected', proxy });
  }

  private forgetNacks(proxy: ProxyInfo, group: NodeGroup): void {
    for (const rec of this.nacks.get(group.key)?.values() ?? []) rec.nodeIds.delete(proxy.nodeId);
  }

  /** The last streams ended with an error, newest last. */
  streamErrors(): readonly StreamError[] {
    return this.errors;
  }

  failed(proxy: ProxyInfo, code: string, details: string): void {
    this.errors.push({ at: new Date().toISOString(), nodeId: proxy.nodeId, peer: proxy.peer, code, details });
    if (this.errors.length > KEPT_STREAM_ERRORS) this.errors.shift();
    this.observer?.streamFailed(code);
  }

  sent(proxy: ProxyInfo, typeUrl: string, version: string, bytes: number): void {
    const st = this.typeState(proxy, typeUrl);
    st.sent = version;
    st.responses += 1;
    st.sentAt = performance.now();
    this.observer?.pushed(typeUrl, proxy.mode, bytes);
    this.tracer?.sent(proxy, typeUrl, version);
  }

  private answered(proxy: ProxyInfo, st: TypeSyncState, typeUrl: string, accepted: boolean): void {
    const latency = st.sentAt === undefined ? undefined : performance.now() - st.sentAt;
    delete st.sentAt;
    this.observer?.answered(typeUrl, proxy.mode, accepted, latency);
  }

  /** The proxy told the version it holds (reconnect), without us sending it on this stream. */
  holds(proxy: ProxyInfo, typeUrl: string, version: string): void {
    const st = this.typeState(proxy, typeUrl);
    st.sent = version;
    st.acked = version;
  }

  ack(proxy: ProxyInfo, typeUrl: string, version: string): void {
    const st = this.typeState(proxy, typeUrl);
    st.acked = version;
    delete st.nack;
    this.answered(proxy, st, typeUrl, true);
    this.tracer?.acked(proxy, typeUrl, version);
    const groupNacks = proxy.group ? this.nacks.get(proxy.group.key) : undefined;
    const rec = groupNacks?.get(typeUrl);
    if (groupNacks && rec && rec.version !== version) {
      // The group has moved past the rejected version.
      groupNacks.delete(typeUrl);
    }
    this.subject.next({ kind: 'ack', proxy, typeUrl, version });
  }

  nack(proxy: ProxyInfo, typeUrl: string, version: string, message: string): void {
    const st = this.typeState(proxy, typeUrl);
    st.nack = { version, message };
    this.answered(proxy, st, typeUrl, false);
    if (proxy.group) {
      let groupNacks = this.nacks.get(proxy.group.key);
      if (!groupNacks) this.nacks.set(proxy.group.key, (groupNacks = new Map()));
      const rec = groupNacks.get(typeUrl);
      if (rec && rec.version === version) {
        rec.message = message;
        rec.nodeIds.add(proxy.nodeId);
      } else {
        groupNacks.set(typeUrl, { version, message, nodeIds: new Set([proxy.nodeId]) });
      }
    }
    this.subject.next({ kind: 'nack', proxy, typeUrl, version, message });
  }

  /** The rejected versions of a node group, one per type at most: the latest. */
  groupNacks(groupKey: string): NackRecord[] {
    const groupNacks = this.nacks.get(groupKey);
    if (!groupNacks) return [];
    return [...groupNacks].map(([typeUrl, r]) => ({ typeUrl, version: r.version, message: r.message, nodeIds: new Set(r.nodeIds) }));
  }

  /** Connected proxies, optionally only one group's. */
  list(groupKey?: string): ProxyInfo[] {
    const all = [...this.proxies.values()];
    return groupKey === undefined ? all : all.filter((p) => p.group?.key === groupKey);
  }

  private typeState(proxy: ProxyInfo, typeUrl: string): TypeSyncState {
    let st = proxy.types.get(typeUrl);
    if (!st) proxy.types.set(typeUrl, (st = { responses: 0 }));
    return st;
  }
}

/** Proxies by node group key, in the order given; `(identifying)` for those whose identity is not known yet. */
export function proxiesByGroup(proxies: readonly ProxyInfo[]): Map<string, ProxyInfo[]> {
  const groups = new Map<string, ProxyInfo[]>();
  for (const p of proxies) {
    const key = p.group?.key ?? '(identifying)';
    const list = groups.get(key);
    if (list) list.push(p);
    else groups.set(key, [p]);
  }
  return groups;
}
