import type { DeltaRequest } from './requests.js';
import { AdsStream, baseState, nextSharedId, type BaseTypeState, type SharedResponse } from './ads-stream.js';
import type { EncodedResource, ResourceSet, Snapshot } from './snapshot.js';
import { WILDCARD_TYPES } from './type-urls.js';
import { stringField } from './wire.js';

/** The proxy was told this name does not exist. */
const ABSENT = '';

interface DeltaState extends BaseTypeState {
  /** Name → version the proxy has (or was last sent), ABSENT when told the resource does not exist. */
  readonly known: Map<string, string>;
  /** The first response of a subscription is due even when empty, so the proxy can finish initializing. */
  mustRespond: boolean;
  /** Names removed by the response in flight. */
  inflightRemoved: readonly string[];
  systemVersion?: string;
  /** `initial_resource_versions` of the subscription, until seedLive looked them up. */
  reported?: Readonly<Record<string, string>>;
}

interface Diff {
  readonly updated: EncodedResource[];
  readonly removed: string[];
}

/**
 * Incremental ADS: only changed resources are sent, removals are named, and the versions a
 * reconnecting proxy reports (`initial_resource_versions`) are trusted so unchanged resources
 * are not sent again.
 */
export class DeltaStream extends AdsStream<DeltaRequest, DeltaState> {
  protected newState(typeUrl: string): DeltaState {
    // Object.assign, not a spread: a spread object literal takes about 450 bytes more per state.
    return Object.assign(baseState(typeUrl), { known: new Map(), mustRespond: true, inflightRemoved: [], systemVersion: undefined, reported: undefined });
  }

  protected applyRequest(req: DeltaRequest, state: DeltaState, first: boolean): void {
    if (req.responseNonce !== '' && req.responseNonce === state.nonce && state.awaiting) {
      state.awaiting = false;
      const version = state.systemVersion ?? '';
      if (req.errorDetail) {
        // The proxy keeps what it had; `known` still records what was offered, so the same
        // versions are not offered again until they change.
        this.log.warn({ type: this.typeLabel(req.typeUrl), version, error: req.errorDetail.message }, 'proxy rejected configuration');
        this.ctx.status.nack(this.proxy, req.typeUrl, version, req.errorDetail.message);
      } else {
        // `live` is this state's own map (made in newState, never handed out): updated in place.
        const live = state.live as Map<string, EncodedResource>;
        for (const [name, r] of state.inflight) {
          if (live.get(name) !== r) this.replaced(live.get(name));
          live.set(name, r);
        }
        for (const name of state.inflightRemoved) {
          this.replaced(live.get(name));
          live.delete(name);
        }
        if (state.unresolved.size > 0) {
          for (const name of state.inflight.keys()) state.unresolved.delete(name);
          for (const name of state.inflightRemoved) state.unresolved.delete(name);
          state.knowsLive = state.unresolved.size === 0;
        }
        this.ctx.status.ack(this.proxy, req.typeUrl, version);
      }
      state.inflight = new Map();
      state.inflightRemoved = [];
    } else if (req.responseNonce !== '' && req.responseNonce !== state.nonce) {
      this.log.debug({ type: this.typeLabel(req.typeUrl), nonce: req.responseNonce }, 'stale nonce; applying subscription changes only');
    }

    if (first || req.subscribe.length > 0 || req.unsubscribe.length > 0) state.subscription += 1;
    if (first) {
      state.wildcard = WILDCARD_TYPES.has(req.typeUrl) && req.subscribe.length === 0;
      const initial = Object.entries(req.initialResourceVersions);
      for (const [name, version] of initial) state.known.set(name, version);
      // The first request of a subscription is always answered, even when the proxy is up to
      // date: an Envoy that reconnected before it finished initializing waits for that answer.
      state.mustRespond = true;
      if (initial.length > 0) {
        state.reported = req.initialResourceVersions;
        state.reportPending = true;
      }
    }
    for (const name of req.subscribe) {
      if (name === '*') state.wildcard = true;
      else state.names.add(name);
    }
    for (const name of req.unsubscribe) {
      if (name === '*') {
        // The proxy drops what it had only through the wildcard: subscribing again sends it all.
        state.wildcard = false;
        for (const known of [...state.known.keys()]) if (!state.names.has(known)) state.known.delete(known);
        continue;
      }
      state.names.delete(name);
      if (!state.wildcard) {
        state.known.delete(name);
        if (state.unresolved.delete(name)) state.knowsLive = state.unresolved.size === 0;
      }
    }
  }

