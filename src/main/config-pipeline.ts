import type { Logger } from 'pino';
import { audit, BehaviorSubject, combineLatest, filter, map, merge, Observable, startWith, Subject, tap, throttle, timer, type Subscription } from 'rxjs';
import { parseVirtualService, validateVirtualService, type Conflict } from '../model/index.js';
import { podKey, selectorMatches, vsKey, type ClusterSpec, type Labels, type Pod, type VirtualService } from '../model/types.js';
import type { Snapshot } from '../xds/snapshot.js';
import type { RawObject, Source, SourceProblem, SourceState } from '../sources/source.js';
import { appliesTo, DEFAULT_TRANSLATE_OPTIONS, labelKey, PodIndex, reassign, translateSelected, type GroupTranslation, type TranslateOptions } from '../translate/index.js';
import type { NodeGroup } from '../xds/node-identity.js';
import type { SnapshotCache } from '../xds/snapshot-cache.js';
import type { ProxyStatusRegistry } from '../xds/status-registry.js';
import { wallNow, type BuiltChange, type ChangeTracker } from './change-tracker.js';

/** Emits once, after the I/O callbacks of the current turn of the event loop (setImmediate). */
function endOfTurn(): Observable<void> {
  return new Observable<void>((subscriber) => {
    const handle = setImmediate(() => {
      subscriber.next();
      subscriber.complete();
    });
    return () => clearImmediate(handle);
  });
}

/** One VirtualService as the pipeline judged it. */
export interface Evaluated {
  readonly key: string;
  readonly raw: RawObject;
  readonly generation?: number;
  /** Parsed, when it parsed. */
  readonly vs?: VirtualService;
  readonly accepted: boolean;
  readonly reason: string;
  readonly message: string;
}

/** What the last build produced: the input of status reporting and debugging. */
export interface PipelineView {
  /** By `namespace/name`. */
  readonly evaluated: ReadonlyMap<string, Evaluated>;
  readonly translations: ReadonlyMap<string, { readonly group: NodeGroup; readonly translation: GroupTranslation; readonly snapshot?: Snapshot }>;
  /** Groups whose snapshot could not be built; they keep their previous snapshot. */
  readonly buildErrors: ReadonlyMap<string, { readonly group: NodeGroup; readonly message: string }>;
  readonly sourceProblems: readonly SourceProblem[];
  readonly builds: number;
  /** Wall time of the last build (validate, translate, encode, notify streams), in ms. */
  readonly lastBuildMs: number;
  /** Node groups the last build translated again (whole, or only the assignments pods changed). */
  readonly lastBuildGroups: number;
}

export interface PipelineOptions {
  readonly source: Source;
  readonly cache: SnapshotCache;
  readonly log: Logger;
  /**
   * A change after a quiet spell is built at once (with whatever else arrived in the same turn of
   * the event loop); the changes that follow within this window are built together at its end.
   */
  readonly coalesceMs: number;
  /**
   * VirtualService deletions with nothing else pending wait up to this long for the next change
   * to be built with; 0 (the default) builds them like any change. Under one VirtualService per
   * call an ended call's deletion then rides on the next call's build instead of a build of its own.
   */
  readonly deletionDelayMs?: number;
  readonly translate?: TranslateOptions;
  /** Told what each build changed, with the proxies of the groups (from `registry`) it changed. */
  readonly tracker?: { readonly tracker: ChangeTracker; readonly registry: ProxyStatusRegistry };
}

/** One EDS cluster of a group, filed under the rarest label of each of its pod selectors. */
interface ClusterRef {
  readonly group: GroupState;
  readonly name: string;
  readonly spec: ClusterSpec;
  readonly selectors: readonly Labels[];
  /** The label keys it is filed under. */
  readonly labels: readonly string[];
}

