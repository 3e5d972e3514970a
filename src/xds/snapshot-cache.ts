import { BehaviorSubject, Subject, type Observable } from 'rxjs';
import type { NodeGroup } from './node-identity.js';
import { Snapshot, type SnapshotInput } from './snapshot.js';

export type SnapshotListener = (snapshot: Snapshot) => void;

interface GroupEntry {
  group?: NodeGroup;
  snapshot?: Snapshot;
  /** The group's last snapshots, newest first, the current one included (see recent). */
  recent: Snapshot[];
  readonly listeners: Set<SnapshotListener>;
}

/** How many snapshots per group a reconnecting proxy's versions are looked up in. */
const KEPT_SNAPSHOTS = 16;

/**
 * Snapshots per node group, and who is watching them. Watchers hear nothing until the cache is
 * marked ready, so a config built before the sources synced is never served.
 */
export class SnapshotCache {
  private readonly groups = new Map<string, GroupEntry>();
  private readonly readySubject = new BehaviorSubject(false);
  private readonly demand = new Subject<{ readonly group: NodeGroup; readonly watched: boolean }>();

  /** Groups gaining their first watcher (watched: true) or losing their last (false). */
  readonly demand$: Observable<{ readonly group: NodeGroup; readonly watched: boolean }> = this.demand.asObservable();
  readonly ready$: Observable<boolean> = this.readySubject.asObservable();

  get ready(): boolean {
    return this.readySubject.value;
  }

  /** From now on snapshots are served. */
  markReady(): void {
    if (this.ready) return;
    this.readySubject.next(true);
    for (const entry of this.groups.values()) this.notify(entry);
  }

  /**
   * Builds, checks and stores a group's snapshot, then notifies its watchers. On an inconsistent
   * input it throws SnapshotConsistencyError and the previous snapshot stays in place. The build
   * starts from the group's current snapshot: types whose input did not change keep their
   * ResourceSet (see Snapshot.build), which is what lets streams skip them.
   */
  setSnapshot(groupKey: string, input: SnapshotInput | Snapshot): Snapshot {
    const snapshot = input instanceof Snapshot ? input : Snapshot.build(input, this.groups.get(groupKey)?.snapshot);
    const entry = this.entry(groupKey);
    // Same content, same versions: keep the snapshot the streams already hold and wake none of them.
    if (entry.snapshot && sameVersions(entry.snapshot, snapshot)) return entry.snapshot;
    entry.snapshot = snapshot;
    entry.recent = [snapshot, ...entry.recent.slice(0, KEPT_SNAPSHOTS - 1)];
    this.notify(entry);
    return snapshot;
  }

  /**
   * The group's last snapshots, newest first: where a proxy that reconnects with the versions it
   * runs finds what those are (versions are content hashes, so any replica that built the same
   * configuration recently knows them).
   */
  recent(groupKey: string): readonly Snapshot[] {
    return this.groups.get(groupKey)?.recent ?? [];
  }

  getSnapshot(groupKey: string): Snapshot | undefined {
    return this.groups.get(groupKey)?.snapshot;
  }

  /** Forgets a group's snapshot; its watchers keep what they were sent until a new one is set. */
  clearSnapshot(groupKey: string): void {
    const entry = this.groups.get(groupKey);
    if (!entry) return;
    delete entry.snapshot;
    entry.recent = [];
    this.dropIfUnused(groupKey, entry);
  }

  /** Group keys that have a snapshot or a watcher. */
  groupKeys(): string[] {
    return [...this.groups.keys()];
  }

  /** Groups that at least one proxy is watching. */
  watchedGroups(): NodeGroup[] {
    return [...this.groups.values()].filter((e) => e.listeners.size > 0 && e.group).map((e) => e.group as NodeGroup);
  }

  /** Calls `listener` with the group's snapshot whenever it changes (and now, if one is ready). */
  watch(group: NodeGroup, listener: SnapshotListener): () => void {
    const entry = this.entry(group.key);
    entry.group = group;
    entry.listeners.add(listener);
    if (entry.listeners.size === 1) this.demand.next({ group, watched: true });
    if (this.ready && entry.snapshot) listener(entry.snapshot);
    return () => {
      if (!entry.listeners.delete(listener)) return;
      if (entry.listeners.size === 0) {
        this.demand.next({ group, watched: false });
        this.dropIfUnused(group.key, entry);
      }
    };
  }

  private entry(groupKey: string): GroupEntry {
    let entry = this.groups.get(groupKey);
    if (!entry) this.groups.set(groupKey, (entry = { recent: [], listeners: new Set() }));
    return entry;
  }

  private notify(entry: GroupEntry): void {
    if (!this.ready || !entry.snapshot) return;
    const snapshot = entry.snapshot;
    for (const listener of [...entry.listeners]) listener(snapshot);
  }

  private dropIfUnused(groupKey: string, entry: GroupEntry): void {
    if (entry.listeners.size === 0 && !entry.snapshot) this.groups.delete(groupKey);
  }
}

function sameVersions(a: Snapshot, b: Snapshot): boolean {
  if (a === b) return true;
  const va = a.versions();
  const vb = b.versions();
  const keys = Object.keys(va);
  return keys.length === Object.keys(vb).length && keys.every((k) => va[k] === vb[k]);
}
