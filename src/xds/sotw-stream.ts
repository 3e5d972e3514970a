import type { SotwRequest } from './requests.js';
import { AdsStream, baseState, nextSharedId, type BaseTypeState, type SharedResponse } from './ads-stream.js';
import { resourcesVersion, type EncodedResource, type ResourceSet, type Snapshot } from './snapshot.js';
import { WILDCARD_TYPES } from './type-urls.js';
import { stringField } from './wire.js';

interface SotwState extends BaseTypeState {
  /** Version of the last response, or the one the proxy said it holds when it (re)subscribed. */
  version?: string;
  /** The candidate memo key of the subscription: `*`, or the sorted explicit names. */
  memoKey: string;
  /** `resource_names` of the last request, to recognise the same list again (Envoy repeats it in every ACK). */
  requested?: readonly string[];
  /**
   * The client named resources (or `*`) on this type: from then on an empty `resource_names`
   * unsubscribes from everything; only a client that never named any means wildcard by it.
   */
  named: boolean;
}

/** A response for a subscription, shared by the streams with that subscription (framed: see AdsStream.framed). */
interface Candidate extends SharedResponse {
  readonly version: string;
  readonly resources: ReadonlyMap<string, EncodedResource>;
}

/**
 * State-of-the-world ADS: every response carries the full set the proxy subscribed to. A response
 * is sent when that set's version differs from what the proxy holds; a NACKed version is not sent
 * again until the configuration changes.
 */
export class SotwStream extends AdsStream<SotwRequest, SotwState> {
  protected newState(typeUrl: string): SotwState {
    // Object.assign, not a spread: a spread object literal takes about 450 bytes more per state.
    return Object.assign(baseState(typeUrl), { version: undefined, memoKey: 'names:', requested: undefined, named: false });
  }

  protected applyRequest(req: SotwRequest, state: SotwState): void {
    if (req.responseNonce !== '' && req.responseNonce !== state.nonce) {
      // Stale: it answers a response that a newer one has superseded.
      this.log.debug({ type: this.typeLabel(req.typeUrl), nonce: req.responseNonce }, 'ignoring stale-nonce request');
      return;
    }
    if (req.responseNonce === '') {
      // A (re)subscription: the proxy tells which version it already holds, if any.
      state.awaiting = false;
      state.version = req.versionInfo || undefined;
      state.inflight = new Map();
      state.subscription += 1;
      // Until the version it holds is found in a recent snapshot (seedLive), what it runs is unknown.
      state.live = new Map();
      state.knowsLive = !req.versionInfo;
      state.reportPending = !!req.versionInfo;
      if (req.versionInfo) this.ctx.status.holds(this.proxy, req.typeUrl, req.versionInfo);
    } else if (state.awaiting) {
      state.awaiting = false;
      const answered = state.version ?? '';
      if (req.errorDetail) {
        this.log.warn({ type: this.typeLabel(req.typeUrl), version: answered, error: req.errorDetail.message }, 'proxy rejected configuration');
        this.ctx.status.nack(this.proxy, req.typeUrl, answered, req.errorDetail.message);
      } else {
        if (this.ctx.removalDelayMs > 0) for (const [name, r] of state.live) if (state.inflight.get(name) !== r) this.replaced(r);
        state.live = state.inflight;
        state.knowsLive = true;
        this.ctx.status.ack(this.proxy, req.typeUrl, answered);
      }
      state.inflight = new Map();
    }
    const names = req.resourceNames;
    if (state.requested && sameList(state.requested, names)) return;
    state.requested = names;
    state.subscription += 1;
    state.wildcard = names.includes('*') || (names.length === 0 && !state.named && WILDCARD_TYPES.has(req.typeUrl));
    if (names.length > 0) state.named = true;
    state.names.clear();
    for (const n of names) if (n !== '*') state.names.add(n);
    state.memoKey = state.wildcard ? '*' : `names:${[...state.names].sort().join('\n')}`;
  }