interface GroupState {
  readonly group: NodeGroup;
  /** The accepted VirtualServices that select the group, by key. */
  readonly vss: Map<string, VirtualService>;
  translation?: GroupTranslation;
  /** The snapshot the cache held for this group after its last build. */
  snapshot?: Snapshot;
  /** Its EDS clusters as filed in its namespace's `clustersByLabel`, by name. */
  readonly filed: Map<string, ClusterRef>;
  /** Keys whose entry in `vss` changed since `translation` was made: what extending it looks at. */
  readonly changedKeys: Set<string>;
}

interface NamespaceState {
  /** Accepted VirtualServices by key. */
  readonly vss: Map<string, VirtualService>;
  readonly groups: Map<string, GroupState>;
  /** EDS clusters of the watched groups by label key: which assignments a pod with that label can change. */
  readonly clustersByLabel: Map<string, Set<ClusterRef>>;
}

/** Changes not built yet: the new object by key (undefined: removed); `full`: compare everything. */
interface Pending {
  full: boolean;
  readonly virtualServices: Map<string, RawObject | undefined>;
  readonly pods: Map<string, Pod | undefined>;
}

const EMPTY_VIEW: PipelineView = {
  evaluated: new Map(),
  translations: new Map(),
  buildErrors: new Map(),
  sourceProblems: [],
  builds: 0,
  lastBuildMs: 0,
  lastBuildGroups: 0,
};

/** What differs between `items` and `known`, by identity: the new object by key, undefined for one gone. */
function changedByIdentity<T>(items: readonly T[], keyOf: (item: T) => string, known: ReadonlyMap<string, T>): Map<string, T | undefined> {
  const changed = new Map<string, T | undefined>();
  const seen = new Set<string>();
  for (const item of items) {
    const key = keyOf(item);
    seen.add(key);
    if (known.get(key) !== item) changed.set(key, item);
  }
  for (const key of known.keys()) if (!seen.has(key)) changed.set(key, undefined);
  return changed;
}

/**
 * sources → validate → translate → cache. Builds only from a synced source, coalesces bursts,
 * builds snapshots for the node groups that have proxies connected, and marks the cache ready
 * after the first complete build.
 *
 * Incremental: a build starts from what changed since the last one (the source's `changes`,
 * or a comparison by identity when a source gives none), translates again only the node
 * groups a changed VirtualService selects before or after the change, and recomputes only the
 * assignments of the EDS clusters whose selectors match a changed pod: its cost follows the
 * change, not the number of VirtualServices, pods or groups. The maps the view holds are
 * updated in place by each build.
 */
export class ConfigPipeline {
  private readonly view = new BehaviorSubject<PipelineView>(EMPTY_VIEW);
  readonly view$ = this.view.asObservable();
  private subscription?: Subscription;
  private readonly evaluations = new WeakMap<RawObject, Evaluated>();
  private lastState?: SourceState;
  private pending: Pending = { full: true, virtualServices: new Map(), pods: new Map() };
  /** When each pending VirtualService change arrived (wall clock), and when the first pending state did. */
  private receivedAt = new Map<string, number>();
  private pendingSince?: number;
  /** A proxy started or stopped watching some group since the last build. */
  private demandChanged = true;
  /** Builds the deletions that waited out `deletionDelayMs`. */
  private readonly deferred = new Subject<void>();
  /** While deletions alone are pending: the timer that builds them. */
  private deferral?: NodeJS.Timeout;
  /** The objects the last build saw. */
  private readonly raws = new Map<string, RawObject>();
  private readonly pods = new Map<string, Pod>();
  private readonly podIndex = new PodIndex();
  private readonly evaluated = new Map<string, Evaluated>();
  private readonly namespaces = new Map<string, NamespaceState>();
  private readonly groups = new Map<string, GroupState>();
  private readonly translations = new Map<string, { group: NodeGroup; translation: GroupTranslation; snapshot?: Snapshot }>();
  private readonly buildErrors = new Map<string, { group: NodeGroup; message: string }>();

  constructor(private readonly options: PipelineOptions) {}

