import { createHash } from 'node:crypto';
import type { V1ConfigMap, V1ConfigMapList } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Subject, type Observable } from 'rxjs';
import { withTimeout } from './kube-client.js';
import { json, MERGE_PATCH, PARTIAL_METADATA, PARTIAL_METADATA_LIST, type KubeHttp } from './kube-http.js';
import type { ReplicaExchange } from './source.js';

export const REPLICA_STATUS_LABELS = { 'app.kubernetes.io/name': 'vsxds', 'app.kubernetes.io/component': 'replica-status' } as const;
const SELECTOR = Object.entries(REPLICA_STATUS_LABELS)
  .map(([k, v]) => `${k}=${v}`)
  .join(',');
const DATA_KEY = 'contribution.json';
const REPLICA_ANNOTATION = 'vsxds.l7mp.io/replica';
const RENEW_ANNOTATION = 'vsxds.l7mp.io/renewed-at';
const HASH_ANNOTATION = 'vsxds.l7mp.io/contribution-sha256';
/** The reader's watch asks the API server to end it after 80–100% of this many seconds (then starts again from where it was). */
const WATCH_S = 60;
/** A refused watch (403) is tried again after this long; meanwhile the reader lists every interval. */
const WATCH_REFUSED_RETRY_MS = 60_000;

interface ObjectMetadata {
  readonly name?: string;
  readonly resourceVersion?: string;
  readonly annotations?: Readonly<Record<string, string>>;
}
interface PartialMetadataList {
  readonly metadata?: { readonly resourceVersion?: string };
  /** null when there are none. */
  readonly items: readonly { readonly metadata?: ObjectMetadata }[] | null;
}

export interface ReplicaStatusOptions {
  readonly namespace: string;
  /** This replica's name: its object is `vsxds-replica-<name>`. */
  readonly replica: string;
  /** The Pod this replica runs in, when the downward API says: owner of the object, so Kubernetes deletes it with the Pod. */
  readonly pod?: { readonly name: string; readonly uid: string };
  /** A contribution whose object went unchanged this long, as this replica's clock measures, no longer counts. */
  readonly leaseDurationSeconds: number;
  /** At most one write of the contribution per this many ms (and, while reading, one list of the others' when one is needed). */
  readonly intervalMs?: number;
  readonly log: Logger;
  /** Injectable clock for tests. */
  readonly now?: () => number;
}

/** What this replica knows of another one's object. */
interface Peer {
  readonly resourceVersion: string;
  /** Local time this resourceVersion was first seen. */
  readonly seenAt: number;
  readonly payload: string;
  /** The hash of the contribution its writer annotated it with. */
  readonly hash?: string;
  /** `KubeReplicaStatus.updates` when a watch event last set it (0: a list did). */
  readonly update: number;
}

/**
 * Each replica's contribution to VirtualService status, exchanged through one ConfigMap per
 * replica (labelled app.kubernetes.io/component=replica-status) that only that replica writes:
 * no replica talks to another. The writer coalesces (a change after a quiet spell at once, then at
 * most one write per interval, only when the contribution changed) and renews the object every third of the lease duration; the reader
 * (the leader) lists the others' objects' metadata once, then watches them (see `read`), reads
 * those whose contribution changed and, as leader election does, judges
 * liveness by its own clock only: an object whose resourceVersion it saw unchanged for the lease
 * duration is a dead replica's and no longer counts. A replica deletes its object when it stops,
 * and names its Pod as owner so Kubernetes deletes it when the Pod goes.
 *
 * With leader election no replica reads the leader's object: while it leads (`publishing` off)
 * it writes none, and deletes the one it had (left as it was, it would count for a lease
 * duration after this replica died leading, with what its proxies said before it led); stepping
 * down, it writes it at once, before another replica may take the lease.
 */
