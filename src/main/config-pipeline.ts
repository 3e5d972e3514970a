import type { Logger } from 'pino';
import { auditTime, BehaviorSubject, combineLatest, filter, startWith, type Subscription } from 'rxjs';
import { parseVirtualService, validateVirtualService, type Conflict } from '../model/index.js';
import type { Pod, VirtualService } from '../model/types.js';
import type { Snapshot } from '../xds/snapshot.js';
import type { RawObject, Source, SourceProblem, SourceState } from '../sources/source.js';
import { translateGroup, virtualServicesFor, type GroupTranslation } from '../translate/index.js';
import type { NodeGroup } from '../xds/node-identity.js';
import type { SnapshotCache } from '../xds/snapshot-cache.js';

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
  readonly evaluated: readonly Evaluated[];
  readonly translations: ReadonlyMap<string, { readonly group: NodeGroup; readonly translation: GroupTranslation }>;
  /** Groups whose snapshot could not be built; they keep their previous snapshot. */
  readonly buildErrors: ReadonlyMap<string, { readonly group: NodeGroup; readonly message: string }>;
  readonly sourceProblems: readonly SourceProblem[];
  readonly builds: number;
  /** Wall time of the last build (validate, translate, encode, notify streams), in ms. */
  readonly lastBuildMs: number;
}

export interface PipelineOptions {
  readonly source: Source;
  readonly cache: SnapshotCache;
  readonly log: Logger;
  /** Changes arriving within this window are built together. */
  readonly coalesceMs: number;
}

interface GroupInputs {
  readonly vss: readonly VirtualService[];
  readonly pods: readonly Pod[];
  readonly translation: GroupTranslation;
  readonly snapshot: Snapshot;
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = out.get(k);
    if (list) list.push(item);
    else out.set(k, [item]);
  }
  return out;
}

/** Same objects in the same order: sources keep the identity of what did not change. */
function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

const EMPTY_VIEW: PipelineView = { evaluated: [], translations: new Map(), buildErrors: new Map(), sourceProblems: [], builds: 0, lastBuildMs: 0 };

/**
 * sources → validate → translate → cache. Builds only from a synced source, coalesces bursts,
 * builds snapshots for the node groups that have proxies connected, and marks the cache ready
 * after the first complete build.
 */
export class ConfigPipeline {
  private readonly view = new BehaviorSubject<PipelineView>(EMPTY_VIEW);
  readonly view$ = this.view.asObservable();
  private subscription?: Subscription;
  private readonly evaluations = new WeakMap<RawObject, Evaluated>();
  private lastState?: SourceState;
  /** What each group's current snapshot was built from, to skip groups whose inputs are unchanged. */
  private groupInputs = new Map<string, GroupInputs>();

  constructor(private readonly options: PipelineOptions) {}

  get current(): PipelineView {
    return this.view.value;
  }

  start(): void {
    const { source, cache, coalesceMs } = this.options;
    this.subscription = combineLatest([source.state$, cache.demand$.pipe(startWith(null))])
      .pipe(
        filter(([state]) => state.synced),
        auditTime(coalesceMs),
      )
      .subscribe(([state]) => this.build(state));
  }

  stop(): void {
    this.subscription?.unsubscribe();
  }

  /** Builds from the latest synced state right away (tests, and `render`). */
  rebuild(): void {
    if (this.lastState) this.build(this.lastState);
  }

  evaluate(raw: RawObject): Evaluated {
    const cached = this.evaluations.get(raw);
    if (cached) return cached;
    const key = `${raw.metadata.namespace}/${raw.metadata.name}`;
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

  private build(state: SourceState): void {
    const { cache, log } = this.options;
    const started = performance.now();
    this.lastState = state;
    const evaluated = state.virtualServices.map((raw) => this.evaluate(raw));
    const accepted = evaluated.flatMap((e) => (e.accepted && e.vs ? [e.vs] : []));
    const translations = new Map<string, { group: NodeGroup; translation: GroupTranslation }>();
    const buildErrors = new Map<string, { group: NodeGroup; message: string }>();
    const watched = cache.watchedGroups();
    const podsByNamespace = groupBy(state.pods, (pod) => pod.namespace);
    const previous = this.groupInputs;
    this.groupInputs = new Map();
    for (const group of watched) {
      // A group's configuration depends only on the VirtualServices that select it and on the
      // pods of its namespace: when none of those objects changed, its snapshot stands, so one
      // changed VirtualService costs the groups it touches, not the whole fleet.
      const vss = virtualServicesFor(group, accepted);
      const pods = podsByNamespace.get(group.namespace) ?? [];
      const last = previous.get(group.key);
      if (last && sameItems(last.vss, vss) && sameItems(last.pods, pods) && cache.getSnapshot(group.key) === last.snapshot) {
        this.groupInputs.set(group.key, last);
        translations.set(group.key, { group, translation: last.translation });
        continue;
      }
      try {
        const translation = translateGroup(group, vss, pods);
        const snapshot = cache.setSnapshot(group.key, translation.snapshot);
        translations.set(group.key, { group, translation });
        this.groupInputs.set(group.key, { vss, pods, translation, snapshot });
      } catch (err) {
        // The group keeps its previous snapshot; nothing partial is pushed.
        buildErrors.set(group.key, { group, message: (err as Error).message });
        log.error({ group: group.key, err: (err as Error).message }, 'cannot build snapshot; keeping the previous one');
      }
    }
    const watchedKeys = new Set(watched.map((g) => g.key));
    for (const key of cache.groupKeys()) if (!watchedKeys.has(key)) cache.clearSnapshot(key);
    if (!cache.ready) {
      log.info({ virtualServices: evaluated.length, accepted: accepted.length, pods: state.pods.length }, 'sources synced; serving configuration');
      cache.markReady();
    }
    this.view.next({
      evaluated,
      translations,
      buildErrors,
      sourceProblems: state.problems,
      builds: this.view.value.builds + 1,
      lastBuildMs: performance.now() - started,
    });
  }
}

export type { Conflict };