  /**
   * A SotW proxy reports one version per type: the version of the response it last accepted. If
   * a recent snapshot's response for this subscription had that version, the proxy runs exactly
   * its resources; otherwise what it runs stays unknown until it accepts a response (knowsLive).
   */
  protected seedLive(state: SotwState, recent: readonly Snapshot[]): void {
    for (const snapshot of recent) {
      const candidate = memoCandidate(snapshot.resources(state.typeUrl), state);
      if (candidate.version !== state.version) continue;
      state.live = candidate.resources;
      state.knowsLive = true;
      return;
    }
  }

  protected maybeRespond(state: SotwState, snapshot: Snapshot, held?: ReadonlyMap<string, EncodedResource | undefined>): boolean {
    if (state.awaiting) return false;
    // Holding back from a proxy whose resources are not all known would remove the unknown ones: wait.
    if (held && !state.knowsLive) return false;
    const set = snapshot.resources(state.typeUrl);
    if (!held && this.inStep(state, set)) return false;
    const retained = this.retained(state.typeUrl, snapshot);
    const candidate = this.candidate(state, set, retained, held);
    // A response that held resources back is not in step with the set: look again next time.
    this.settle(state, set, retained.length > 0 || held !== undefined);
    if (candidate.version === state.version) return false;
    // All that changed is held back: nothing to tell the proxy yet.
    if (held && sameResources(candidate.resources, state.live)) return false;
    const [nonce, bytes] = this.framed(state, candidate);
    this.write(bytes);
    state.nonce = nonce;
    state.awaiting = true;
    state.version = candidate.version;
    state.inflight = candidate.resources;
    this.ctx.status.sent(this.proxy, state.typeUrl, candidate.version, bytes.length);
    if (this.debug) {
      this.log.debug({ type: this.typeLabel(state.typeUrl), version: candidate.version, count: candidate.resources.size }, 'sent');
    }
    return true;
  }

  private candidate(state: SotwState, set: ResourceSet, retained: readonly EncodedResource[], held?: ReadonlyMap<string, EncodedResource | undefined>): Candidate {
    if (retained.length === 0 && !held) return memoCandidate(set, state);
    const chosen = new Map<string, EncodedResource>();
    for (const name of state.wildcard ? set.names : [...state.names].sort()) {
      const r = held?.has(name) ? held.get(name) : set.get(name);
      if (r) chosen.set(name, r);
    }
    for (const r of retained) if (state.wildcard || state.names.has(r.name)) chosen.set(r.name, r);
    return buildCandidate(state.typeUrl, [...chosen.values()].sort((a, b) => (a.name < b.name ? -1 : 1)));
  }
}

function sameResources(a: ReadonlyMap<string, EncodedResource>, b: ReadonlyMap<string, EncodedResource>): boolean {
  if (a.size !== b.size) return false;
  for (const [name, r] of a) if (b.get(name) !== r) return false;
  return true;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const candidates = new WeakMap<object, Map<string, Candidate>>();

/** Streams of one group with the same subscription share one candidate, body bytes included. */
function memoCandidate(set: ResourceSet, state: SotwState): Candidate {
  let perSet = candidates.get(set);
  if (!perSet) candidates.set(set, (perSet = new Map()));
  let c = perSet.get(state.memoKey);
  if (!c) {
    const picked: EncodedResource[] = [];
    if (state.wildcard && set.sortedEntries) picked.push(...set.entries);
    else {
      for (const name of state.wildcard ? set.names : [...state.names].sort()) {
        const r = set.get(name);
        if (r) picked.push(r);
      }
    }
    c = buildCandidate(set.typeUrl, picked, state.wildcard ? set.version : undefined);
    if (perSet.size >= 256) perSet.clear();
    perSet.set(state.memoKey, c);
  }
  return c;
}

function buildCandidate(typeUrl: string, resources: EncodedResource[], version = resourcesVersion(resources)): Candidate {
  const body = Buffer.concat([stringField(1, version), ...resources.map((r) => r.sotwField), stringField(4, typeUrl), CONTROL_PLANE]);
  return { version, resources: new Map(resources.map((r) => [r.name, r])), body, id: nextSharedId() };
}

/** DiscoveryResponse.control_plane (field 6) = { identifier: "vsxds" }. */
const CONTROL_PLANE = (() => {
  const inner = stringField(1, 'vsxds');
  return Buffer.concat([Buffer.from([(6 << 3) | 2, inner.length]), inner]);
})();