export class KubeReplicaStatus implements ReplicaExchange {
  readonly name: string;
  private readonly subject = new Subject<void>();
  readonly peers$: Observable<void> = this.subject.asObservable();
  private readonly peersByName = new Map<string, Peer>();
  private live = new Map<string, string>();
  private build?: () => string;
  private dirty = false;
  private written?: string;
  /** Built, not written yet (a write failed). */
  private pending?: string;
  private writtenAt = -Infinity;
  private readingNow = false;
  private publishingNow = true;
  /** The object is known to be absent (deleted while not publishing). */
  private unpublished = false;
  /** The next tick runs as soon as this one ends (a role changed while it ran). */
  private hurry = false;
  private timer?: NodeJS.Timeout;
  private started = false;
  private ticking = false;
  /** Local time the last tick started. */
  private tickedAt = -Infinity;
  private stopped = false;
  private running?: Promise<void>;
  /** Last failure reported per operation, so each is said once. */
  private readonly reported = new Map<'write' | 'read' | 'watch', string>();
  /** The watch of the others' objects while reading, and the timer that ends it if the API server does not. */
  private watching?: { readonly abort: () => void; readonly timer: NodeJS.Timeout; readonly startedAt: number };
  /** The resourceVersion to watch from (the last list's, or the last event's); none: list first. */
  private watchFrom?: string;
  /** Local time of the last list. */
  private listedAt = -Infinity;
  /** Until then, list every interval instead of watching (the watch was refused). */
  private watchRefusedUntil = -Infinity;
  /** Lists and watch events are applied one after another. */
  private turn: Promise<void> = Promise.resolve();
  /** Bumped when reading stops: work of the reading before no longer applies. */
  private readEpoch = 0;
  /** Peers set by watch events so far: a list requested before one of them does not undo it. */
  private updates = 0;
  /** Peers a DELETED event removed, with the update it was: a list requested before does not bring them back. */
  private readonly deleted = new Map<string, number>();
  writes = 0;
  /** Lists of the others' objects, and watches of them started (for tests and debugging). */
  lists = 0;
  watchesStarted = 0;

  constructor(
    private readonly http: KubeHttp,
    private readonly options: ReplicaStatusOptions,
  ) {
    this.name = replicaObjectName(options.replica);
  }

  private get intervalMs(): number {
    return this.options.intervalMs ?? 1_000;
  }

  private get leaseMs(): number {
    return this.options.leaseDurationSeconds * 1000;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  publish(build: () => string): void {
    this.build = build;
    this.dirty = true;
    // A change after a quiet spell goes at once; the ones that follow wait for the next interval.
    if (this.started && !this.ticking && this.now() - this.tickedAt >= this.intervalMs) this.schedule(0);
  }

  /** Whether this replica reads the others' contributions (the leader does). */
  set reading(on: boolean) {
    if (on === this.readingNow) return;
    this.readingNow = on;
    if (on) {
      // A new leader reads the others at once: its first statuses count their proxies.
      this.soon();
      return;
    }
    this.readEpoch += 1;
    this.stopWatch();
    this.watchFrom = undefined;
    this.listedAt = -Infinity;
    this.peersByName.clear();
    this.setLive(new Map());
  }

  /** Whether this replica's contribution is written for the others to read (not while it leads with leader election). */
  set publishing(on: boolean) {
    if (on === this.publishingNow) return;
    this.publishingNow = on;
    this.written = undefined;
    this.writtenAt = -Infinity;
    this.unpublished = false;
    if (on) this.dirty = this.build !== undefined;
    this.soon();
  }

  /** The next tick at once, or right after the one running. */
  private soon(): void {
    if (!this.started) return;
    if (this.ticking) this.hurry = true;
    else this.schedule(0);
  }

  peers(): ReadonlyMap<string, string> {
    return this.live;
  }

  start(): void {
    this.started = true;
    this.schedule(0);
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.run(), delayMs);
  }

  private async run(): Promise<void> {
    if (this.stopped) return;
    this.ticking = true;
    this.tickedAt = this.now();
    // A request the API server never answers must not stop the loop (nor shutdown): past the
    // lease duration the tick counts as done; what the leader read meanwhile expires on its own.
    this.running = withTimeout(this.tick(), this.leaseMs).catch(() => undefined);
    await this.running;
    this.ticking = false;
    const hurry = this.hurry;
    this.hurry = false;
    if (!this.stopped) this.schedule(hurry ? 0 : this.nextDelayMs());
  }

  /** The next tick after an interval, or sooner when this replica's renewal falls due: renewals every third of the lease duration, not up to an interval later. */
  private nextDelayMs(): number {
    if (!this.publishingNow || this.written === undefined) return this.intervalMs;
    const due = this.writtenAt + this.leaseMs / 3 - this.now();
    // Past due: the renewal just failed; it is retried after an interval.
    return due > 0 ? Math.min(this.intervalMs, due) : this.intervalMs;
  }

  /** Stops, and deletes this replica's object so the leader stops counting it at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.readEpoch += 1;
    this.stopWatch();
    this.watchFrom = undefined;
    await this.running;
    if (this.written === undefined) return;
    try {
      await this.remove();
    } catch {
      // Best effort: the leader stops counting it after the lease duration, and Kubernetes deletes it with the Pod.
    }
  }

  /** The ConfigMaps of the namespace, or one of them. */
  private path(name?: string): string {
    const base = `/api/v1/namespaces/${encodeURIComponent(this.options.namespace)}/configmaps`;
    return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
  }

