import { status as GrpcStatus, type ServerDuplexStream } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { filter, type Subscription } from 'rxjs';
import { exposeStream, type StreamView } from './client-status.js';
import { refuseIdentity, type NodeAuthMode } from './node-auth.js';
import {
  describeReference,
  NodeIdentityError,
  nodeReference,
  resolveReference,
  type NodeGroup,
  type NodeInfo,
  type NodeGrouping,
  type NodeReference,
  type PodIdentity,
  type PodLookup,
} from './node-identity.js';
import { isMalformed, type MalformedRequest } from './requests.js';
import type { SnapshotCache } from './snapshot-cache.js';
import type { EncodedResource, ResourceSet, Snapshot } from './snapshot.js';
import type { ProxyInfo, ProxyStatusRegistry } from './status-registry.js';
import { compareTypesForPush, PUSH_ORDER, shortTypeName } from './type-urls.js';
import { withNonce } from './wire.js';

export interface StreamContext {
  readonly cache: SnapshotCache;
  readonly status: ProxyStatusRegistry;
  readonly podLookup?: PodLookup;
  /** Which proxies share a snapshot; without it, those of the same namespace and labels. */
  readonly grouping?: NodeGrouping;
  readonly log: Logger;
  readonly nodeAuth: NodeAuthMode;
  /** Requests a stream may send per second, with a burst of the same size; 0 = unlimited. */
  readonly maxRequestsPerSecond: number;
  /** Resource names one stream may subscribe to, over all types. */
  readonly maxSubscribedNames: number;
  /** How long what a replaced resource referenced stays after the replacement is ACKed (see replaced); 0: not at all. */
  readonly removalDelayMs: number;
  /** What a stream whose proxy is not identified yet (its pod unknown) may hold, and for how long. */
  readonly unidentified: UnidentifiedLimits;
  /** Called when the stream ends, whatever the reason. */
  readonly onClose: () => void;
}

/**
 * Requests that arrive before the proxy is identified are kept until it is: bounded per stream
 * (count and bytes), over all such streams (bytes), and in time.
 */
export interface UnidentifiedLimits {
  readonly maxRequests: number;
  readonly maxBytes: number;
  /** How long a stream waits for its pod to appear before it is ended. */
  readonly timeoutMs: number;
  /** Shared by every stream of the server: bytes held by all unidentified streams together. */
  readonly total: { used: number; readonly limit: number };
}

/** Per-type state every ADS stream keeps, whatever the protocol variant. */
export interface BaseTypeState {
  readonly typeUrl: string;
  /** Wildcard subscription (LDS/CDS without names, or "*"). */
  wildcard: boolean;
  /** Explicitly subscribed names. */
  readonly names: Set<string>;
  /** Nonce of the last response; only a request that echoes it answers that response. */
  nonce?: string;
  /** A response is out and not yet ACKed or NACKed; nothing more of this type is sent meanwhile. */
  awaiting: boolean;
  /** Resources of the response in flight. */
  inflight: ReadonlyMap<string, EncodedResource>;
  /**
   * Resources the proxy runs: those of its accepted responses, and those it reported running when
   * it (re)subscribed, found by their versions in the group's recent snapshots (see seedLive).
   */
  live: ReadonlyMap<string, EncodedResource>;
  /**
   * `live` is all the proxy runs of this type. False while a reconnecting proxy runs resources
   * whose content vsxds does not know (versions no recent snapshot had): those may reference
   * anything, so nothing they could reference is removed until this type's next accepted response.
   */
  knowsLive: boolean;
  /** Names the proxy reported running at a version vsxds could not find (delta only; SotW reports a type version). */
  readonly unresolved: Map<string, string>;
  /** What the proxy reported on (re)subscribing waits to be looked up in the recent snapshots (seedLive). */
  reportPending: boolean;
  /**
   * Counts the requests that changed what this type would be sent (subscribed names, wildcard,
   * the version or resources the proxy says it holds), so a skip (see `inStep`) never outlives one.
   */
  subscription: number;
  /** The set this type was last computed against (in step with it, or sent from it); see `inStep`. */
  settled?: ResourceSet;
  /** `subscription` when `settled` was recorded. */
  settledSubscription: number;
  /** Id of the last shared response sent with its own nonce (see `framed`); 0 before any. */
  sharedId: number;
  /** A set with every name of `live` and `inflight`, when known (see `mayHaveLost`). */
  contained?: ResourceSet;
}