  get current(): PipelineView {
    return this.view.value;
  }

  start(): void {
    const { source, cache, coalesceMs } = this.options;
    // The source replays only its latest state: compare everything on the first build after (re)starting.
    this.pending.full = true;
    const changed = combineLatest([
      source.state$.pipe(tap((state) => this.collect(state))),
      cache.demand$.pipe(
        tap(() => (this.demandChanged = true)),
        startWith(null),
      ),
    ]).pipe(
      filter(([state]) => state.synced),
      map(() => undefined),
    );
    this.subscription = merge(changed.pipe(filter(() => this.due())), this.deferred)
      .pipe(
        // The events of one informer batch arrive in one turn of the event loop: build them
        // together, at the end of that turn (setImmediate: auditTime(0) waited for a 1 ms timer,
        // one more wake-up of the process and a millisecond more per setup).
        audit(endOfTurn),
        // At most one build per window, the window at least twice the last build: however slow
        // builds get, churn leaves the event loop half its time.
        throttle(() => timer(Math.max(coalesceMs, 2 * this.view.value.lastBuildMs)), { leading: true, trailing: true }),
      )
      .subscribe(() => this.build());
  }

  stop(): void {
    this.subscription?.unsubscribe();
    clearTimeout(this.deferral);
    this.deferral = undefined;
  }

  /** Whether what is pending is to be built now: anything but deletions alone, which wait out `deletionDelayMs` (then `deferred` builds them) unless something else comes. */
  private due(): boolean {
    const delay = this.options.deletionDelayMs ?? 0;
    if (delay <= 0 || !this.onlyDeletionsPending()) return true;
    this.deferral ??= setTimeout(() => this.deferred.next(), delay);
    return false;
  }

  private onlyDeletionsPending(): boolean {
    const { full, virtualServices, pods } = this.pending;
    if (full || this.demandChanged || pods.size > 0 || virtualServices.size === 0) return false;
    for (const raw of virtualServices.values()) if (raw !== undefined) return false;
    return true;
  }

  /** Builds from the latest synced state right away (tests, and `render`). */
  rebuild(): void {
    this.build();
  }

  evaluate(raw: RawObject): Evaluated {
    const cached = this.evaluations.get(raw);
    if (cached) return cached;
    const key = vsKey(raw);
    const generation = typeof raw.metadata['generation'] === 'number' ? (raw.metadata['generation'] as number) : undefined;
    let result: Evaluated;
    const parsed = parseVirtualService(raw, raw.metadata.namespace);
    if (!parsed.ok) {
      result = { key, raw, generation, accepted: false, reason: parsed.reason, message: parsed.message };
    } else {
      const valid = validateVirtualService(parsed.vs);
      result = valid.accepted
        ? { key, raw, generation, vs: parsed.vs, accepted: true, reason: 'Accepted', message: 'VirtualService is valid' }
        : { key, raw, generation, vs: parsed.vs, accepted: false, reason: valid.reason, message: valid.message };
    }
    this.evaluations.set(raw, result);
    return result;
  }

  /** Sees every state the source emits, also those a coalesced build skips: their changes add up. */
  private collect(state: SourceState): void {
    this.lastState = state;
    if (this.options.tracker) {
      const now = wallNow();
      this.pendingSince ??= now;
      for (const key of state.changes?.virtualServices.keys() ?? []) if (!this.receivedAt.has(key)) this.receivedAt.set(key, now);
    }
    if (!state.changes) {
      this.pending.full = true;
      return;
    }
    for (const [key, raw] of state.changes.virtualServices) this.pending.virtualServices.set(key, raw);
    for (const [key, pod] of state.changes.pods) this.pending.pods.set(key, pod);
  }

  /** The changes since the last build: collected, or found by comparing identities. */
  private takePending(state: SourceState): Pending {
    const pending = this.pending;
    this.pending = { full: false, virtualServices: new Map(), pods: new Map() };
    if (!pending.full) return pending;
    return {
      full: true,
      virtualServices: changedByIdentity(state.virtualServices, vsKey, this.raws),
      pods: changedByIdentity(state.pods, podKey, this.pods),
    };
  }