  private async tick(): Promise<void> {
    // Before anything that may hang: what was not seen renewed stops counting all the same.
    if (this.readingNow) this.expire();
    await (this.publishingNow ? this.write() : this.unpublish()).then(
      () => this.recovered('write'),
      (err) => this.failed('write', err),
    );
    if (!this.readingNow) return;
    await this.read().then(
      () => this.recovered('read'),
      (err) => this.failed('read', err),
    );
  }

  private async write(): Promise<void> {
    if (this.dirty && this.build) {
      this.pending = this.build();
      this.dirty = false;
    }
    const payload = this.pending ?? this.written;
    const now = this.now();
    if (payload === undefined) return;
    if (payload === this.written && now - this.writtenAt < this.leaseMs / 3) return;
    const renewedAt = new Date(now).toISOString();
    if (payload !== this.written || !(await this.renew(renewedAt))) await this.replace(payload, renewedAt);
    this.writes += 1;
    this.written = payload;
    this.pending = undefined;
    this.writtenAt = now;
  }

  /** Deletes this replica's object, once. */
  private async unpublish(): Promise<void> {
    if (this.unpublished) return;
    await this.remove();
    this.unpublished = true;
  }

  /** Deletes this replica's object; one already gone (404) is done too. */
  private async remove(): Promise<void> {
    try {
      await this.http.request('DELETE', this.path(this.name));
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
  }

  /** Only a renewal: a small patch, the contribution stays as it is. False when the object is gone. */
  private async renew(renewedAt: string): Promise<boolean> {
    try {
      await this.http.request('PATCH', this.path(this.name), json({ metadata: { annotations: { [RENEW_ANNOTATION]: renewedAt } } }, MERGE_PATCH));
      return true;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return false;
      throw err;
    }
  }

  private async replace(payload: string, renewedAt: string): Promise<void> {
    const { namespace, pod } = this.options;
    const body: V1ConfigMap = {
      metadata: {
        name: this.name,
        namespace,
        labels: { ...REPLICA_STATUS_LABELS },
        annotations: { [REPLICA_ANNOTATION]: this.options.replica, [RENEW_ANNOTATION]: renewedAt, [HASH_ANNOTATION]: createHash('sha256').update(payload).digest('hex') },
        ...(pod ? { ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name: pod.name, uid: pod.uid }] } : {}),
      },
      data: { [DATA_KEY]: payload },
    };
    try {
      await this.http.request('PUT', this.path(this.name), json(body));
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      await this.http.request('POST', this.path(), json(body));
    }
  }

  /**
   * Follows the others' objects: a list at first, then a watch from it. Lists again only when
   * the watch failed, when it is refused (every interval then, as before there was a watch), or
   * to confirm a contribution about to expire: a live replica renews every third of the lease
   * duration, so one unseen for half of it means a dead replica or a watch that missed events
   * (a half-open connection); the list tells which, and a change the watch did not deliver
   * starts it over.
   */
  private async read(): Promise<void> {
    if (this.stopped) return;
    const now = this.now();
    const refused = now < this.watchRefusedUntil;
    const confirm = this.watching !== undefined && now - this.listedAt >= this.intervalMs && this.aboutToExpire(now);
    if (this.watchFrom === undefined || refused || confirm) {
      this.listedAt = now;
      const missed = await this.list();
      if (missed && this.watching) {
        this.options.log.info('replica status: the watch of the replicas\' ConfigMaps missed changes; starting it over');
        this.stopWatch();
      }
    }
    if (!refused && !this.watching && this.watchFrom !== undefined && this.readingNow && !this.stopped) this.startWatch(this.watchFrom);
  }

  /** Whether a contribution still counted went unrenewed (as this replica saw it) for half the lease duration. */
  private aboutToExpire(now: number): boolean {
    for (const peer of this.peersByName.values()) {
      const age = now - peer.seenAt;
      if (age >= this.leaseMs / 2 && age <= this.leaseMs) return true;
    }
    return false;
  }

  /** Lists the others' objects (metadata only); true when what it found differs from what was known. */
  private async list(): Promise<boolean> {
    const epoch = this.readEpoch;
    const requestedAfter = this.updates;
    const list = JSON.parse(await this.http.request('GET', `${this.path()}?labelSelector=${encodeURIComponent(SELECTOR)}`, undefined, PARTIAL_METADATA_LIST)) as PartialMetadataList;
    this.lists += 1;
    // Applied in turn with the watch's events (each may read an object whole).
    return this.inTurn(async () => {
      if (epoch !== this.readEpoch) return false;
      const now = this.now();
      const present = new Set<string>();
      let changed = false;
      // What a watch event set after the list was requested is newer than the list: kept.
      const newer = (name: string) => Math.max(this.peersByName.get(name)?.update ?? 0, this.deleted.get(name) ?? 0) > requestedAfter;
      for (const { metadata } of list.items ?? []) {
        if (!metadata?.name || metadata.name === this.name) continue;
        present.add(metadata.name);
        if (!newer(metadata.name) && (await this.observe(metadata, now, epoch, 0))) changed = true;
      }
      for (const name of this.peersByName.keys()) {
        if (present.has(name) || newer(name)) continue;
        this.peersByName.delete(name);
        changed = true;
      }
      for (const [name, update] of this.deleted) if (update <= requestedAfter) this.deleted.delete(name);
      // A running watch that missed nothing goes on from where it is; otherwise it starts from the list.
      if (list.metadata?.resourceVersion && (!this.watching || changed)) this.watchFrom = list.metadata.resourceVersion;
      this.expire();
      return changed;
    });
  }

  /** What one object's metadata says: a new resourceVersion renews it, a new hash is read whole. True when the resourceVersion was new. */
  private async observe(metadata: ObjectMetadata, now: number, epoch: number, update: number): Promise<boolean> {
    const { name, resourceVersion } = metadata;
    if (!name || !resourceVersion) return false;
    const before = this.peersByName.get(name);
    if (before?.resourceVersion === resourceVersion) return false;
    const hash = metadata.annotations?.[HASH_ANNOTATION];
    let payload = before?.payload;
    if (!before || hash === undefined || hash !== before.hash) {
      let cm: V1ConfigMap;
      try {
        cm = JSON.parse(await this.http.request('GET', this.path(name))) as V1ConfigMap;
      } catch (err) {
        if ((err as { code?: number }).code !== 404) throw err;
        // Deleted since (a replica that stopped): gone, as its DELETED event will say.
        if (epoch === this.readEpoch) this.peersByName.delete(name);
        return before !== undefined;
      }
      payload = cm.data?.[DATA_KEY] ?? '';
    }
    if (epoch !== this.readEpoch) return false;
    this.peersByName.set(name, { resourceVersion, seenAt: now, payload: payload ?? '', hash, update });
    return true;
  }

  /** Runs `work` after the list or watch events before it. */
  private inTurn<T>(work: () => Promise<T>): Promise<T> {
    const done = this.turn.then(work);
    this.turn = done.then(
      () => undefined,
      () => undefined,
    );
    return done;
  }

  private startWatch(from: string): void {
    const epoch = this.readEpoch;
    // The API server ends it after 80–100% of WATCH_S; one that went silent without closing (a
    // half-open connection) is ended here a quarter later. Either way the next tick starts it again from the last resourceVersion seen.
    const timeoutS = Math.round(WATCH_S * (0.8 + 0.2 * Math.random()));
    const query = `watch=1&allowWatchBookmarks=true&timeoutSeconds=${timeoutS}&resourceVersion=${encodeURIComponent(from)}&labelSelector=${encodeURIComponent(SELECTOR)}`;
    const watch = this.http.watch(
      `${this.path()}?${query}`,
      (line) => this.onWatchEvent(line, epoch),
      (err) => {
        if (this.watching === current) this.watchEnded(err);
      },
      PARTIAL_METADATA,
    );
    const timer = setTimeout(() => {
      if (this.watching !== current) return;
      this.stopWatch();
      this.soon();
    }, timeoutS * 1250);
    const current = { abort: watch.abort, timer, startedAt: this.now() };
    this.watching = current;
    this.watchesStarted += 1;
  }

  /**
   * The running watch ended, by the API server's doing (`err` when it failed). The next tick
   * starts it again: at once if it ran for an interval at least, else the regular one, so a
   * watch the API server (or a proxy) ends as soon as it starts is tried once an interval, not
   * back to back.
   */
  private watchEnded(err: unknown): void {
    const startedAt = this.watching?.startedAt ?? -Infinity;
    this.stopWatch();
    if (err) this.watchFailed(err);
    else this.recovered('watch');
    if (this.now() - startedAt >= this.intervalMs) this.soon();
  }

  private stopWatch(): void {
    const w = this.watching;
    if (!w) return;
    this.watching = undefined;
    clearTimeout(w.timer);
    w.abort();
  }

  private onWatchEvent(line: string, epoch: number): void {
    if (epoch !== this.readEpoch) return;
    let event: { type?: string; object?: { metadata?: ObjectMetadata; code?: number; message?: string } };
    try {
      event = JSON.parse(line);
    } catch {
      return;
    }
    const { type, object } = event;
    this.recovered('watch');
    if (type === 'ERROR') {
      // Mostly 410 Gone: the resourceVersion is too old to watch from; the next tick lists.
      this.watchEnded(Object.assign(new Error(object?.message ?? 'ERROR event'), { code: object?.code }));
      return;
    }
    const metadata = object?.metadata;
    if (metadata?.resourceVersion) this.watchFrom = metadata.resourceVersion;
    if (type === 'BOOKMARK' || !metadata?.name || metadata.name === this.name) return;
    const now = this.now();
    void this.inTurn(async () => {
      if (epoch !== this.readEpoch) return;
      const name = metadata.name!;
      if (type === 'DELETED') {
        this.peersByName.delete(name);
        this.deleted.set(name, ++this.updates);
      } else {
        this.deleted.delete(name);
        await this.observe(metadata, now, epoch, ++this.updates);
      }
      this.expire();
    }).then(
      () => this.recovered('read'),
      (err) => this.failed('read', err),
    );
  }

  private watchFailed(err: unknown): void {
    const code = (err as { code?: number }).code;
    if (code === 403) {
      // Allowed to list but not to watch (a Role from before the watch): list every interval, as before.
      this.watchRefusedUntil = this.now() + WATCH_REFUSED_RETRY_MS;
      if (!this.reported.has('watch')) {
        this.reported.set('watch', '403');
        const { namespace } = this.options;
        this.options.log.warn(
          { code },
          `replica status: cannot watch the replicas' ConfigMaps in ${namespace} (403 Forbidden): listing them every second instead; grant its service account watch on configmaps in ${namespace} (the Role in deploy/leader-election-rbac.yaml)`,
        );
      }
      return;
    }
    // Anything else: list again, then watch from there.
    this.watchFrom = undefined;
    this.options.log.debug({ code, err: (err as Error).message }, 'replica status: watch failed; listing again');
  }

  private expire(): void {
    const now = this.now();
    const live = new Map<string, string>();
    for (const [name, peer] of this.peersByName) if (now - peer.seenAt <= this.leaseMs) live.set(name, peer.payload);
    this.setLive(live);
  }

  private setLive(live: Map<string, string>): void {
    const same = live.size === this.live.size && [...live].every(([name, payload]) => this.live.get(name) === payload);
    if (same) return;
    const gone = [...this.live.keys()].filter((name) => !live.has(name));
    if (gone.length > 0) this.options.log.info({ replicas: gone }, 'replica contributions no longer counted (deleted, or not renewed within the lease duration)');
    this.live = live;
    this.subject.next();
  }

  private recovered(what: 'write' | 'read' | 'watch'): void {
    if (!this.reported.delete(what)) return;
    this.options.log.info(`replica status: ${{ write: 'writing', read: 'reading', watch: 'watching' }[what]} ConfigMaps works again`);
  }

  private failed(what: 'write' | 'read', err: unknown): void {
    if (this.stopped) return;
    const code = (err as { code?: number }).code;
    const message = (err as Error).message;
    const kind = `${code ?? message}`;
    if (this.reported.get(what) === kind) return;
    this.reported.set(what, kind);
    const { namespace } = this.options;
    const doing =
      what === 'write'
        ? `cannot write its ConfigMap ${namespace}/${this.name}: the leader does not count the proxies connected to this replica in VirtualService status`
        : `cannot list the replicas' ConfigMaps in ${namespace}: VirtualService status counts only the proxies connected to this replica`;
    const fix =
      code === 403
        ? ` (403 Forbidden): grant its service account create, list, watch, get, update, patch and delete on configmaps in ${namespace} (the Role in deploy/leader-election-rbac.yaml)`
        : '';
    this.options.log.error({ code, err: message }, `replica status: ${doing}${fix}; everything else keeps working; retrying`);
  }
}

/** `vsxds-replica-<name>`, made a valid object name (lowercase alphanumerics and '-', at most 253 characters). */
export function replicaObjectName(replica: string): string {
  const cleaned = replica
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '');
  return `vsxds-replica-${cleaned || 'unnamed'}`.slice(0, 253).replace(/[^a-z0-9]+$/, '');
}
