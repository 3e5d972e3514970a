import { Histogram, type Registry } from 'prom-client';
import type { Snapshot } from '../xds/snapshot.js';
import type { ProxyInfo, PushTracer } from '../xds/status-registry.js';
import { shortTypeName } from '../xds/type-urls.js';

/** Wall-clock milliseconds since the epoch, to the microsecond: comparable with other processes' clocks. */
export function wallNow(): number {
  return performance.timeOrigin + performance.now();
}

/** One VirtualService change as a build saw it: what it changed in which groups. */
export interface BuiltChange {
  readonly key: string;
  readonly kind: 'upsert' | 'delete';
  /** When the source delivered it (the informer event, the file read). */
  readonly receivedAt: number;
  /** The groups it changed, with their snapshot before and after the build. */
  readonly groups: ReadonlyArray<{ readonly key: string; readonly before?: Snapshot; readonly after: Snapshot; readonly proxies: readonly ProxyInfo[] }>;
}

export interface BuildReport {
  readonly startedAt: number;
  /** Translation done; the snapshots are set (encoded, checked, pushed to the streams) after it. */
  readonly builtAt: number;
  readonly changes: readonly BuiltChange[];
}

interface TypeProgress {
  sentAt?: number;
  ackedAt?: number;
}

/** What a traced change is, and when it got where, up to its build (ms since the epoch). */
interface TracedChange {
  readonly key: string;
  readonly kind: 'upsert' | 'delete';
  readonly receivedAt: number;
  readonly buildStartedAt: number;
  readonly builtAt: number;
  readonly build: number;
  readonly groups: number;
  readonly proxies: number;
}

/** A change on its way to the proxies, then done. */
interface Trace extends TracedChange {
  readonly types: Map<string, TypeProgress>;
  /** Per group: the proxies still to ACK each type (by type URL), those connected when it was built. */
  readonly waiting: Map<string, Map<string, Set<ProxyInfo>>>;
  completedAt?: number;
  /** Given up: some proxy did not ACK within the deadline, or the trace list overflowed. */
  expired?: boolean;
  /** When it completed or was given up. */
  closedAt?: number;
}

/** One traced change as /debug/changes shows it; times are ms since the epoch, null while not reached. */
export interface ChangeView extends TracedChange {
  /** By short type name (Cluster, ClusterLoadAssignment, Listener). */
  readonly types: Readonly<Record<string, { readonly sentAt: number | null; readonly ackedAt: number | null }>>;
  readonly completedAt: number | null;
  readonly expired?: true;
}

export interface ChangeTrackerOptions {
  /** Traces kept for /debug/changes, done or not. */
  readonly keep?: number;
  /** A change not ACKed by every proxy within this long is given up (still shown, without completedAt). */
  readonly deadlineMs?: number;
  readonly now?: () => number;
}

const STAGE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * Where the time of each VirtualService change goes, from the informer event to the last ACK:
 * queued (waiting for the build), build, and per type the first push and the last proxy's ACK.
 * Each traced change is matched to ACKs by the versions its build produced: a proxy that ACKs
 * that version or any later one of the same type has it. Shown at /debug/changes and as the
 * vsxds_change_seconds histogram. Bounded: the last `keep` changes, each given up after a deadline.
 */
export class ChangeTracker implements PushTracer {
  private readonly keep: number;
  private readonly deadlineMs: number;
  private readonly now: () => number;
  private readonly traces: Trace[] = [];
  /** Traces not yet done, by group key. */
  private readonly open = new Map<string, Set<Trace>>();
  /** The build that produced each version, per group and type (the last few per type). */
  private readonly versionBuilds = new Map<string, Map<string, Map<string, number>>>();
  /** The latest build each proxy ACKed, per type. */
  private readonly ackedBuilds = new WeakMap<ProxyInfo, Map<string, number>>();
  private builds = 0;
  /**
   * Pushes of versions no build was reported for yet: setting a snapshot pushes it to the streams
   * at once, before the pipeline reports the build. Keyed by group, type and version; emptied by
   * each report.
   */
  private early = new Map<string, number>();
  private histogram?: Histogram<'stage' | 'type'>;

  constructor(options: ChangeTrackerOptions = {}) {
    this.keep = options.keep ?? 2000;
    this.deadlineMs = options.deadlineMs ?? 60_000;
    this.now = options.now ?? wallNow;
  }

