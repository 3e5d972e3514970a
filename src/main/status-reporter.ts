import type { Logger } from 'pino';
import { auditTime, combineLatest, of, startWith, type Subscription } from 'rxjs';
import { vsKey, type Condition, type VirtualService, type VirtualServiceStatus } from '../model/types.js';
import { appliesTo } from '../translate/index.js';
import type { NodeGroup } from '../xds/node-identity.js';
import type { EventSink, StatusWriter } from '../sources/source.js';
import type { ProxyInfo, ProxyStatusRegistry } from '../xds/status-registry.js';
import { CLUSTER_TYPE, LISTENER_TYPE } from '../xds/type-urls.js';
import type { GroupTranslation } from '../translate/index.js';
import type { ConfigPipeline, Evaluated, PipelineView } from './config-pipeline.js';
import type { ReplicaExchange } from '../sources/source.js';
import type { Snapshot } from '../xds/snapshot.js';
import { LocalTallies, PeerTallies, type ProxyTally } from './replica-counts.js';

/**
 * Turns what the pipeline decided and what proxies ACKed/NACKed into each VirtualService's
 * status: Accepted, Conflicted, Synced, and proxy counts. Recomputed on a short window so a
 * fleet ACKing one push leads to one status write, not one per proxy. With other replicas
 * (`replicas`), the counts of this replica's own proxies are published for the others, and the
 * ones they published are added to this replica's.
 */
export class StatusReporter {
  private readonly statuses = new Map<string, VirtualServiceStatus>();
  /** What each status was last computed from: the local part, and what the other replicas added (as a string). */
  private readonly inputs = new Map<string, Inputs>();
  private readonly localTallies: LocalTallies;
  private readonly peers?: PeerTallies;
  private groupViewsByKey = new Map<string, GroupView>();
  /** Namespaces with groups at the last report. */
  private namespaces: ReadonlySet<string> = new Set();
  /** Namespaces that had groups at the report before this one and have none now. */
  private emptied: ReadonlySet<string> = new Set();
  private reports = 0;
  /** Positions in its namespace's group list of the groups a VirtualService selects. */
  private readonly selected = new WeakMap<VirtualService, { readonly signature: string; readonly indexes: readonly number[] }>();
  private subscription?: Subscription;

  constructor(
    private readonly pipeline: ConfigPipeline,
    private readonly registry: ProxyStatusRegistry,
    private readonly writer: StatusWriter | undefined,
    private readonly log: Logger,
    private readonly windowMs = 250,
    private readonly now: () => Date = () => new Date(),
    private readonly events?: EventSink,
    private readonly replicas?: ReplicaExchange,
  ) {
    this.localTallies = new LocalTallies(log);
    if (replicas) this.peers = new PeerTallies(replicas, log);
  }

  start(): void {
    this.subscription = combineLatest([this.pipeline.view$, this.registry.events$.pipe(startWith(null)), this.replicas?.peers$.pipe(startWith(null)) ?? of(null)])
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
    const groupsByNamespace = this.groupViews(view);
    this.peers?.refresh();
    const stamp = ++this.reports;
    const known = this.inputs.size;
    let visited = 0;
    for (const e of view.evaluated.values()) {
      const last = this.inputs.get(e.key);
      if (last) {
        last.reported = stamp;
        visited += 1;
      }
      const remoteTally = e.accepted && e.vs ? this.peers?.tally(e.key, e.vs, e.generation) : undefined;
      const remoteSame = sameTally(remoteTally, last?.remote);
      const remote = remoteSame ? last?.remote : remoteTally;
      let local = last?.local;
      // Under one VirtualService per call every report follows a change of the groups, yet nearly
      // every status is as it was: that is settled here without looking at its groups one by one.
      if (!local || !last || last.evaluated !== e || !last.allHave || !this.unchanged(e, groupsByNamespace, view)) {
        // A status depends on the VirtualService, on the groups it selects and on what the other
        // replicas' proxies say of it: when none of those changed since the last report, neither did the status.
        const groups = this.groupsOf(e, groupsByNamespace);
        if (!local || last?.evaluated !== e || !sameItems(last.groups, groups)) {
          // A group changes whenever any of its VirtualServices or proxies does: under one
          // VirtualService per call, every report. What this one's status reads of it may not have.
          const signature = last?.evaluated === e ? statusInputs(e.key, groups, view) : undefined;
          if (!local || signature === undefined || signature !== last?.signature) {
            local = this.localStatusOf(e, view, groups);
            this.localTallies.set(e.key, e.generation, local.tally);
          }
          this.inputs.set(e.key, { evaluated: e, groups, signature, local, remote, allHave: allHave(local), reported: stamp });
        } else if (!remoteSame) {
          this.inputs.set(e.key, { ...last, remote });
        }
      } else if (!remoteSame) {
        this.inputs.set(e.key, { ...last, remote });
      }
      if (local === last?.local && remoteSame) continue;
      const status = completeStatus(e, local, remoteTally);
      const previous = this.statuses.get(e.key);
      const merged = withTransitionTimes(status, previous, this.now().toISOString());
      if (previous && JSON.stringify(previous) === JSON.stringify(merged)) continue;
      this.recordEvents(e, previous, merged);
      this.statuses.set(e.key, merged);
      this.writer?.write(e.key, e.generation, merged);
    }
    // Built at most once per write interval of the exchange, and written only when it changed.
    this.replicas?.publish(() => this.localTallies.encode(this.registry.list()));
    if (visited === known) return;
    // Some VirtualServices are gone. (A status is only ever kept with its inputs.)
    for (const [key, inputs] of this.inputs) {
      if (inputs.reported === stamp) continue;
      this.inputs.delete(key);
      this.localTallies.delete(key);
      if (this.statuses.delete(key)) this.writer?.forget(key);
    }
  }