/**
 * A response body (everything but the nonce) that the streams of a group which are due the same
 * response share, with its own nonce and the response framed with it, made when first sent.
 */
export interface SharedResponse {
  readonly body: Buffer;
  /** Unique per shared response, increasing in the order they are made (nextSharedId). */
  readonly id: number;
  nonce?: string;
  framed?: Buffer;
}

let lastSharedId = 0;

export function nextSharedId(): number {
  return ++lastSharedId;
}

/** A type's state before its first request is applied. */
export function baseState(typeUrl: string): BaseTypeState {
  // Every field present from the start, so all states of a kind share one object shape.
  return {
    typeUrl,
    wildcard: false,
    names: new Set(),
    nonce: undefined,
    awaiting: false,
    inflight: new Map(),
    live: new Map(),
    knowsLive: true,
    unresolved: new Map(),
    reportPending: false,
    subscription: 0,
    settled: undefined,
    settledSubscription: 0,
    sharedId: 0,
    contained: undefined,
  };
}

/** The last answer per target set: the streams of a group move between the same two sets. */
const kept = new WeakMap<ResourceSet, { readonly from: ResourceSet; readonly all: boolean }>();

/** Whether `to` has every name `from` has. */
function keepsAllNames(from: ResourceSet, to: ResourceSet): boolean {
  const said = to.keepsAllOf(from);
  if (said !== undefined) return said;
  const memo = kept.get(to);
  if (memo?.from === from) return memo.all;
  let all = true;
  for (const name of from.names) {
    if (!to.get(name)) {
      all = false;
      break;
    }
  }
  kept.set(to, { from, all });
  return all;
}

type Call<Req> = ServerDuplexStream<Req | MalformedRequest, Buffer>;

let nextStreamId = 1;

/**
 * Protocol mechanics shared by the SotW and delta ADS streams: node identity from the first
 * request only, waiting for the group's snapshot, make-before-break ordering across types,
 * and ending the stream with a status that names what went wrong.
 */
export abstract class AdsStream<Req extends { node?: NodeInfo; typeUrl: string; size?: number }, State extends BaseTypeState> {
  readonly proxy: ProxyInfo;
  protected log: Logger;
  /** Debug logging is on: per-response debug lines are built only then (a child logger keeps its level). */
  protected readonly debug: boolean;
  protected snapshot?: Snapshot;
  protected readonly types = new Map<string, State>();
  /** `types` in push order; rebuilt when a type is added. */
  private ordered?: State[];
  private nonceCounter = 0;
  private group?: NodeGroup;
  private pending: Req[] = [];
  /** Bytes of `pending`, counted in `ctx.unidentified.total` too. */
  private pendingBytes = 0;
  private resolving?: Subscription;
  /** Follows the pod's labels and the grouping, so a relabelled proxy moves without reconnecting. */
  private regrouping?: Subscription;
  /** The pod the proxy was identified as, as last resolved. */
  private pod?: PodIdentity;
  /** The logger before the group was bound to it. */
  private identifiedLog?: Logger;
  private identifyTimer?: NodeJS.Timeout;
  /** The proxy reported resources it runs when it subscribed (see referrersUnknown). */
  private reconnected = false;
  /** Resources the proxy replaced lately, oldest first, whose references stay until `until` (see replaced). */
  private lingering: Array<{ readonly resource: EncodedResource; readonly until: number }> = [];
  private lingerTimer?: NodeJS.Timeout;
  private unwatch?: () => void;
  private closed = false;
  private readonly warnedTypes = new Set<string>();
  private tokens: number;
  private lastRefill = performance.now();
  /** The node of the first request, for CSDS. */
  private node?: NodeInfo;