  /** Exports the stages as the vsxds_change_seconds histogram. */
  registerMetrics(registry: Registry): void {
    this.histogram = new Histogram({
      name: 'vsxds_change_seconds',
      help: 'Time a VirtualService change spends in each stage: queued (source event to build start), build, push (build end to the first proxy sent it, per type), ack (push to the last proxy ACK, per type), total (source event to every proxy ACKed)',
      labelNames: ['stage', 'type'],
      buckets: STAGE_BUCKETS,
      registers: [registry],
    });
  }

  /** Called by the pipeline after each build that changed some group's snapshot. */
  built(report: BuildReport): void {
    const build = ++this.builds;
    const groupsSeen = new Set<string>();
    for (const change of report.changes) {
      const types = new Map<string, TypeProgress>();
      const waiting = new Map<string, Map<string, Set<ProxyInfo>>>();
      let proxies = 0;
      for (const g of change.groups) {
        if (!groupsSeen.has(g.key)) {
          groupsSeen.add(g.key);
          this.recordVersions(g.key, g.after, build);
        }
        const byType = new Map<string, Set<ProxyInfo>>();
        for (const typeUrl of changedTypes(g.before, g.after)) {
          if (!types.has(typeUrl)) types.set(typeUrl, {});
          const early = this.early.get(`${g.key}\u0000${typeUrl}\u0000${g.after.resources(typeUrl).version}`);
          const progress = types.get(typeUrl) as TypeProgress;
          if (early !== undefined && (progress.sentAt === undefined || early < progress.sentAt)) progress.sentAt = early;
          byType.set(typeUrl, new Set(g.proxies.filter((p) => !this.hasAcked(p, typeUrl, build))));
        }
        proxies += g.proxies.length;
        waiting.set(g.key, byType);
      }
      const trace: Trace = {
        key: change.key,
        kind: change.kind,
        receivedAt: change.receivedAt,
        buildStartedAt: report.startedAt,
        builtAt: report.builtAt,
        build,
        groups: change.groups.length,
        proxies,
        types,
        waiting,
      };
      this.observe('queued', '', report.startedAt - change.receivedAt);
      this.observe('build', '', report.builtAt - report.startedAt);
      for (const [typeUrl, p] of types) if (p.sentAt !== undefined) this.observe('push', typeUrl, p.sentAt - report.builtAt);
      this.traces.push(trace);
      for (const g of change.groups) this.openSet(g.key).add(trace);
      this.settle(trace);
    }
    this.early = new Map();
    while (this.traces.length > this.keep) {
      const dropped = this.traces.shift() as Trace;
      if (dropped.completedAt === undefined) this.close(dropped, true);
    }
    this.expireOld();
  }

  sent(proxy: ProxyInfo, typeUrl: string, version: string): void {
    const group = proxy.group?.key;
    if (!group) return;
    const build = this.versionBuilds.get(group)?.get(typeUrl)?.get(version);
    if (build === undefined) {
      const key = `${group}\u0000${typeUrl}\u0000${version}`;
      if (!this.early.has(key) && this.early.size < 10_000) this.early.set(key, this.now());
      return;
    }
    const open = this.open.get(group);
    if (!open || open.size === 0) return;
    const now = this.now();
    for (const trace of open) {
      const progress = trace.types.get(typeUrl);
      if (!progress || progress.sentAt !== undefined || build < trace.build) continue;
      progress.sentAt = now;
      this.observe('push', typeUrl, now - trace.builtAt);
    }
  }

  acked(proxy: ProxyInfo, typeUrl: string, version: string): void {
    const group = proxy.group?.key;
    if (!group) return;
    const build = this.versionBuilds.get(group)?.get(typeUrl)?.get(version);
    if (build === undefined) return;
    let byType = this.ackedBuilds.get(proxy);
    if (!byType) this.ackedBuilds.set(proxy, (byType = new Map()));
    if ((byType.get(typeUrl) ?? 0) >= build) return;
    byType.set(typeUrl, build);
    for (const trace of this.open.get(group) ?? []) {
      if (trace.build > build) continue;
      trace.waiting.get(group)?.get(typeUrl)?.delete(proxy);
      this.settle(trace);
    }
  }