  /**
   * Whether nothing a VirtualService's status reads of its groups changed since the last report,
   * for one whose Evaluated did not change and all of whose proxies had its configuration then:
   * it selects the same groups; none of them gained or lost a proxy, a rejection or a build
   * error; its contribution to each is the same object; and every proxy still has its
   * configuration, read now as a fresh report would (in step, or running its listeners' and
   * clusters' current versions), not assumed from then: a proxy can lose what it ran on the same
   * stream (it moves to another group and back, or subscribes to listeners only after its
   * clusters, as Envoy does).
   */
  private unchanged(e: Evaluated, byNamespace: ReadonlyMap<string, GroupsOfNamespace>, view: PipelineView): boolean {
    const vs = e.vs;
    if (!e.accepted || !vs) return true;
    const namespace = vs.metadata.namespace;
    const ns = byNamespace.get(namespace);
    if (!ns) return !this.emptied.has(namespace);
    const selected = this.selected.get(vs);
    if (!selected || selected.signature !== ns.signature) return false;
    const key = e.key;
    for (const i of selected.indexes) {
      const g = ns.groups[i] as GroupView;
      const facts = ns.facts[i] as GroupFacts;
      if (facts.whole) return false;
      if (g.translation !== facts.before && g.translation?.contributions.get(key) !== facts.before?.contributions.get(key)) return false;
      for (const p of g.proxies) if (!hasConfigurationOf(p, key, view)) return false;
    }
    return true;
  }

  /**
   * Every node group that has proxies or a translation, by namespace, each the same object as
   * in the previous report unless its translation, build error or proxies' sync state changed.
   */
  private groupViews(view: PipelineView): Map<string, GroupsOfNamespace> {
    const proxiesByGroup = new Map<string, { group: NodeGroup; proxies: ProxyInfo[] }>();
    for (const t of view.translations.values()) proxiesByGroup.set(t.group.key, { group: t.group, proxies: [] });
    for (const p of this.registry.list()) {
      if (!p.group) continue;
      let entry = proxiesByGroup.get(p.group.key);
      if (!entry) proxiesByGroup.set(p.group.key, (entry = { group: p.group, proxies: [] }));
      entry.proxies.push(p);
    }
    const byNamespace = new Map<string, GroupsOfNamespace>();
    const views = new Map<string, GroupView>();
    for (const [key, { group, proxies }] of proxiesByGroup) {
      const translation = view.translations.get(key)?.translation;
      const buildError = view.buildErrors.get(key)?.message;
      const proxyStates = proxies
        .map((p) => `${p.streamId}${p.synced ? '+' : '-'}${[...p.types.values()].map((t) => `${t.acked ?? ''}\u0002${t.nack?.message ?? ''}`).join('\u0000')}`)
        .join('\u0001');
      const structure = `${buildError ?? ''}\u0001${proxies.map((p) => `${p.streamId}${[...p.types.values()].some((t) => t.nack) ? '!' : ''}`).join(',')}`;
      const before = this.groupViewsByKey.get(key);
      const current =
        before && before.translation === translation && before.buildError === buildError && before.proxyStates === proxyStates
          ? before
          : { group, proxies, translation, buildError, proxyStates, structure };
      views.set(key, current);
      const facts: GroupFacts = { before: before?.translation, whole: !before || before.structure !== structure };
      let ns = byNamespace.get(group.namespace);
      if (!ns) byNamespace.set(group.namespace, (ns = { signature: '', groups: [], facts: [] }));
      ns.groups.push(current);
      ns.facts.push(facts);
    }
    for (const ns of byNamespace.values()) ns.signature = ns.groups.map((g) => g.group.key).join('\n');
    this.emptied = new Set([...this.namespaces].filter((namespace) => !byNamespace.has(namespace)));
    this.namespaces = new Set(byNamespace.keys());
    this.groupViewsByKey = views;
    return byNamespace;
  }

