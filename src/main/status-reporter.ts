import type { Logger } from 'pino';
import { auditTime, combineLatest, startWith, type Subscription } from 'rxjs';
import type { Condition, VirtualService, VirtualServiceStatus } from '../model/types.js';
import { appliesTo } from '../translate/index.js';
import type { NodeGroup } from '../xds/node-identity.js';
import type { EventSink, StatusWriter } from '../sources/source.js';
import type { ProxyInfo, ProxyStatusRegistry } from '../xds/status-registry.js';
import type { ConfigPipeline, Evaluated, PipelineView } from './config-pipeline.js';

/**
 * Turns what the pipeline decided and what proxies ACKed/NACKed into each VirtualService's
 * status: Accepted, Conflicted, Synced, and proxy counts. Recomputed on a short window so a
 * fleet ACKing one push leads to one status write, not one per proxy.
 */
export class StatusReporter {
  private readonly statuses = new Map<string, VirtualServiceStatus>();
  private subscription?: Subscription;

  constructor(
    private readonly pipeline: ConfigPipeline,
    private readonly registry: ProxyStatusRegistry,
    private readonly writer: StatusWriter | undefined,
    private readonly log: Logger,
    private readonly windowMs = 250,
    private readonly now: () => Date = () => new Date(),
    private readonly events?: EventSink,
  ) {}

  start(): void {
    this.subscription = combineLatest([this.pipeline.view$, this.registry.events$.pipe(startWith(null))])
      .pipe(auditTime(this.windowMs))
      .subscribe(([view]) => this.report(view));
  }

  stop(): void {
    this.subscription?.unsubscribe();
  }

  /** The statuses last computed, by `namespace/name`. */
  current(): ReadonlyMap<string, VirtualServiceStatus> {
    return this.statuses;
  }

  report(view: PipelineView = this.pipeline.current): void {
    // Proxies by node group, and node groups by namespace, once per report: a VirtualService
    // looks only at the groups of its namespace.
    const groupsByNamespace = new Map<string, Map<string, GroupProxies>>();
    const entry = (group: NodeGroup): GroupProxies => {
      let groups = groupsByNamespace.get(group.namespace);
      if (!groups) groupsByNamespace.set(group.namespace, (groups = new Map()));
      let found = groups.get(group.key);
      if (!found) groups.set(group.key, (found = { group, proxies: [] }));
      return found;
    };
    for (const t of view.translations.values()) entry(t.group);
    for (const p of this.registry.list()) if (p.group) entry(p.group).proxies.push(p);
    const seen = new Set<string>();
    for (const e of view.evaluated.values()) {
      seen.add(e.key);
      const status = this.statusOf(e, view, groupsByNamespace);
      const previous = this.statuses.get(e.key);
      const merged = withTransitionTimes(status, previous, this.now().toISOString());
      if (previous && JSON.stringify(previous) === JSON.stringify(merged)) continue;
      this.recordEvents(e, previous, merged);
      this.statuses.set(e.key, merged);
      this.writer?.write(e.key, e.generation, merged);
    }
    for (const key of [...this.statuses.keys()]) {
      if (seen.has(key)) continue;
      this.statuses.delete(key);
      this.writer?.forget(key);
    }
  }

  /** Events on transitions only: accepted/rejected, and each new rejection by a proxy. */
  private recordEvents(e: Evaluated, before: VirtualServiceStatus | undefined, after: VirtualServiceStatus): void {
    if (!this.events) return;
    const uid = typeof e.raw.metadata['uid'] === 'string' ? (e.raw.metadata['uid'] as string) : undefined;
    const accepted = (s: VirtualServiceStatus | undefined) => s?.conditions?.find((c) => c.type === 'Accepted');
    const was = accepted(before);
    const now = accepted(after);
    if (now && (was?.status !== now.status || was?.message !== now.message)) {
      if (now.status === 'True') this.events.record(e.key, uid, 'Normal', 'Accepted', 'VirtualService is valid and served to the proxies it selects');
      else this.events.record(e.key, uid, 'Warning', now.reason, now.message);
    }
    if (after.nackMessage && after.nackMessage !== before?.nackMessage) {
      this.events.record(e.key, uid, 'Warning', 'ProxyRejected', `${after.proxies?.nacked ?? 1} proxy(s) rejected the configuration: ${after.nackMessage}`);
    }
  }

