import type { SotwRequest } from './requests.js';
import { AdsStream, baseState, type BaseTypeState } from './ads-stream.js';
import type { EncodedResource, ResourceSet, Snapshot } from './snapshot.js';
import { WILDCARD_TYPES } from './type-urls.js';
import { setVersion } from './versions.js';
import { stringField, withNonce } from './wire.js';

interface SotwState extends BaseTypeState {
  /** Version of the last response, or the one the proxy said it holds when it (re)subscribed. */
  version?: string;
  /** Sorted explicit names, as a memo key. */
  namesKey: string;
  /** `resource_names` of the last request, to recognise the same list again (Envoy repeats it in every ACK). */
  requested?: readonly string[];
  /** Id of the last candidate sent with its shared nonce (see `Candidate.nonce`); 0 before any. */
  sharedId: number;
}

interface Candidate {
  readonly version: string;
  readonly resources: ReadonlyMap<string, EncodedResource>;
  readonly body: Buffer;
  /** Unique per candidate, increasing in the order candidates are made. */
  readonly id: number;
  /** The candidate's own nonce, `C` + id in base 36, and the response with it, built when first sent. */
  nonce?: string;
  framed?: Buffer;
}

let nextCandidateId = 1;

/**
 * State-of-the-world ADS: every response carries the full set the proxy subscribed to. A response
 * is sent when that set's version differs from what the proxy holds; a NACKed version is not sent
 * again until the configuration changes.
 */
export class SotwStream extends AdsStream<SotwRequest, SotwState> {
  protected newState(typeUrl: string): SotwState {
    return { ...baseState(typeUrl), namesKey: '', sharedId: 0 };
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
      if (req.versionInfo) this.ctx.status.holds(this.proxy, req.typeUrl, req.versionInfo);
    } else if (state.awaiting) {
      state.awaiting = false;
      const answered = state.version ?? '';
      if (req.errorDetail) {
        this.log.warn({ type: this.typeLabel(req.typeUrl), version: answered, error: req.errorDetail.message }, 'proxy rejected configuration');
        this.ctx.status.nack(this.proxy, req.typeUrl, answered, req.errorDetail.message);
      } else {
        state.live = state.inflight;
        this.ctx.status.ack(this.proxy, req.typeUrl, answered);
      }
      state.inflight = new Map();
    }
    const names = req.resourceNames;
    if (state.requested && sameList(state.requested, names)) return;
    state.requested = names;
    state.subscription += 1;
    state.wildcard = WILDCARD_TYPES.has(req.typeUrl) ? names.length === 0 || names.includes('*') : names.includes('*');
    state.names.clear();
    for (const n of names) if (n !== '*') state.names.add(n);
    state.namesKey = [...state.names].sort().join('\n');
  }

  protected maybeRespond(state: SotwState, snapshot: Snapshot): boolean {
    if (state.awaiting) return false;
    const set = snapshot.resources(state.typeUrl);
    if (this.inStep(state, set)) return false;
    const retained = this.retained(state.typeUrl, snapshot);
    const candidate = this.candidate(state, set, retained);
    this.settle(state, set, retained.length > 0);
    if (candidate.version === state.version) return false;
    const [nonce, bytes] = this.framed(state, candidate);
    this.write(bytes);
    state.nonce = nonce;
    state.awaiting = true;
    state.version = candidate.version;
    state.inflight = candidate.resources;
    this.ctx.status.sent(this.proxy, state.typeUrl, candidate.version, bytes.length);
    this.log.debug({ type: this.typeLabel(state.typeUrl), version: candidate.version, count: candidate.resources.size }, 'sent');
    return true;
  }

  /**
   * The response carrying `candidate`, and its nonce. A nonce only has to be unique on its stream,
   * so the streams of a group that are sent the same candidate all get the candidate's own nonce
   * (`C` + its id) and the very same Buffer, framed once. Candidate ids only grow, so a type that
   * is sent only candidates newer than the last it was sent never gets a nonce twice; a candidate
   * not newer than that (the same one again after a resubscription, or an older one after a change
   * of names) gets a nonce of the stream's own counter instead, in a copy of the body. Counter
   * nonces are base 36 in lower case and candidate nonces start with an upper-case `C`, so the two
   * never meet, and no nonce is sent twice on a stream: a request echoing an earlier response's
   * nonce is still recognised as stale.
   */
  private framed(state: SotwState, candidate: Candidate): [string, Buffer] {
    if (candidate.id > state.sharedId) {
      state.sharedId = candidate.id;
      candidate.nonce ??= `C${candidate.id.toString(36)}`;
      candidate.framed ??= withNonce(candidate.body, candidate.nonce);
      return [candidate.nonce, candidate.framed];
    }
    const nonce = this.nextNonce();
    return [nonce, withNonce(candidate.body, nonce)];
  }

  private candidate(state: SotwState, set: ResourceSet, retained: readonly EncodedResource[]): Candidate {
    if (state.wildcard && retained.length === 0) {
      return memoCandidate(set, '*', () => [...set.names].map((n) => set.get(n) as EncodedResource));
    }
    if (retained.length === 0) {
      return memoCandidate(set, `names:${state.namesKey}`, () =>
        [...state.names].sort().flatMap((n) => {
          const r = set.get(n);
          return r ? [r] : [];
        }),
      );
    }
    const chosen = new Map<string, EncodedResource>();
    for (const name of state.wildcard ? set.names : [...state.names].sort()) {
      const r = set.get(name);
      if (r) chosen.set(name, r);
    }
    for (const r of retained) if (state.wildcard || state.names.has(r.name)) chosen.set(r.name, r);
    return buildCandidate(state.typeUrl, [...chosen.values()].sort((a, b) => (a.name < b.name ? -1 : 1)));
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const candidates = new WeakMap<object, Map<string, Candidate>>();

/** Streams of one group with the same subscription share one candidate, body bytes included. */
function memoCandidate(set: ResourceSet, key: string, pick: () => EncodedResource[]): Candidate {
  let perSet = candidates.get(set);
  if (!perSet) candidates.set(set, (perSet = new Map()));
  let c = perSet.get(key);
  if (!c) {
    c = buildCandidate(set.typeUrl, pick());
    if (perSet.size >= 256) perSet.clear();
    perSet.set(key, c);
  }
  return c;
}

function buildCandidate(typeUrl: string, resources: EncodedResource[]): Candidate {
  const version = setVersion(resources);
  const body = Buffer.concat([stringField(1, version), ...resources.map((r) => r.sotwField), stringField(4, typeUrl), CONTROL_PLANE]);
  return { version, resources: new Map(resources.map((r) => [r.name, r])), body, id: nextCandidateId++ };
}

/** DiscoveryResponse.control_plane (field 6) = { identifier: "vsxds" }. */
const CONTROL_PLANE = (() => {
  const inner = stringField(1, 'vsxds');
  return Buffer.concat([Buffer.from([(6 << 3) | 2, inner.length]), inner]);
})();