  /**
   * `initial_resource_versions` name what the proxy runs, each with its version: one found in a
   * recent snapshot is that resource; one not found is a resource of unknown content (unresolved).
   */
  protected seedLive(state: DeltaState, recent: readonly Snapshot[]): void {
    const reported = state.reported ?? {};
    state.reported = undefined;
    const live = state.live as Map<string, EncodedResource>;
    for (const [name, version] of Object.entries(reported)) {
      const r = findVersion(recent, state.typeUrl, name, version);
      if (r) live.set(name, r);
      else state.unresolved.set(name, version);
    }
    state.knowsLive = state.unresolved.size === 0;
    const current = recent[0]?.resources(state.typeUrl);
    if (current && state.knowsLive && this.runsAllOf(state, current, reported)) this.ctx.status.holds(this.proxy, state.typeUrl, current.version);
  }

  /** The proxy reported exactly what it is due of `set`: the set's version is the one it holds. */
  private runsAllOf(state: DeltaState, set: ResourceSet, reported: Readonly<Record<string, string>>): boolean {
    const due = state.wildcard ? set.names : [...state.names].filter((n) => set.get(n));
    if (due.length !== Object.keys(reported).length) return false;
    return due.every((name) => reported[name] === set.get(name)?.version);
  }

  protected maybeRespond(state: DeltaState, snapshot: Snapshot, held?: ReadonlyMap<string, EncodedResource | undefined>): boolean {
    if (state.awaiting) return false;
    const set = snapshot.resources(state.typeUrl);
    // After a computation against `set`, `known` says the proxy has (or was offered) all of it.
    if (!held && this.inStep(state, set) && !state.mustRespond) return false;
    const retained = this.retained(state.typeUrl, snapshot);
    // Resources the proxy runs with unknown content stay while what may reference them is unknown.
    const keep = state.unresolved.size > 0 && this.referrersUnknown(state.typeUrl, snapshot) ? state.unresolved : undefined;
    // Settled against an earlier set with the same subscription, and nothing retained now: the
    // proxy has (or was offered) all of that set, so only names whose resource differs between
    // the two sets can need anything. Held-back names are among those (they were held back, so
    // the last computation did not settle).
    const from = !state.mustRespond && retained.length === 0 && !keep && state.settledSubscription === state.subscription ? state.settled : undefined;
    const diff = this.diff(state, set, retained, from && changedNames(from, set), held, keep);
    // A response that held resources back is not in step with the set: look again next time.
    this.settle(state, set, retained.length > 0 || held !== undefined || keep !== undefined);
    // The first response of a subscription is due even when empty, but not while all of it is held back.
    if (diff.updated.length === 0 && diff.removed.length === 0 && (!state.mustRespond || held)) return false;
    const response = sharedResponse(set, state.typeUrl, diff);
    const [nonce, bytes] = this.framed(state, response);
    this.write(bytes);
    const inflight = new Map<string, EncodedResource>();
    for (const r of response.updated) {
      state.known.set(r.name, r.version);
      inflight.set(r.name, r);
    }
    for (const name of response.removed) {
      if (state.names.has(name)) state.known.set(name, ABSENT);
      else state.known.delete(name);
    }
    state.nonce = nonce;
    state.awaiting = true;
    state.mustRespond = false;
    state.systemVersion = set.version;
    state.inflight = inflight;
    state.inflightRemoved = response.removed;
    this.ctx.status.sent(this.proxy, state.typeUrl, set.version, bytes.length);
    if (this.debug) {
      this.log.debug({ type: this.typeLabel(state.typeUrl), updated: response.updated.length, removed: response.removed.length }, 'sent');
    }
    return true;
  }