  /** A proxy went away: nothing more is waited for from it. */
  disconnected(proxy: ProxyInfo): void {
    const group = proxy.group?.key;
    if (!group) return;
    for (const trace of this.open.get(group) ?? []) {
      for (const waiting of trace.waiting.get(group)?.values() ?? []) waiting.delete(proxy);
      this.settle(trace);
    }
  }

  /**
   * The traced changes, oldest first, as /debug/changes shows them; with `since` (ms since the
   * epoch), only those still open or closed (completed or given up) at or after it: what a
   * poller that saw everything up to `since` has not seen in its final form.
   */
  list(since?: number): ChangeView[] {
    this.expireOld();
    const traces = since === undefined ? this.traces : this.traces.filter((t) => t.closedAt === undefined || t.closedAt >= since);
    return traces.map((t) => ({
      key: t.key,
      kind: t.kind,
      receivedAt: round(t.receivedAt),
      buildStartedAt: round(t.buildStartedAt),
      builtAt: round(t.builtAt),
      build: t.build,
      groups: t.groups,
      proxies: t.proxies,
      types: Object.fromEntries(
        [...t.types].map(([typeUrl, p]) => [typeUrl.slice(typeUrl.lastIndexOf('.') + 1), { sentAt: p.sentAt === undefined ? null : round(p.sentAt), ackedAt: p.ackedAt === undefined ? null : round(p.ackedAt) }]),
      ),
      completedAt: t.completedAt === undefined ? null : round(t.completedAt),
      ...(t.expired ? { expired: true as const } : {}),
    }));
  }

  private hasAcked(proxy: ProxyInfo, typeUrl: string, build: number): boolean {
    return (this.ackedBuilds.get(proxy)?.get(typeUrl) ?? 0) >= build;
  }

  /** Marks the types every proxy ACKed, and the change done when all are. */
  private settle(trace: Trace): void {
    if (trace.completedAt !== undefined || trace.expired) return;
    const now = this.now();
    let done = true;
    for (const [typeUrl, progress] of trace.types) {
      if (progress.ackedAt !== undefined) continue;
      let pending = false;
      for (const byType of trace.waiting.values()) if ((byType.get(typeUrl)?.size ?? 0) > 0) pending = true;
      if (pending) {
        done = false;
        continue;
      }
      progress.ackedAt = now;
      if (progress.sentAt !== undefined) this.observe('ack', typeUrl, now - progress.sentAt);
    }
    if (!done) return;
    trace.completedAt = now;
    this.observe('total', '', now - trace.receivedAt);
    this.close(trace, false);
  }

  private close(trace: Trace, expired: boolean): void {
    if (expired) trace.expired = true;
    trace.closedAt = this.now();
    for (const group of trace.waiting.keys()) {
      const open = this.open.get(group);
      open?.delete(trace);
      if (open?.size === 0) this.open.delete(group);
    }
  }

  private expireOld(): void {
    const limit = this.now() - this.deadlineMs;
    for (const open of [...this.open.values()]) {
      for (const trace of [...open]) if (trace.builtAt < limit) this.close(trace, true);
    }
  }

  private openSet(group: string): Set<Trace> {
    let set = this.open.get(group);
    if (!set) this.open.set(group, (set = new Set()));
    return set;
  }

  /** Remembers which build produced each type's version, the last few per type. */
  private recordVersions(group: string, snapshot: Snapshot, build: number): void {
    let byType = this.versionBuilds.get(group);
    if (!byType) this.versionBuilds.set(group, (byType = new Map()));
    for (const typeUrl of snapshot.typeUrls()) {
      const version = snapshot.resources(typeUrl).version;
      let versions = byType.get(typeUrl);
      if (!versions) byType.set(typeUrl, (versions = new Map()));
      if (versions.has(version)) continue;
      versions.set(version, build);
      if (versions.size > 64) versions.delete(versions.keys().next().value as string);
    }
  }

  private observe(stage: string, typeUrl: string, ms: number): void {
    this.histogram?.observe({ stage, type: typeUrl ? shortTypeName(typeUrl) : '' }, Math.max(0, ms) / 1000);
  }
}

function changedTypes(before: Snapshot | undefined, after: Snapshot): string[] {
  return after.typeUrls().filter((t) => before?.resources(t).version !== after.resources(t).version);
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