  constructor(
    protected readonly call: Call<Req>,
    protected readonly ctx: StreamContext,
    mode: 'sotw' | 'delta',
  ) {
    this.tokens = ctx.maxRequestsPerSecond;
    const streamId = nextStreamId++;
    this.proxy = {
      streamId,
      nodeId: '',
      mode,
      peer: call.getPeer(),
      types: new Map(),
      synced: false,
      unsyncedSince: performance.now(),
      runs: (typeUrl, name) => this.types.get(typeUrl)?.live.get(name)?.version,
    };
    this.log = ctx.log.child({ stream: streamId, mode });
    this.debug = this.log.isLevelEnabled('debug');
    exposeStream(this.proxy, () => this.clientView());
    call.on('data', (req: Req | MalformedRequest) => this.onData(req));
    call.on('end', () => this.finish());
    call.on('error', (err) => {
      this.log.debug({ err: err.message }, 'stream error');
      this.cleanup();
    });
    call.on('cancelled', () => this.cleanup());
    call.on('close', () => this.cleanup());
  }

  /** Validate and apply one request of a known type. Returns false when the request is ignored. */
  protected abstract applyRequest(req: Req, state: State, first: boolean): void;
  protected abstract newState(typeUrl: string): State;
  /**
   * Send what this type needs now, if anything. Returns true when a response went out; false
   * means the type is in step with the snapshot. `held`: resources of the snapshot set to send
   * at the version given instead (the proxy's), or not at all when none is (see heldBack).
   */
  protected abstract maybeRespond(state: State, snapshot: Snapshot, held?: ReadonlyMap<string, EncodedResource | undefined>): boolean;
  /**
   * Fills `live` from what the proxy reported running when it (re)subscribed, looked up in the
   * group's recent snapshots (newest first), and sets `knowsLive`. Until this ran, `live` is empty.
   */
  protected abstract seedLive(state: State, recent: readonly Snapshot[]): void;

  /** What CSDS reads of this stream (see client-status.ts). */
  private clientView(): StreamView {
    const types = [...this.types.values()].map((s) => ({
      typeUrl: s.typeUrl,
      wildcard: s.wildcard,
      names: s.names,
      awaiting: s.awaiting,
      live: s.live,
      inflight: s.inflight,
    }));
    return { node: this.node, snapshot: this.snapshot, types };
  }

  protected nextNonce(): string {
    this.nonceCounter += 1;
    return this.nonceCounter.toString(36);
  }

  private onData(req: Req | MalformedRequest): void {
    if (this.closed) return;
    try {
      if (isMalformed(req)) {
        this.fail(req.tooLarge ? GrpcStatus.RESOURCE_EXHAUSTED : GrpcStatus.INVALID_ARGUMENT, req.malformed);
        return;
      }
      if (!this.withinRate()) {
        this.fail(GrpcStatus.RESOURCE_EXHAUSTED, `this stream sent more than ${this.ctx.maxRequestsPerSecond} requests per second (the per-stream limit)`);
        return;
      }
      if (!this.group) {
        const first = this.pending.length === 0 && !this.resolving;
        if (this.hold(req) && first) this.identify(req);
        return;
      }
      this.handle(req);
    } catch (err) {
      this.log.error({ err }, 'failed to handle request');
      this.fail(GrpcStatus.INTERNAL, `vsxds failed to handle the request: ${(err as Error).message}`);
    }
  }