  /** The groups of its namespace a VirtualService selects (remembered while neither changes). */
  private groupsOf(e: Evaluated, byNamespace: ReadonlyMap<string, GroupsOfNamespace>): readonly GroupView[] {
    const vs = e.vs;
    if (!e.accepted || !vs) return [];
    const ns = byNamespace.get(vs.metadata.namespace);
    if (!ns) return [];
    let keys = this.selected.get(vs);
    if (!keys || keys.signature !== ns.signature) {
      keys = { signature: ns.signature, indexes: ns.groups.flatMap((g, i) => (appliesTo(vs, g.group) ? [i] : [])) };
      this.selected.set(vs, keys);
    }
    return keys.indexes.map((i) => ns.groups[i] as GroupView);
  }

  /** Events on what an operator acts on: a VirtualService rejected, accepted again after that, and each new rejection by a proxy. */
  private recordEvents(e: Evaluated, before: VirtualServiceStatus | undefined, after: VirtualServiceStatus): void {
    if (!this.events) return;
    const uid = typeof e.raw.metadata['uid'] === 'string' ? (e.raw.metadata['uid'] as string) : undefined;
    const accepted = (s: VirtualServiceStatus | undefined) => s?.conditions?.find((c) => c.type === 'Accepted');
    const was = accepted(before);
    const now = accepted(after);
    if (now && (was?.status !== now.status || was?.message !== now.message)) {
      // Being accepted is the normal case and the status says so: an event per call created would
      // be one write per call for nothing to act on. A recovery is worth one.
      if (now.status !== 'True') this.events.record(e.key, uid, 'Warning', now.reason, now.message);
      else if (was && was.status !== 'True') this.events.record(e.key, uid, 'Normal', 'Accepted', 'VirtualService is valid again and served to the proxies it selects');
    }
    if (after.nackMessage && after.nackMessage !== before?.nackMessage) {
      this.events.record(e.key, uid, 'Warning', 'ProxyRejected', `${after.proxies?.nacked ?? 1} proxy(s) rejected the configuration: ${after.nackMessage}`);
    }
  }

  /** The status as far as this replica's own proxies tell: all but the Synced condition, and their tally. */
  private localStatusOf(e: Evaluated, view: PipelineView, groups: readonly GroupView[]): LocalStatus {
    const conditions: Condition[] = [
      { type: 'Accepted', status: e.accepted ? 'True' : 'False', reason: e.reason, message: e.message, observedGeneration: e.generation },
    ];
    const listeners = e.vs?.spec.listeners.length ?? 0;
    if (!e.accepted || !e.vs) return { conditions, listeners };
    const vs = e.vs;
    const conflicts = groups.flatMap((g) => g.translation?.contributions.get(e.key)?.conflicts ?? []);
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
    const matched = groups.flatMap((g) => g.proxies);
    const blames = (message: string, p: ProxyInfo) => nackBlames(message, vs, view, p);
    const nackedProxies = matched.filter((p) => [...p.types.values()].some((t) => t.nack && blames(t.nack.message, p)));
    // Busy with other calls' changes, a proxy still has this one's (hasConfigurationOf), and the
    // status does not flip back to Pending.
    const synced = matched.filter((p) => ![...p.types.values()].some((t) => t.nack) && hasConfigurationOf(p, e.key, view));
    const nackMessage = nackedProxies.flatMap((p) => [...p.types.values()].flatMap((t) => (t.nack && blames(t.nack.message, p) ? [t.nack.message] : [])))[0];
    const buildError = groups.find((g) => g.buildError !== undefined)?.buildError;
    const envoyClusters: Record<string, string> = {};
    const sessionLimits: Record<string, number> = {};
    for (const g of groups) {
      const contribution = g.translation?.contributions.get(e.key);
      for (const [name, envoyName] of contribution?.clusters ?? []) envoyClusters[name] = envoyName;
      for (const [name, limit] of contribution?.sessionLimits ?? []) sessionLimits[name] = limit;
    }
    return {
      conditions,
      listeners,
      tally: { matched: matched.length, synced: synced.length, nacked: nackedProxies.length, ...(nackMessage ? { nackMessage } : {}) },
      ...(buildError !== undefined ? { buildError } : {}),
      ...(Object.keys(envoyClusters).length > 0 ? { envoyClusters } : {}),
      ...(Object.keys(sessionLimits).length > 0 ? { sessionLimits } : {}),
    };
  }
}