  private dropIfEmpty(name: string): void {
    const ns = this.namespaces.get(name);
    if (ns && ns.vss.size === 0 && ns.groups.size === 0 && ns.clustersByLabel.size === 0) this.namespaces.delete(name);
  }

  private namespace(name: string): NamespaceState {
    let ns = this.namespaces.get(name);
    if (!ns) this.namespaces.set(name, (ns = { vss: new Map(), groups: new Map(), clustersByLabel: new Map() }));
    return ns;
  }

  /** Builds from the latest state the source emitted (with every change collected since the last build), once it is synced. */
  private build(): void {
    const state = this.lastState;
    if (!state?.synced) return;
    const { cache, log } = this.options;
    // Deferred deletions are built now, with the rest.
    clearTimeout(this.deferral);
    this.deferral = undefined;
    const started = performance.now();
    const startedAt = this.options.tracker ? wallNow() : 0;
    const changes = this.takePending(state);
    /** Accepted VirtualServices that came, went or changed, and the groups they changed: what the tracker follows. */
    const traced = this.options.tracker ? new Map<string, { kind: 'upsert' | 'delete'; groups: Set<GroupState> }>() : undefined;
    /** Groups to translate whole. */
    const retranslate = new Set<GroupState>();
    /** Groups whose assignments of these clusters may have changed. */
    const reassignments = new Map<GroupState, Set<string>>();

    if (this.demandChanged) this.followWatchedGroups(retranslate);
    this.demandChanged = false;

    // Changed VirtualServices: the groups they select, before or after, are translated again.
    for (const [key, raw] of changes.virtualServices) {
      const before = this.evaluated.get(key);
      const after = raw ? this.evaluate(raw) : undefined;
      if (raw && after) {
        this.raws.set(key, raw);
        this.evaluated.set(key, after);
      } else {
        this.raws.delete(key);
        this.evaluated.delete(key);
      }
      const oldVs = before?.accepted ? before.vs : undefined;
      const newVs = after?.accepted ? after.vs : undefined;
      if (oldVs === newVs) continue;
      const ns = this.namespace(key.slice(0, key.indexOf('/')));
      if (newVs) ns.vss.set(key, newVs);
      else ns.vss.delete(key);
      this.dropIfEmpty(key.slice(0, key.indexOf('/')));
      const groups = new Set<GroupState>();
      for (const g of ns.groups.values()) {
        if (newVs && appliesTo(newVs, g.group)) g.vss.set(key, newVs);
        else if (!g.vss.delete(key)) continue;
        g.changedKeys.add(key);
        retranslate.add(g);
        groups.add(g);
      }
      traced?.set(key, { kind: newVs ? 'upsert' : 'delete', groups });
    }

    // Changed pods: the index first, then the clusters whose selectors match the pod before or after.
    for (const [key, pod] of changes.pods) {
      const old = this.pods.get(key);
      if (old === pod) continue;
      if (old) this.podIndex.remove(old);
      if (pod) {
        this.pods.set(key, pod);
        this.podIndex.add(pod);
      } else {
        this.pods.delete(key);
      }
      if (old) this.touchClusters(old, reassignments);
      if (pod) this.touchClusters(pod, reassignments);
    }

    // Translate the groups that changed, bring the assignments pods changed up to date, and set
    // their snapshots; a group that fails keeps its previous snapshot.
    const touched = new Set<GroupState>();
    for (const g of retranslate) {
      // Clusters it had before keep their assignments, so pod changes of this build apply below.
      const options = this.options.translate ?? DEFAULT_TRANSLATE_OPTIONS;
      if (this.guarded(g, () => (g.translation = translateSelected(g.group, g.vss, this.podIndex, g.translation, options, g.translation && g.changedKeys)))) {
        g.changedKeys.clear();
        this.file(g);
        touched.add(g);
      } else {
        reassignments.delete(g);
      }
    }
    for (const [g, clusters] of reassignments) {
      const before = g.translation;
      if (!before) continue;
      if (!this.guarded(g, () => (g.translation = reassign(before, g.group, clusters, this.podIndex)))) continue;
      if (g.translation === before && !this.buildErrors.has(g.group.key)) continue;
      touched.add(g);
    }
    const before = traced && new Map([...touched].map((g) => [g, g.snapshot]));
    const translatedAt = traced ? wallNow() : 0;
    for (const g of touched) this.setGroup(g);
    if (traced && before) this.report(traced, before, startedAt, translatedAt);

    if (!cache.ready) {
      log.info({ virtualServices: this.evaluated.size, pods: this.pods.size }, 'sources synced; serving configuration');
      cache.markReady();
    }
    this.view.next({
      evaluated: this.evaluated,
      translations: this.translations,
      buildErrors: this.buildErrors,
      sourceProblems: state.problems,
      builds: this.view.value.builds + 1,
      lastBuildMs: performance.now() - started,
      lastBuildGroups: touched.size,
    });
  }