  /** Keeps a request until the proxy is identified, within the limits; false when the stream ended instead. */
  private hold(req: Req): boolean {
    const limits = this.ctx.unidentified;
    const size = req.size ?? 0;
    const waiting = 'before vsxds knew which proxy it is (its pod is not known yet)';
    if (this.pending.length >= limits.maxRequests) {
      this.fail(GrpcStatus.RESOURCE_EXHAUSTED, `this stream sent more than ${limits.maxRequests} requests ${waiting}: the limit for an unidentified stream`);
      return false;
    }
    if (this.pendingBytes + size > limits.maxBytes) {
      this.fail(GrpcStatus.RESOURCE_EXHAUSTED, `this stream sent more than ${limits.maxBytes} bytes of requests ${waiting}: the limit for an unidentified stream`);
      return false;
    }
    if (limits.total.used + size > limits.total.limit) {
      this.fail(GrpcStatus.RESOURCE_EXHAUSTED, `the streams whose proxy is not identified yet hold ${limits.total.limit} bytes of requests together (the limit); this one is ended`);
      return false;
    }
    this.pending.push(req);
    this.pendingBytes += size;
    limits.total.used += size;
    return true;
  }

  /** Forgets the requests kept while unidentified (handed over or dropped), releasing their budget. */
  private releasePending(): Req[] {
    const queued = this.pending;
    this.pending = [];
    this.ctx.unidentified.total.used -= this.pendingBytes;
    this.pendingBytes = 0;
    clearTimeout(this.identifyTimer);
    this.identifyTimer = undefined;
    return queued;
  }

  private identify(first: Req): void {
    if (!first.node) {
      this.fail(GrpcStatus.INVALID_ARGUMENT, 'the first request on an ADS stream must carry node');
      return;
    }
    (this.proxy as { nodeId: string }).nodeId = first.node.id;
    this.node = first.node;
    this.log = this.log.child({ node: first.node.id });
    this.ctx.status.connected(this.proxy);
    let ref: NodeReference;
    try {
      ref = nodeReference(first.node);
    } catch (err) {
      this.fail(GrpcStatus.INVALID_ARGUMENT, (err as Error).message);
      return;
    }
    const attempt = (): boolean => {
      try {
        const resolved = resolveReference(ref, this.ctx.podLookup, this.ctx.grouping);
        if (!resolved) return false;
        const refused = refuseIdentity(this.ctx.nodeAuth, ref, resolved.pod, {
          peer: this.proxy.peer,
          certificate: this.call.getAuthContext?.()?.sslPeerCertificate,
        });
        if (refused) {
          this.fail(GrpcStatus.PERMISSION_DENIED, refused);
          return true;
        }
        this.pod = resolved.pod;
        this.joinGroup(resolved.group);
        this.followRegrouping(ref);
        return true;
      } catch (err) {
        this.fail(err instanceof NodeIdentityError ? GrpcStatus.INVALID_ARGUMENT : GrpcStatus.INTERNAL, (err as Error).message);
        return true;
      }
    };
    if (attempt()) return;
    this.log.warn({ ref }, 'waiting for the pod of this proxy to appear in the pod source');
    const timeoutMs = this.ctx.unidentified.timeoutMs;
    this.identifyTimer = setTimeout(() => {
      this.fail(
        GrpcStatus.NOT_FOUND,
        `node.id names ${describeReference(ref)}, which the pod source did not know within ${timeoutMs / 1000} s (the identification timeout); check node.id, or that the pod exists`,
      );
    }, timeoutMs);
    this.identifyTimer.unref();
    this.resolving = this.ctx.podLookup?.changes$.subscribe(() => {
      if (!this.closed && attempt()) this.resolving?.unsubscribe();
    });
  }

  private joinGroup(group: NodeGroup): void {
    if (this.closed) return;
    this.resolving?.unsubscribe();
    this.group = group;
    this.ctx.status.grouped(this.proxy, group);
    this.identifiedLog = this.log;
    this.log = this.log.child({ group: group.key });
    this.log.info('proxy connected');
    for (const req of this.releasePending()) {
      if (this.closed) return;
      this.handle(req);
    }
    this.unwatch = this.ctx.cache.watch(group, (snapshot) => this.onSnapshot(snapshot));
  }

