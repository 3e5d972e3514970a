import { Map as PersistentMap } from 'immutable';
import type { Pod } from '../model/types.js';
import type { RawObject, SourceChanges, SourceProblem, SourceState } from './source.js';

type Entries<T> = PersistentMap<string, T>;

/** Values sorted by key (`namespace/name`), which is the order sources promise. */
function sortedValues<T>(map: Entries<T>): T[] {
  return [...map.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map((e) => e[1]);
}

/**
 * One moment of a store. Both maps are persistent (structurally shared with the store's later
 * versions), so a state stays true to its moment, and the sorted arrays, which cost a sort of
 * everything, are only made if someone reads them: the pipeline works from `changes`.
 */
class StoreState implements SourceState {
  private vsList?: readonly RawObject[];
  private podList?: readonly Pod[];

  constructor(
    private readonly vsMap: Entries<RawObject>,
    private readonly podMap: Entries<Pod>,
    readonly synced: boolean,
    readonly problems: readonly SourceProblem[],
    readonly changes: SourceChanges | undefined,
  ) {}

  get virtualServices(): readonly RawObject[] {
    return (this.vsList ??= sortedValues(this.vsMap));
  }

  get pods(): readonly Pod[] {
    return (this.podList ??= sortedValues(this.podMap));
  }
}

/**
 * VirtualServices and pods by `namespace/name`, and what changed since the last state was
 * taken: a source that hears of objects one at a time (informers) emits each state in time
 * proportional to what changed, not to everything it holds.
 */
export class ObjectStore {
  private vss: Entries<RawObject> = PersistentMap();
  private podMap: Entries<Pod> = PersistentMap();
  private changedVss = new Map<string, RawObject | undefined>();
  private changedPods = new Map<string, Pod | undefined>();
  /** Until the first state is taken everything is new: that state carries no `changes`. */
  private first = true;

  get virtualServiceCount(): number {
    return this.vss.size;
  }

  get podCount(): number {
    return this.podMap.size;
  }

  virtualService(key: string): RawObject | undefined {
    return this.vss.get(key);
  }

  pod(key: string): Pod | undefined {
    return this.podMap.get(key);
  }

  /** Sets (or with `undefined` removes) a VirtualService; false when it was not there to remove. */
  setVirtualService(key: string, raw: RawObject | undefined): boolean {
    if (raw === undefined && !this.vss.has(key)) return false;
    this.vss = raw === undefined ? this.vss.delete(key) : this.vss.set(key, raw);
    if (!this.first) this.changedVss.set(key, raw);
    return true;
  }

  setPod(key: string, pod: Pod | undefined): boolean {
    if (pod === undefined && !this.podMap.has(key)) return false;
    this.podMap = pod === undefined ? this.podMap.delete(key) : this.podMap.set(key, pod);
    if (!this.first) this.changedPods.set(key, pod);
    return true;
  }

  /** The store now; its `changes` are those made since the previous call. */
  state(synced: boolean, problems: readonly SourceProblem[] = []): SourceState {
    const changes = this.first ? undefined : { virtualServices: this.changedVss, pods: this.changedPods };
    this.first = false;
    this.changedVss = new Map();
    this.changedPods = new Map();
    return new StoreState(this.vss, this.podMap, synced, problems, changes);
  }
}