  /** Tells the tracker which VirtualService changes reached which groups' snapshots. */
  private report(traced: Map<string, { kind: 'upsert' | 'delete'; groups: Set<GroupState> }>, before: Map<GroupState, Snapshot | undefined>, startedAt: number, builtAt: number): void {
    const { tracker, registry } = this.options.tracker as NonNullable<PipelineOptions['tracker']>;
    const proxies = new Map<string, ReturnType<ProxyStatusRegistry['list']>>();
    const changes: BuiltChange[] = [];
    for (const [key, { kind, groups }] of traced) {
      const changed = [...groups].filter((g) => before.has(g) && g.snapshot && g.snapshot !== before.get(g));
      if (changed.length === 0) continue;
      changes.push({
        key,
        kind,
        receivedAt: this.receivedAt.get(key) ?? this.pendingSince ?? startedAt,
        groups: changed.map((g) => {
          const k = g.group.key;
          if (!proxies.has(k)) proxies.set(k, registry.list(k));
          return { key: k, before: before.get(g), after: g.snapshot as Snapshot, proxies: proxies.get(k) ?? [] };
        }),
      });
    }
    this.receivedAt = new Map();
    this.pendingSince = undefined;
    // Even with no VirtualService change: the tracker forgets the pushes it could not place yet.
    tracker.built({ startedAt, builtAt, changes });
  }

  /** Starts the groups proxies began watching (to be translated) and forgets those no proxy watches. */
  private followWatchedGroups(retranslate: Set<GroupState>): void {
    const { cache } = this.options;
    const watchedKeys = new Set<string>();
    for (const group of cache.watchedGroups()) {
      watchedKeys.add(group.key);
      const known = this.groups.get(group.key);
      if (known) {
        // A snapshot replaced or cleared behind the pipeline's back: build the group again.
        if (cache.getSnapshot(group.key) !== known.snapshot) retranslate.add(known);
        continue;
      }
      const ns = this.namespace(group.namespace);
      const vss = new Map<string, VirtualService>();
      for (const [key, vs] of ns.vss) if (appliesTo(vs, group)) vss.set(key, vs);
      const fresh: GroupState = { group, vss, filed: new Map(), changedKeys: new Set() };
      this.groups.set(group.key, fresh);
      ns.groups.set(group.key, fresh);
      retranslate.add(fresh);
    }
    for (const [key, g] of this.groups) {
      if (watchedKeys.has(key)) continue;
      this.unfile(g);
      this.groups.delete(key);
      this.namespaces.get(g.group.namespace)?.groups.delete(key);
      this.dropIfEmpty(g.group.namespace);
      this.translations.delete(key);
      this.buildErrors.delete(key);
    }
    for (const key of cache.groupKeys()) if (!watchedKeys.has(key)) cache.clearSnapshot(key);
  }