/** A VirtualService's status from this replica's own part of it and what the other replicas' proxies add. */
function completeStatus(e: Evaluated, local: LocalStatus, remote: ProxyTally | undefined): VirtualServiceStatus {
  const { conditions, listeners, tally, buildError, envoyClusters, sessionLimits } = local;
  if (!e.accepted || !e.vs || !tally) {
    return {
      observedGeneration: e.generation,
      conditions: [...conditions, { type: 'Synced', status: 'Unknown', reason: 'NotAccepted', message: 'not served until it is valid', observedGeneration: e.generation }],
      listeners,
      proxies: { matched: 0, synced: 0, nacked: 0, summary: '0/0' },
    };
  }
  const vs = e.vs;
  const matched = tally.matched + (remote?.matched ?? 0);
  const synced = tally.synced + (remote?.synced ?? 0);
  const nacked = tally.nacked + (remote?.nacked ?? 0);
  const nackMessage = tally.nackMessage ?? remote?.nackMessage;
  let syncedCondition: Condition;
  if (buildError) {
    syncedCondition = { type: 'Synced', status: 'False', reason: 'BuildFailed', message: buildError, observedGeneration: e.generation };
  } else if (matched === 0) {
    syncedCondition = {
      type: 'Synced',
      status: 'Unknown',
      reason: 'NoProxies',
      message: `no connected proxy in namespace ${vs.metadata.namespace} has all the labels ${JSON.stringify(vs.spec.selector)}`,
      observedGeneration: e.generation,
    };
  } else if (nacked > 0) {
    syncedCondition = { type: 'Synced', status: 'False', reason: 'Rejected', message: `${nacked} of ${matched} proxies rejected the configuration: ${nackMessage}`, observedGeneration: e.generation };
  } else if (synced < matched) {
    syncedCondition = {
      type: 'Synced',
      status: 'False',
      reason: 'Pending',
      message: `${synced} of ${matched} proxies have the current configuration (a proxy that rejected another VirtualService's part counts as not synced)`,
      observedGeneration: e.generation,
    };
  } else {
    syncedCondition = { type: 'Synced', status: 'True', reason: 'Synced', message: `all ${matched} matched proxies accepted the current configuration`, observedGeneration: e.generation };
  }
  return {
    observedGeneration: e.generation,
    conditions: [...conditions, syncedCondition],
    listeners,
    proxies: { matched, synced, nacked, summary: `${synced}/${matched}` },
    ...(nackMessage ? { nackMessage } : {}),
    ...(envoyClusters ? { envoyClusters } : {}),
    ...(sessionLimits ? { sessionLimits } : {}),
  };
}

/** What a status takes from this replica alone; `tally` is absent for a VirtualService that is not served. */
interface LocalStatus {
  readonly conditions: readonly Condition[];
  readonly listeners: number;
  readonly tally?: ProxyTally;
  readonly buildError?: string;
  readonly envoyClusters?: Record<string, string>;
  readonly sessionLimits?: Record<string, number>;
}

let lastContributionId = 0;
const contributionIds = new WeakMap<object, number>();

/**
 * What a VirtualService's status takes from its groups, as a string: its contribution to each
 * (listeners, clusters, conflicts: the same object while unchanged), the group's build error, and
 * each proxy's stream and whether it has this VirtualService's configuration. Undefined while a
 * proxy has a NACK: whom it blames depends on the other VirtualServices too.
 */
