import type { SotwRequest } from './requests.js';
import { AdsStream, type BaseTypeState } from './ads-stream.js';
import type { EncodedResource, ResourceSet, Snapshot } from './snapshot.js';
import { WILDCARD_TYPES } from './type-urls.js';
import { setVersion } from './versions.js';
import { stringField, withNonce } from './wire.js';

interface SotwState extends BaseTypeState {
  /** Version of the last response, or the one the proxy said it holds when it (re)subscribed. */
  version?: string;
  /** Sorted explicit names, as a memo key. */
  namesKey: string;
}

interface Candidate {
  readonly version: string;
  readonly resources: ReadonlyMap<string, EncodedResource>;
  readonly body: Buffer;
}

/**
 * State-of-the-world ADS: every response carries the full set the proxy subscribed to. A response
 * is sent when that set's version differs from what the proxy holds; a NACKed version is not sent
 * again until the configuration changes.
 */
export class SotwStream extends AdsStream<SotwRequest, SotwState> {
  protected newState(typeUrl: string): SotwState {
    return { typeUrl, wildcard: false, names: new Set(), awaiting: false, inflight: new Map(), live: new Map(), namesKey: '' };
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
    state.wildcard = WILDCARD_TYPES.has(req.typeUrl) ? names.length === 0 || names.includes('*') : names.includes('*');
    state.names.clear();
    for (const n of names) if (n !== '*') state.names.add(n);
    state.namesKey = [...state.names].sort().join('\n');
  }

  protected maybeRespond(state: SotwState, snapshot: Snapshot): boolean {
    if (state.awaiting) return false;
    const candidate = this.candidate(state, snapshot);
    if (candidate.version === state.version) return false;
    const nonce = this.nextNonce();
    const bytes = withNonce(candidate.body, nonce);
    this.write(bytes);
    state.nonce = nonce;
    state.awaiting = true;
    state.version = candidate.version;
    state.inflight = candidate.resources;
    this.ctx.status.sent(this.proxy, state.typeUrl, candidate.version, bytes.length);
    this.log.debug({ type: this.typeLabel(state.typeUrl), version: candidate.version, count: candidate.resources.size }, 'sent');
    return true;
  }

  private candidate(state: SotwState, snapshot: Snapshot): Candidate {
    const set = snapshot.resources(state.typeUrl);
    const retained = this.retained(state.typeUrl, snapshot);
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
  return { version, resources: new Map(resources.map((r) => [r.name, r])), body };
}

/** DiscoveryResponse.control_plane (field 6) = { identifier: "vsxds" }. */
const CONTROL_PLANE = (() => {
  const inner = stringField(1, 'vsxds');
  return Buffer.concat([Buffer.from([(6 << 3) | 2, inner.length]), inner]);
})();