  private statusOf(e: Evaluated, view: PipelineView, groupsByNamespace: ReadonlyMap<string, ReadonlyMap<string, GroupProxies>>): VirtualServiceStatus {
    const conditions: Condition[] = [
      { type: 'Accepted', status: e.accepted ? 'True' : 'False', reason: e.reason, message: e.message, observedGeneration: e.generation },
    ];
    const listeners = e.vs?.spec.listeners.length ?? 0;
    if (!e.accepted || !e.vs) {
      conditions.push({ type: 'Synced', status: 'Unknown', reason: 'NotAccepted', message: 'not served until it is valid', observedGeneration: e.generation });
      return { observedGeneration: e.generation, conditions, listeners, proxies: { matched: 0, synced: 0, nacked: 0, summary: '0/0' } };
    }
    const vs = e.vs;
    // The groups it selects: those with proxies connected, and those the pipeline translated.
    const groups = new Map<string, NodeGroup>();
    for (const g of groupsByNamespace.get(vs.metadata.namespace)?.values() ?? []) if (appliesTo(vs, g.group)) groups.set(g.group.key, g.group);
    const conflicts = [...groups.keys()].flatMap((k) => view.translations.get(k)?.translation.contributions.get(e.key)?.conflicts ?? []);
    const uniqueConflicts = [...new Map(conflicts.map((c) => [c.message, c])).values()];
    conditions.push(
      uniqueConflicts.length > 0
        ? {
            type: 'Conflicted',
            status: 'True',
            reason: [...new Set(uniqueConflicts.map((c) => `${c.kind}Conflict`))].sort().join(','),
            message: uniqueConflicts.map((c) => c.message).join('; '),
            observedGeneration: e.generation,
          }
        : { type: 'Conflicted', status: 'False', reason: 'NoConflicts', message: 'no listener, port or cluster name clashes with another VirtualService', observedGeneration: e.generation },
    );
    const selects = (g: NodeGroup | undefined): boolean => g !== undefined && appliesTo(vs, g);
    const matched = [...groups.keys()].flatMap((k) => groupsByNamespace.get(vs.metadata.namespace)?.get(k)?.proxies ?? []);
    const blames = (message: string, p: ProxyInfo) => nackBlames(message, vs, view, p);
    const nackedProxies = matched.filter((p) => [...p.types.values()].some((t) => t.nack && blames(t.nack.message, p)));
    const synced = matched.filter((p) => p.synced && ![...p.types.values()].some((t) => t.nack));
    const nackMessage = nackedProxies.flatMap((p) => [...p.types.values()].flatMap((t) => (t.nack && blames(t.nack.message, p) ? [t.nack.message] : [])))[0];
    const buildError = [...view.buildErrors.values()].find((b) => selects(b.group))?.message;
    let syncedCondition: Condition;
    if (buildError) {
      syncedCondition = { type: 'Synced', status: 'False', reason: 'BuildFailed', message: buildError, observedGeneration: e.generation };
    } else if (matched.length === 0) {
      syncedCondition = {
        type: 'Synced',
        status: 'Unknown',
        reason: 'NoProxies',
        message: `no connected proxy in namespace ${vs.metadata.namespace} has all the labels ${JSON.stringify(vs.spec.selector)}`,
        observedGeneration: e.generation,
      };
    } else if (nackedProxies.length > 0) {
      syncedCondition = { type: 'Synced', status: 'False', reason: 'Rejected', message: `${nackedProxies.length} of ${matched.length} proxies rejected the configuration: ${nackMessage}`, observedGeneration: e.generation };
    } else if (synced.length < matched.length) {
      syncedCondition = {
        type: 'Synced',
        status: 'False',
        reason: 'Pending',
        message: `${synced.length} of ${matched.length} proxies have the current configuration (a proxy that rejected another VirtualService's part counts as not synced)`,
        observedGeneration: e.generation,
      };
    } else {
      syncedCondition = { type: 'Synced', status: 'True', reason: 'Synced', message: `all ${matched.length} matched proxies accepted the current configuration`, observedGeneration: e.generation };
    }
    conditions.push(syncedCondition);
    return {
      observedGeneration: e.generation,
      conditions,
      listeners,
      proxies: { matched: matched.length, synced: synced.length, nacked: nackedProxies.length, summary: `${synced.length}/${matched.length}` },
      ...(nackMessage ? { nackMessage } : {}),
    };
  }
}

interface GroupProxies {
  readonly group: NodeGroup;
  readonly proxies: ProxyInfo[];
}

/**
 * Whether a proxy's NACK is this VirtualService's doing. Envoy's messages name the listener or
 * cluster they reject; a message naming only other VirtualServices' resources is theirs, and
 * one naming no known resource is blamed on every VirtualService of the proxy.
 */
function nackBlames(message: string, vs: VirtualService, view: PipelineView, proxy: ProxyInfo): boolean {
  const mentions = (v: VirtualService) => resourceNames(v).some((n) => new RegExp(`(^|[^a-z0-9-])${escapeRegExp(n)}($|[^a-z0-9-])`).test(message));
  if (mentions(vs)) return true;
  const group = proxy.group;
  if (!group) return true;
  // The other VirtualServices of the proxy's group, as the pipeline last translated it.
  const others = [...(view.translations.get(group.key)?.translation.contributions.keys() ?? [])].flatMap((k) => {
    const o = view.evaluated.get(k)?.vs;
    return o && o !== vs ? [o] : [];
  });
  return !others.some(mentions);
}

function resourceNames(vs: VirtualService): string[] {
  return vs.spec.listeners.flatMap((l) => [l.name, l.udp.cluster.name]);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A condition keeps its lastTransitionTime while its status stays the same. */
function withTransitionTimes(status: VirtualServiceStatus, previous: VirtualServiceStatus | undefined, now: string): VirtualServiceStatus {
  const conditions = (status.conditions ?? []).map((c) => {
    const before = previous?.conditions?.find((p) => p.type === c.type);
    return { ...c, lastTransitionTime: before && before.status === c.status ? before.lastTransitionTime : now };
  });
  return { ...status, conditions };
}