function statusInputs(key: string, groups: readonly GroupView[], view: PipelineView): string | undefined {
  let signature = '';
  for (const g of groups) {
    const c = g.translation?.contributions.get(key);
    let id = 0;
    if (c) {
      id = contributionIds.get(c) ?? ++lastContributionId;
      contributionIds.set(c, id);
    }
    signature += `${g.group.key}\u0001${id}\u0001${g.buildError ?? ''}\u0001`;
    for (const p of g.proxies) {
      for (const t of p.types.values()) if (t.nack) return undefined;
      signature += `${p.streamId}${hasConfigurationOf(p, key, view) ? '+' : '-'},`;
    }
  }
  return signature;
}

/**
 * Whether the proxy has a VirtualService's configuration: it is in step with its whole group, or
 * runs the VirtualService's own listeners and clusters at their current versions.
 */
function hasConfigurationOf(proxy: ProxyInfo, key: string, view: PipelineView): boolean {
  return proxy.synced || runsAllOf(proxy, key, view);
}

/** Whether the proxy runs the listeners and clusters a VirtualService gives its group, at their current versions. */
function runsAllOf(proxy: ProxyInfo, key: string, view: PipelineView): boolean {
  const built = proxy.group ? view.translations.get(proxy.group.key) : undefined;
  const contribution = built?.translation.contributions.get(key);
  const snapshot = built?.snapshot;
  if (!contribution || !snapshot || !proxy.runs) return false;
  for (const name of contribution.listeners) if (!runsCurrent(proxy, snapshot, LISTENER_TYPE, name)) return false;
  for (const name of contribution.clusters.values()) if (!runsCurrent(proxy, snapshot, CLUSTER_TYPE, name)) return false;
  return true;
}

/** Whether the proxy runs the snapshot's version of a resource. */
function runsCurrent(proxy: ProxyInfo, snapshot: Snapshot, typeUrl: string, name: string): boolean {
  const version = snapshot.resources(typeUrl).get(name)?.version;
  return version !== undefined && proxy.runs?.(typeUrl, name) === version;
}

/** One node group as a report sees it. */
interface GroupView {
  readonly group: NodeGroup;
  readonly proxies: readonly ProxyInfo[];
  readonly translation?: GroupTranslation;
  readonly buildError?: string;
  /** Each proxy's stream, sync state, ACKed versions and NACK messages: what the statuses take from them. */
  readonly proxyStates: string;
  /** The build error and each proxy's stream and whether it has a rejection: what every status of the group reads. */
  readonly structure: string;
}

/** What changed in a group since the last report. */
interface GroupFacts {
  /** The group's translation at the last report. */
  readonly before?: GroupTranslation;
  /** Every status of the group is to be looked at again: the group is new, a proxy came, went or rejected, or a build failed or recovered. */
  readonly whole: boolean;
}

interface GroupsOfNamespace {
  /** The keys of its groups, in order: the selection of a VirtualService stays valid while this is unchanged. */
  signature: string;
  readonly groups: GroupView[];
  /** What changed in each of `groups`, by position. */
  readonly facts: GroupFacts[];
}

/** What a VirtualService's status was last computed from. */
interface Inputs {
  readonly evaluated: Evaluated;
  readonly groups: readonly GroupView[];
  readonly signature?: string;
  readonly local: LocalStatus;
  /** What the other replicas' proxies add. */
  readonly remote?: ProxyTally;
  /** Every proxy it matched had its configuration and none rejected it. */
  readonly allHave: boolean;
  /** The last report that saw it. */
  reported: number;
}

function sameTally(a: ProxyTally | undefined, b: ProxyTally | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.matched === b.matched && a.synced === b.synced && a.nacked === b.nacked && a.nackMessage === b.nackMessage);
}

function allHave(local: LocalStatus): boolean {
  return !local.tally || (local.tally.synced === local.tally.matched && local.tally.nacked === 0);
}

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Whether a proxy's NACK is this VirtualService's doing. Envoy's messages name the listener or
 * cluster they reject; a message naming only other VirtualServices' resources is theirs, and
 * one naming no known resource is blamed on every VirtualService of the proxy.
 */
function nackBlames(message: string, vs: VirtualService, view: PipelineView, proxy: ProxyInfo): boolean {
  const group = proxy.group;
  const contributions = group ? view.translations.get(group.key)?.translation.contributions : undefined;
  // Envoy names the Envoy cluster, which may be a shared one: each user of it is blamed.
  const mentions = (v: VirtualService) =>
    [...resourceNames(v), ...(contributions?.get(vsKey(v))?.clusters.values() ?? [])].some((n) =>
      new RegExp(`(^|[^a-z0-9-])${escapeRegExp(n)}($|[^a-z0-9-])`).test(message),
    );
  if (mentions(vs)) return true;
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