  /**
   * Runs a group's translation; a throw (a bug, not bad input: invalid VirtualServices were
   * rejected before) is the group's build error and leaves the rest of the build going.
   */
  private guarded(g: GroupState, translate: () => unknown): boolean {
    try {
      translate();
      return true;
    } catch (err) {
      this.buildErrors.set(g.group.key, { group: g.group, message: `translation failed: ${(err as Error).message}` });
      this.options.log.error({ group: g.group.key, err: (err as Error).message }, 'cannot translate; keeping the previous snapshot');
      return false;
    }
  }

  private setGroup(g: GroupState): void {
    const { cache, log } = this.options;
    const key = g.group.key;
    const translation = g.translation as GroupTranslation;
    try {
      g.snapshot = cache.setSnapshot(key, translation.snapshot);
      this.buildErrors.delete(key);
      this.translations.set(key, { group: g.group, translation, snapshot: g.snapshot });
    } catch (err) {
      this.translations.set(key, { group: g.group, translation, snapshot: cache.getSnapshot(key) });
      // The group keeps its previous snapshot; nothing partial is pushed. It is tried again on its next change.
      g.snapshot = cache.getSnapshot(key);
      this.buildErrors.set(key, { group: g.group, message: (err as Error).message });
      log.error({ group: key, err: (err as Error).message }, 'cannot build snapshot; keeping the previous one');
    }
  }

  /**
   * Files the group's EDS clusters under the rarest label of each pod selector (rarest when
   * filed: any of its labels is correct, the rarest is cheapest). A cluster whose spec did not
   * change stays where it is.
   */
  private file(g: GroupState): void {
    const ns = this.namespace(g.group.namespace);
    const clusters = g.translation?.edsClusters ?? new Map<string, ClusterSpec>();
    for (const [name, ref] of g.filed) if (clusters.get(name) !== ref.spec) this.unfileOne(g, ref);
    for (const [name, spec] of clusters) {
      if (g.filed.has(name)) continue;
      const selectors = spec.endpoints.flatMap((e) => (e.host.selector && Object.keys(e.host.selector).length > 0 ? [e.host.selector] : []));
      if (selectors.length === 0) continue;
      const labels = [...new Set(selectors.map((sel) => this.podIndex.rarestLabel(g.group.namespace, sel) as string))];
      const ref: ClusterRef = { group: g, name, spec, selectors, labels };
      for (const label of labels) {
        let refs = ns.clustersByLabel.get(label);
        if (!refs) ns.clustersByLabel.set(label, (refs = new Set()));
        refs.add(ref);
      }
      g.filed.set(name, ref);
    }
  }

  private unfile(g: GroupState): void {
    for (const ref of g.filed.values()) this.unfileOne(g, ref);
  }

  private unfileOne(g: GroupState, ref: ClusterRef): void {
    const ns = this.namespaces.get(g.group.namespace);
    for (const label of ref.labels) {
      const refs = ns?.clustersByLabel.get(label);
      refs?.delete(ref);
      if (refs?.size === 0) ns?.clustersByLabel.delete(label);
    }
    g.filed.delete(ref.name);
  }

  /** Marks for reassignment the clusters whose selectors match `pod`. */
  private touchClusters(pod: Pod, out: Map<GroupState, Set<string>>): void {
    const ns = this.namespaces.get(pod.namespace);
    if (!ns || ns.clustersByLabel.size === 0) return;
    for (const [k, v] of Object.entries(pod.labels)) {
      for (const ref of ns.clustersByLabel.get(labelKey(k, v)) ?? []) {
        if (!ref.selectors.some((s) => selectorMatches(s, pod.labels))) continue;
        let names = out.get(ref.group);
        if (!names) out.set(ref.group, (names = new Set()));
        names.add(ref.name);
      }
    }
  }
}

export type { Conflict };