  /**
   * The proxy's group follows its pod's labels and the grouping: when either places it elsewhere,
   * the stream watches the new group's snapshot instead, and what the proxy runs is updated to
   * it as to any change (make-before-break included), on the same stream.
   */
  private followRegrouping(ref: NodeReference): void {
    const { grouping, podLookup } = this.ctx;
    const subs: Subscription[] = [];
    if (grouping) subs.push(grouping.changes$.pipe(filter((ns) => ns === this.group?.namespace)).subscribe(() => this.regroup(ref, true)));
    if (podLookup && ref.kind !== 'metadata') subs.push(podLookup.changes$.subscribe(() => this.regroup(ref, false)));
    if (subs.length === 0) return;
    this.regrouping = subs[0];
    for (const sub of subs.slice(1)) this.regrouping?.add(sub);
  }

  private regroup(ref: NodeReference, groupingChanged: boolean): void {
    if (this.closed || !this.group) return;
    let resolved: ReturnType<typeof resolveReference>;
    try {
      resolved = resolveReference(ref, this.ctx.podLookup, this.ctx.grouping);
    } catch {
      return;
    }
    // A pod that is gone keeps its proxy where it was; one unchanged needs no new group.
    if (!resolved || (!groupingChanged && resolved.pod === this.pod)) return;
    this.pod = resolved.pod;
    const group = resolved.group;
    if (group.key === this.group.key) return;
    this.unwatch?.();
    this.log.info({ to: group.key }, 'proxy moves to another node group');
    this.group = group;
    this.ctx.status.grouped(this.proxy, group);
    this.log = (this.identifiedLog ?? this.log).child({ group: group.key });
    this.unwatch = this.ctx.cache.watch(group, (snapshot) => this.onSnapshot(snapshot));
  }