  /** What to send; `only`: the names that can need anything (see maybeRespond), all of them without it. */
  private diff(
    state: DeltaState,
    set: ResourceSet,
    retained: readonly EncodedResource[],
    only?: readonly string[],
    held?: ReadonlyMap<string, EncodedResource | undefined>,
    keep?: ReadonlyMap<string, string>,
  ): Diff {
    const available = new Map<string, EncodedResource>();
    for (const r of retained) available.set(r.name, r);
    const diff: Diff = { updated: [], removed: [] };
    const check = (name: string) => {
      if (keep?.has(name) && !set.get(name)) return;
      if (!held?.has(name)) consider(state, set, available, name, diff);
      else if (held.get(name)?.version !== undefined && state.known.get(name) !== held.get(name)?.version) diff.updated.push(held.get(name) as EncodedResource);
    };
    if (only) {
      for (const name of only) if (state.wildcard || state.names.has(name)) check(name);
      return diff;
    }
    if (state.wildcard) {
      for (const name of set.names) check(name);
      for (const name of available.keys()) if (!set.get(name)) check(name);
      for (const name of state.known.keys()) if (!set.get(name) && !available.has(name)) check(name);
    }
    for (const name of [...state.names].sort()) if (!state.wildcard || !set.get(name)) check(name);
    return { updated: dedupe(diff.updated), removed: [...new Set(diff.removed)].sort() };
  }
}

/** The resource of `name` at `version` in the newest of `snapshots` that has it. */
function findVersion(snapshots: readonly Snapshot[], typeUrl: string, name: string, version: string): EncodedResource | undefined {
  for (const snapshot of snapshots) {
    const r = snapshot.resources(typeUrl).get(name);
    if (r?.version === version) return r;
  }
  return undefined;
}

/** Adds `name` to the diff if the proxy needs it (updated) or must hear that it is gone (removed). */
function consider(state: DeltaState, set: ResourceSet, available: ReadonlyMap<string, EncodedResource>, name: string, diff: Diff): void {
  const r = set.get(name) ?? available.get(name);
  if (r) {
    if (state.known.get(name) !== r.version) diff.updated.push(r);
  } else if (state.known.get(name) !== ABSENT && (state.known.has(name) || state.names.has(name))) {
    diff.removed.push(name);
  }
}

/** A delta response's body, shared by the streams of a group that are due the same one. */
interface DeltaResponse extends SharedResponse, Diff {}

/** The last response body made from each set: the next stream due the same updates and removals shares it. */
const responses = new WeakMap<ResourceSet, DeltaResponse>();

function sharedResponse(set: ResourceSet, typeUrl: string, diff: Diff): DeltaResponse {
  const last = responses.get(set);
  if (last && sameItems(last.updated, diff.updated) && sameItems(last.removed, diff.removed)) return last;
  const parts: Buffer[] = [versionField(set)];
  for (const r of diff.updated) parts.push(r.deltaField);
  parts.push(typeField(typeUrl));
  for (const name of diff.removed) parts.push(stringField(6, name));
  const response: DeltaResponse = { ...diff, body: Buffer.concat(parts), id: nextSharedId() };
  responses.set(set, response);
  return response;
}

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Sorted names whose resource is not the same object in `from` and `to` (or is in one only).
 * The streams of a group move between the same two sets: the last pair is kept per target set.
 */
const changes = new WeakMap<ResourceSet, { readonly from: ResourceSet; readonly names: readonly string[] }>();

function changedNames(from: ResourceSet, to: ResourceSet): readonly string[] {
  const said = to.changedSince(from);
  if (said) return said;
  const memo = changes.get(to);
  if (memo?.from === from) return memo.names;
  const names: string[] = [];
  for (const r of to.entries) if (from.get(r.name) !== r) names.push(r.name);
  for (const name of from.names) if (!to.get(name)) names.push(name);
  names.sort();
  changes.set(to, { from, names });
  return names;
}

function dedupe(resources: EncodedResource[]): EncodedResource[] {
  const byName = new Map(resources.map((r) => [r.name, r]));
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
}

// Every response of a set carries its version, and every response of a type its URL: framed once.
const versionFields = new WeakMap<ResourceSet, Buffer>();
const typeFields = new Map<string, Buffer>();

function versionField(set: ResourceSet): Buffer {
  let field = versionFields.get(set);
  if (!field) versionFields.set(set, (field = stringField(1, set.version)));
  return field;
}

function typeField(typeUrl: string): Buffer {
  let field = typeFields.get(typeUrl);
  if (!field) typeFields.set(typeUrl, (field = stringField(4, typeUrl)));
  return field;
}