  /** Token bucket: `maxRequestsPerSecond` per second, bursts up to the same number. */
  private withinRate(): boolean {
    const rate = this.ctx.maxRequestsPerSecond;
    if (rate <= 0) return true;
    const now = performance.now();
    this.tokens = Math.min(rate, this.tokens + ((now - this.lastRefill) / 1000) * rate);
    this.lastRefill = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private handle(req: Req): void {
    if (req.typeUrl === '') {
      this.fail(GrpcStatus.INVALID_ARGUMENT, 'ADS requests must set type_url');
      return;
    }
    if (!this.serves(req.typeUrl)) {
      if (!this.warnedTypes.has(req.typeUrl)) {
        this.warnedTypes.add(req.typeUrl);
        this.log.warn({ typeUrl: req.typeUrl }, 'ignoring requests for a resource type vsxds does not serve');
      }
      return;
    }
    let state = this.types.get(req.typeUrl);
    const first = !state;
    if (!state) {
      state = this.newState(req.typeUrl);
      this.types.set(req.typeUrl, state);
      this.ordered = undefined;
    }
    this.applyRequest(req, state, first);
    if (this.subscribedNames() > this.ctx.maxSubscribedNames) {
      this.fail(GrpcStatus.RESOURCE_EXHAUSTED, `this stream subscribed to more than ${this.ctx.maxSubscribedNames} resource names (the subscription limit)`);
      return;
    }
    this.pump();
  }

  private subscribedNames(): number {
    let n = 0;
    for (const state of this.types.values()) n += state.names.size;
    return n;
  }

  private serves(typeUrl: string): boolean {
    return PUSH_ORDER.includes(typeUrl) || (this.snapshot?.typeUrls().includes(typeUrl) ?? false);
  }

  private onSnapshot(snapshot: Snapshot): void {
    if (this.closed) return;
    this.snapshot = snapshot;
    try {
      this.pump();
    } catch (err) {
      this.log.error({ err }, 'failed to push snapshot');
      this.fail(GrpcStatus.INTERNAL, `vsxds failed to push the configuration: ${(err as Error).message}`);
    }
  }

  /**
   * Sends what is due, type by type in make-before-break order: clusters, endpoints, listeners.
   * Make-before-break is per resource: while an earlier type has a response in flight, a later
   * type still goes, holding back only the resources that reference something the proxy does
   * not run yet (a listener whose cluster is not ACKed keeps its old version, or waits if new).
   * So a listener waits for its own cluster only, and a proxy sent new clusters all the time
   * (one per call) still gets the listeners whose clusters it has. Endpoints reference nothing:
   * they go while clusters are in flight, which they must, as Envoy ACKs new clusters only once
   * their endpoints arrived.
   */
  protected pump(): void {
    const snapshot = this.snapshot;
    if (!snapshot || this.closed) return;
    this.ordered ??= [...this.types.values()].sort((a, b) => compareTypesForPush(a.typeUrl, b.typeUrl));
    // What a reconnecting proxy runs is known before anything is decided for any type.
    for (const state of this.ordered) {
      if (!state.reportPending) continue;
      state.reportPending = false;
      state.contained = undefined;
      this.reconnected = true;
      const recent = this.group ? this.ctx.cache.recent(this.group.key) : [];
      this.seedLive(state, recent[0] === snapshot ? recent : [snapshot, ...recent]);
    }
    let earlierInFlight = false;
    let held = false;
    for (const state of this.ordered) {
      const waitingFor = earlierInFlight ? this.heldBack(state, snapshot) : undefined;
      if (waitingFor) held = true;
      if (state.awaiting || this.maybeRespond(state, snapshot, waitingFor)) earlierInFlight = true;
    }
    const synced = this.ordered.length > 0 && !earlierInFlight && !held;
    if (synced !== this.proxy.synced) this.proxy.unsyncedSince = synced ? undefined : performance.now();
    this.proxy.synced = synced;
  }

  /**
   * The resources of this type's snapshot set that reference a resource of another type the
   * proxy does not run yet (not ACKed), each with the version the proxy has or is being sent,
   * if any: what a response must hold back now. Undefined when nothing is held back.
   */
  private heldBack(state: State, snapshot: Snapshot): ReadonlyMap<string, EncodedResource | undefined> | undefined {
    const set = snapshot.resources(state.typeUrl);
    let held: Map<string, EncodedResource | undefined> | undefined;
    for (const r of set.entries) {
      for (const ref of r.references) {
        const other = this.types.get(ref.typeUrl);
        if (!other || other === state || other.live.has(ref.name) || other.unresolved.has(ref.name)) continue;
        (held ??= new Map()).set(r.name, state.inflight.get(r.name) ?? state.live.get(r.name));
        break;
      }
    }
    return held;
  }

  /**
   * Whether the type is known to need nothing from `set`: the last computation for it ran against
   * this very set object, with the subscription as it is now, and retained nothing. What that
   * computation decided stands, so it is not redone (with a ResourceSet kept across snapshots,
   * an endpoint change costs CDS and LDS this one comparison per stream):
   * - the set, the subscription and the version or resources the proxy holds are the same;
   * - `retained` stays empty: it returns resources of this type that the proxy has, `set` lacks
   *   and another type the proxy has still references. Responses of this type computed from `set`
   *   with nothing retained add nothing outside `set`; other types are sent their snapshot sets,
   *   whose references all lie within `set` (the snapshot is checked), plus old resources they
   *   already had, so references outside `set` only ever go away while `set` is current;
   * - an ACK or NACK changes what the proxy runs or what was offered to it, never what is due:
   *   an accepted response was computed from `set`, and a rejected one is not offered again.
   * A computation that retained resources is not settled: those go as soon as the referring
   * type lets go, which the next pump must see.
   */
  protected inStep(state: State, set: ResourceSet): boolean {
    return state.settled === set && state.settledSubscription === state.subscription;
  }

  /** Records what the type was computed against; `retained`: the computation kept resources `set` lacks. */
  protected settle(state: State, set: ResourceSet, retained: boolean): void {
    state.settled = retained ? undefined : set;
    state.settledSubscription = state.subscription;
  }

  /**
   * Resources of `typeUrl` that another type the proxy runs still references but the snapshot
   * no longer has: they stay until the referring resource lets go (make-before-break).
   */
  protected retained(typeUrl: string, snapshot: Snapshot): EncodedResource[] {
    const current = snapshot.resources(typeUrl);
    const state = this.types.get(typeUrl);
    if (!state) return [];
    // Only what the proxy has and the snapshot lost can be retained: usually nothing, and this
    // check is much cheaper than walking every reference.
    if (!this.mayHaveLost(state, current)) return [];
    const out = new Map<string, EncodedResource>();
    if (this.referrersUnknown(typeUrl, snapshot)) {
      // What references these is not known: keep every one the proxy runs or is being sent.
      for (const holder of [state.inflight, state.live]) {
        for (const r of holder.values()) if (!current.get(r.name) && !out.has(r.name)) out.set(r.name, r);
      }
      return [...out.values()];
    }
    const keep = (r: EncodedResource) => {
      for (const ref of r.references) {
        if (ref.typeUrl !== typeUrl || current.get(ref.name) || out.has(ref.name)) continue;
        const old = state.inflight.get(ref.name) ?? state.live.get(ref.name);
        if (old) out.set(ref.name, old);
      }
    };
    for (const other of this.types.values()) {
      if (other === state) continue;
      for (const holder of [other.live, other.inflight]) for (const r of holder.values()) keep(r);
    }
    for (const { resource } of this.lingering) if (resource.typeUrl !== typeUrl) keep(resource);
    return [...out.values()];
  }

  /**
   * The proxy accepted a response that replaced or removed `old`: what `old` referenced stays
   * `removalDelayMs` longer. Envoy ends the sessions of a cluster when the cluster goes, and the
   * replies to datagrams the old listener forwarded just before it was replaced are still on
   * their way back through those sessions.
   */
  protected replaced(old: EncodedResource | undefined): void {
    const delay = this.ctx.removalDelayMs;
    if (!old || delay <= 0 || old.references.length === 0) return;
    this.lingering.push({ resource: old, until: performance.now() + delay });
    if (!this.lingerTimer) this.scheduleLingering();
  }

  private scheduleLingering(): void {
    const first = this.lingering[0];
    if (!first || this.closed) return;
    this.lingerTimer = setTimeout(() => {
      this.lingerTimer = undefined;
      const now = performance.now();
      this.lingering = this.lingering.filter((l) => l.until > now);
      try {
        this.pump();
      } catch (err) {
        this.log.error({ err }, 'failed to push the configuration');
        this.fail(GrpcStatus.INTERNAL, `vsxds failed to push the configuration: ${(err as Error).message}`);
        return;
      }
      this.scheduleLingering();
    }, Math.max(0, first.until - performance.now()));
    this.lingerTimer.unref();
  }

  /**
   * Whether another type whose resources may reference `typeUrl` runs resources whose content
   * vsxds does not know (see knowsLive): then no resource of `typeUrl` the proxy runs may go.
   */
  protected referrersUnknown(typeUrl: string, snapshot: Snapshot): boolean {
    // A reconnecting proxy runs what it ran before: a type that references these and that it has
    // not subscribed to again yet (requests come one by one) may hold any of them.
    if (this.reconnected) {
      for (const other of snapshot.typeUrls()) {
        if (other !== typeUrl && !this.types.has(other) && snapshot.resources(other).referencedTypes().has(typeUrl)) return true;
      }
    }
    for (const other of this.types.values()) {
      if (other.typeUrl === typeUrl || other.knowsLive) continue;
      // Its current set says which types it references; an empty one says nothing of what the proxy runs.
      const set = snapshot.resources(other.typeUrl);
      if (set.names.length === 0 || set.referencedTypes().has(typeUrl)) return true;
    }
    return false;
  }

  /**
   * Whether the proxy has or is being sent resources of this type that `current` lacks. `contained`
   * remembers a set that holds every name of `live` and `inflight`; they only ever gain what a
   * response computed right after this check sends, which comes from `current` (or, when
   * something is retained, outside it: then this answered true and `contained` is cleared). So
   * while `current` is that set, or has all of its names, nothing is lost and neither map needs
   * to be walked: on an endpoint change that is every stream's case.
   */
  private mayHaveLost(state: State, current: ResourceSet): boolean {
    const contained = state.contained;
    if (contained && (contained === current || keepsAllNames(contained, current))) {
      state.contained = current;
      return false;
    }
    // Made from `contained`: what it lacks is among the names that changed.
    const changed = contained && current.changedSince(contained);
    if (changed) {
      for (const name of changed) {
        if (!current.get(name) && (state.live.has(name) || state.inflight.has(name) || state.unresolved.has(name))) {
          state.contained = undefined;
          return true;
        }
      }
      state.contained = current;
      return false;
    }
    for (const holder of [state.live, state.inflight, state.unresolved]) {
      for (const name of holder.keys()) {
        if (!current.get(name)) {
          state.contained = undefined;
          return true;
        }
      }
    }
    state.contained = current;
    return false;
  }

  /**
   * The response with `shared`'s body, and its nonce. A nonce only has to be unique on its stream,
   * so the streams that are sent the same shared response all get that response's own nonce
   * (`S` + its id in base 36) and the very same Buffer, framed once. Shared ids only grow, so a
   * type that is sent only shared responses newer than the last it was sent never gets a nonce
   * twice; one not newer than that (the same again after a resubscription, or an older one after a
   * change of names) gets a nonce of the stream's own counter instead, in a copy of the body.
   * Counter nonces are base 36 in lower case and shared ones start with an upper-case `S`, so the
   * two never meet, and no nonce is sent twice on a stream: a request that echoes an earlier
   * response's nonce is still recognised as stale.
   */
  protected framed(state: State, shared: SharedResponse): [string, Buffer] {
    if (shared.id > state.sharedId) {
      state.sharedId = shared.id;
      shared.nonce ??= `S${shared.id.toString(36)}`;
      shared.framed ??= withNonce(shared.body, shared.nonce);
      return [shared.nonce, shared.framed];
    }
    const nonce = this.nextNonce();
    return [nonce, withNonce(shared.body, nonce)];
  }

  protected write(bytes: Buffer): void {
    if (!this.closed) this.call.write(bytes);
  }

  protected typeLabel(typeUrl: string): string {
    return shortTypeName(typeUrl);
  }

  /** Ends the stream with a status naming the problem; other streams are not affected. */
  protected fail(code: GrpcStatus, details: string): void {
    if (this.closed) return;
    this.log.warn({ code: GrpcStatus[code], details }, 'ending ADS stream');
    this.ctx.status.failed(this.proxy, GrpcStatus[code] ?? String(code), details);
    this.cleanup();
    try {
      this.call.emit('error', { code, details });
    } catch {
      // The call may already be gone.
    }
  }

  private finish(): void {
    if (this.closed) return;
    this.cleanup();
    this.call.end();
  }

  private cleanup(): void {
    if (this.closed) return;
    this.closed = true;
    this.ctx.onClose();
    this.releasePending();
    clearTimeout(this.lingerTimer);
    this.resolving?.unsubscribe();
    this.regrouping?.unsubscribe();
    this.unwatch?.();
    this.ctx.status.disconnected(this.proxy);
    if (this.group) this.log.info('proxy disconnected');
  }
}
