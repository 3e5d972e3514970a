import { CoreV1Api, CustomObjectsApi, KubeConfig, ListWatch, Watch, type Informer, type KubernetesObject, type ObjectCache } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { BehaviorSubject, Subject, type Observable } from 'rxjs';
import { GROUP, PLURAL, VERSION, podKey, type Pod } from '../model/types.js';
import type { PodLookup } from '../xds/node-identity.js';
import { backoffMs, explainKubeError } from './kube-errors.js';
import { makeApiClient } from './kube-client.js';
import { KubeHttp } from './kube-http.js';
import { KubernetesEventRecorder } from './kube-events.js';
import { KubernetesStatusWriter, statusPatchOver } from './kube-status-writer.js';
import { LeaseLeaderElection } from './leader-election.js';
import { KubeReplicaStatus, type ReplicaStatusOptions } from './replica-status.js';
import { parsePod } from '../model/pod.js';
import { ObjectStore } from './object-store.js';
import type { RawObject, Source, SourceState } from './source.js';

export interface KubernetesSourceOptions {
  readonly kubeconfig?: string;
  /** Watch one namespace only; all namespaces by default. */
  readonly namespace?: string;
  readonly log: Logger;
  /** Injectable for tests: delay before retrying a failed list/watch. */
  readonly backoff?: (attempt: number) => number;
  /** Injectable for tests: how long a list/watch attempt may take to connect before it is started over. */
  readonly stallMs?: number;
  /**
   * Each watch asks the API server to end it after 80–100% of this many seconds, as client-go's
   * reflector does, and is started over when it has neither ended nor sent anything for that
   * long and a quarter more: a watch whose connection went silent without closing (a half-open
   * connection, packets dropped) is noticed within 1.25 × this. Default 60 (75 s).
   */
  readonly watchTimeoutS?: number;
  /** Only the holder of this Lease writes status and events; without it, this replica always does. */
  readonly leaderElection?: {
    readonly namespace: string;
    readonly name: string;
    readonly identity: string;
    readonly leaseDurationSeconds?: number;
    readonly retryPeriodMs?: number;
  };
  /** Each replica's proxy counts in a ConfigMap of its own; the leader (or, without election, every replica) adds the others' up. */
  readonly replicaStatus?: Omit<ReplicaStatusOptions, 'log'>;
}

type Watched = 'virtualservices' | 'pods';

/** One informer with restart-on-error and a record of whether its first list completed. */
interface WatchState {
  readonly informer: Informer<KubernetesObject> & ObjectCache<KubernetesObject>;
  /** The informer's watch requests, with whether one is connected now. */
  readonly watch: ConnectionTrackingWatch;
  listed: boolean;
  attempt: number;
  lastErrorKind?: string;
  timer?: NodeJS.Timeout;
  /** Fires when an attempt has not connected its watch in time (see `armWatchdog`). */
  watchdog?: NodeJS.Timeout;
}

/**
 * How long a list/watch attempt may go without connecting before it is started over: longer
 * than the API server lets any list run (its --request-timeout, one minute by default), so a
 * slow list of a large cluster is never cut short.
 */
const STALL_MS = 75_000;

/**
 * The longest wait between two attempts of a failed list/watch (half of it to all of it, see
 * backoffMs). Calls created while the API server was away connect only once the watch is back:
 * with backoffMs's default 30 s cap the attempt after a 10 s outage could come 8-16 s after the
 * API server was back (bench B6's api-outage at b367f35: 13.5 s). Two requests per replica every
 * few seconds cost the API server nothing it would notice.
 */
const RETRY_CAP_MS = 4_000;

/** A list not answered in full by then is aborted and tried again: longer than the API server lets one run. */
const LIST_TIMEOUT_MS = 90_000;

/**
 * VirtualServices and Pods from the Kubernetes API through informers. An informer that fails
 * (API server restarted, RBAC missing, CRD missing) is reported once and restarted with
 * backoff; it resumes from its last resourceVersion, and re-lists on 410 Gone, so a broken
 * watch does not look like everything was deleted. Nothing is served before both lists
 * completed once.
 */
export class KubernetesSource implements Source {
  readonly name = 'kubernetes';
  readonly state$: Observable<SourceState>;
  readonly podLookup: PodLookup;
  readonly statusWriter: KubernetesStatusWriter;
  readonly events: KubernetesEventRecorder;
  readonly election?: LeaseLeaderElection;
  readonly replicas?: KubeReplicaStatus;
  /** Count of informer restarts after errors, for liveness metrics. */
  watchRestarts = 0;

  private readonly kc = new KubeConfig();
  private readonly http: KubeHttp;
  private readonly subject = new BehaviorSubject<SourceState>({ virtualServices: [], pods: [], synced: false, problems: [] });
  private readonly podChanges = new Subject<void>();
  private readonly store = new ObjectStore();
  private readonly podsByUid = new Map<string, Pod>();
  private readonly watches = new Map<Watched, WatchState>();
  private stopped = false;
  private readonly log: Logger;

  constructor(private readonly options: KubernetesSourceOptions) {
    this.log = options.log;
    if (options.kubeconfig) this.kc.loadFromFile(options.kubeconfig);
    else this.kc.loadFromDefault();
    this.state$ = this.subject.asObservable();
    this.http = new KubeHttp(this.kc);
    this.podLookup = {
      byName: (namespace, name) => this.store.pod(`${namespace}/${name}`),
      byUid: (uid) => this.podsByUid.get(uid),
      changes$: this.podChanges.asObservable(),
    };
    this.statusWriter = new KubernetesStatusWriter(statusPatchOver(this.http), this.log.child({ component: 'status-writer' }), options.backoff);
    const le = options.leaderElection;
    if (options.replicaStatus) {
      this.replicas = new KubeReplicaStatus(this.http, { ...options.replicaStatus, log: this.log.child({ component: 'replica-status' }) });
      // Without leader election every replica writes status, so every replica adds up.
      this.replicas.reading = !le;
    }
    this.events = new KubernetesEventRecorder(makeApiClient(this.kc, CoreV1Api), le?.identity ?? 'vsxds', this.log.child({ component: 'events' }));
    if (le) {
      // Followers stay quiet until they hold the lease.
      this.statusWriter.enabled = false;
      this.events.enabled = false;
      this.election = new LeaseLeaderElection(this.http, {
        namespace: le.namespace,
        name: le.name,
        identity: le.identity,
        leaseDurationSeconds: le.leaseDurationSeconds ?? 15,
        retryPeriodMs: le.retryPeriodMs ?? 2_000,
        log: this.log.child({ component: 'leader-election' }),
        onChange: (leader) => {
          this.statusWriter.enabled = leader;
          this.events.enabled = leader;
          if (this.replicas) {
            this.replicas.reading = leader;
            // No replica reads the leader's contribution.
            this.replicas.publishing = !leader;
          }
        },
      });
    }
  }

  get server(): string {
    return this.kc.getCurrentCluster()?.server ?? '(no cluster in kubeconfig)';
  }

  get state(): SourceState {
    return this.subject.value;
  }

  async start(): Promise<void> {
    // Lists may take as long as the API server lets them (its --request-timeout, one minute by default).
    const custom = makeApiClient(this.kc, CustomObjectsApi, LIST_TIMEOUT_MS);
    const core = makeApiClient(this.kc, CoreV1Api, LIST_TIMEOUT_MS);
    const ns = this.options.namespace;
    const vsPath = ns ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}` : `/apis/${GROUP}/${VERSION}/${PLURAL}`;
    const podPath = ns ? `/api/v1/namespaces/${ns}/pods` : '/api/v1/pods';
    this.watch('virtualservices', vsPath, () =>
      ns
        ? custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL })
        : custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL }),
    );
    this.watch('pods', podPath, () => (ns ? core.listNamespacedPod({ namespace: ns }) : core.listPodForAllNamespaces()));
    for (const [what, w] of this.watches) void this.run(w, what);
    this.election?.start();
    this.replicas?.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.election?.stop();
    await this.replicas?.stop();
    this.statusWriter.stop();
    for (const w of this.watches.values()) {
      clearTimeout(w.timer);
      clearTimeout(w.watchdog);
      await w.informer.stop().catch(() => undefined);
    }
    this.http.destroy();
  }

  private watch(what: Watched, path: string, list: () => Promise<any>): void {
    // What makeInformer builds, with a Watch that says when its request is connected.
    const watch = new ConnectionTrackingWatch(this.kc, this.http, this.options.watchTimeoutS ?? WATCH_TIMEOUT_S, this.log);
    const state: WatchState = {
      watch,
      informer: new ListWatch(path, watch, async () => {
        const result = await list();
        state.listed = true;
        this.healthy(state, what);
        // The list answered: the watch gets a window of its own to connect.
        this.armWatchdog(state, what);
        return result;
      }, false),
      listed: false,
      attempt: 0,
    };
    const informer = state.informer;
    const onObject = (obj: KubernetesObject) => {
      this.healthy(state, what);
      dropManagedFields(obj);
      if (what === 'pods') this.upsertPod(obj);
      else this.upsertVirtualService(obj);
    };
    informer.on('add', onObject);
    informer.on('update', onObject);
    informer.on('delete', (obj) => (what === 'pods' ? this.deletePod(obj) : this.deleteVirtualService(obj)));
    informer.on('connect', () => {
      this.log.debug({ what }, `${what}: starting list/watch`);
      this.armWatchdog(state, what);
    });
    informer.on('error', (err) => this.onError(state, what, err));
    this.watches.set(what, state);
  }

  /** A list or an event arrived: the watch works (again). */
  private healthy(state: WatchState, what: Watched): void {
    if (state.lastErrorKind) this.log.info({ what }, `${what}: list/watch working again`);
    state.lastErrorKind = undefined;
    state.attempt = 0;
  }

  /**
   * client-node puts no timeout on the list nor on connecting the watch: an API server that
   * accepts the connection and never answers (seen while one restarts under load) would stop
   * this informer for good. Every attempt (ours, or client-node's own after a watch ended)
   * announces itself with `connect`; one whose watch is not connected in time is started over.
   * A list that hangs is aborted after LIST_TIMEOUT_MS (makeApiClient); a watch request that
   * hangs cannot be: if it ever answers, its attempt carries on beside the new one until the
   * next error stops both.
   */
  private armWatchdog(state: WatchState, what: Watched): void {
    const stallMs = this.options.stallMs ?? STALL_MS;
    clearTimeout(state.watchdog);
    state.watchdog = setTimeout(() => {
      if (this.stopped || state.watch.connected) return;
      this.log.warn({ what }, `${what}: list/watch got no answer in ${stallMs / 1000} s; starting it over`);
      this.watchRestarts += 1;
      void state.informer
        .stop()
        .catch(() => undefined)
        .then(() => this.run(state, what));
    }, stallMs);
    state.watchdog.unref();
  }

  private async run(state: WatchState, what: Watched): Promise<void> {
    if (this.stopped) return;
    try {
      await state.informer.start();
    } catch (err) {
      this.onError(state, what, err);
      return;
    }
    this.maybeSynced();
  }

  private onError(state: WatchState, what: Watched, err: unknown): void {
    if (this.stopped) return;
    const explained = explainKubeError(err, what, this.server);
    // Say it once: the same failure on every retry would drown the log.
    if (explained.kind !== state.lastErrorKind) this.log.error({ what }, explained.message);
    else this.log.debug({ what }, explained.message);
    state.lastErrorKind = explained.kind;
    // The attempt ended: its retry is scheduled here, not by the watchdog.
    clearTimeout(state.watchdog);
    const delay = (this.options.backoff ?? ((a: number) => backoffMs(a, 500, RETRY_CAP_MS)))(state.attempt++);
    this.watchRestarts += 1;
    clearTimeout(state.timer);
    state.timer = setTimeout(() => void this.run(state, what), delay);
  }

  private maybeSynced(): void {
    if (this.subject.value.synced) return;
    if ([...this.watches.values()].every((w) => w.listed)) {
      this.log.info({ virtualServices: this.store.virtualServiceCount, pods: this.store.podCount }, 'initial list complete');
      this.emit();
    }
  }

  private upsertVirtualService(obj: KubernetesObject): void {
    const key = `${obj.metadata?.namespace}/${obj.metadata?.name}`;
    const old = this.store.virtualService(key);
    const raw = obj as unknown as RawObject;
    // A status-only update (our own status writes) does not change what is served.
    if (old && old.metadata['generation'] === raw.metadata['generation'] && JSON.stringify(old['spec']) === JSON.stringify(raw['spec']) && JSON.stringify(old.metadata['labels']) === JSON.stringify(raw.metadata['labels'])) {
      return;
    }
    this.store.setVirtualService(key, raw);
    this.emitIfSynced();
  }

  private deleteVirtualService(obj: KubernetesObject): void {
    const key = `${obj.metadata?.namespace}/${obj.metadata?.name}`;
    if (this.store.setVirtualService(key, undefined)) {
      this.statusWriter.forget(key);
      this.emitIfSynced();
    }
  }

  private upsertPod(obj: KubernetesObject): void {
    const parsed = parsePod(obj);
    if (!parsed.ok) {
      this.log.warn({ err: parsed.message }, 'ignoring a pod vsxds cannot read');
      return;
    }
    const pod = parsed.pod;
    const key = podKey(pod);
    const old = this.store.pod(key);
    if (old && JSON.stringify(old) === JSON.stringify(pod)) return;
    if (old?.uid) this.podsByUid.delete(old.uid);
    this.store.setPod(key, pod);
    if (pod.uid) this.podsByUid.set(pod.uid, pod);
    this.podChanges.next();
    this.emitIfSynced();
  }

  private deletePod(obj: KubernetesObject): void {
    const key = `${obj.metadata?.namespace}/${obj.metadata?.name}`;
    const old = this.store.pod(key);
    if (!old) return;
    this.store.setPod(key, undefined);
    if (old.uid) this.podsByUid.delete(old.uid);
    this.podChanges.next();
    this.emitIfSynced();
  }

  private emitIfSynced(): void {
    if (this.subject.value.synced) this.emit();
  }

  private emit(): void {
    this.subject.next(this.store.state(true));
  }
}

/**
 * vsxds never reads managedFields, and they are the largest part of a small object: a fifth of the
 * heap of 10,000 VirtualServices (bench B6), kept by the informer's cache and the store alike.
 * Dropped as each object arrives: the informer caches this same object.
 */
function dropManagedFields(obj: KubernetesObject): void {
  if (obj.metadata?.managedFields) obj.metadata.managedFields = undefined;
}

/**
 * The informer's watch, telling whether its request is connected: `watch` resolves once the API
 * server answered the request, and `done` is called when that watch ends. It is client-node's
 * Watch in shape (ListWatch calls only `watch`), with the request made by KubeHttp instead of
 * node-fetch and readline: every call's three watch events pass through here.
 */
class ConnectionTrackingWatch extends Watch {
  connected = false;
  private calls = 0;

  constructor(
    kc: KubeConfig,
    private readonly http: KubeHttp,
    private readonly timeoutS: number,
    private readonly log: Logger,
  ) {
    super(kc);
  }

  override async watch(path: string, queryParams: Record<string, string | number | boolean | undefined>, callback: (phase: string, apiObj: any, watchObj?: any) => void, done: (err: any) => void): Promise<AbortController> {
    const call = ++this.calls;
    let ended = false;
    this.connected = false;
    // The API server ends the watch after timeoutSeconds; bookmarks keep its resourceVersion fresh
    // on a quiet cluster, so the next watch resumes instead of listing again.
    const timeoutSeconds = Math.max(1, Math.round(this.timeoutS * (0.8 + 0.2 * Math.random())));
    const silentMs = (timeoutSeconds + this.timeoutS / 4) * 1000;
    let handle: { abort(): void } | undefined;
    let silence: NodeJS.Timeout | undefined;
    /** The watch ended; `done` is told unless the informer ended it itself (`abort`). */
    const end = (err: unknown, tell = true): void => {
      if (ended) return;
      ended = true;
      clearTimeout(silence);
      if (call === this.calls) this.connected = false;
      handle?.abort();
      if (tell) done(err);
    };
    const heard = (): void => {
      clearTimeout(silence);
      silence = setTimeout(() => {
        // Neither an event, a bookmark nor the server's end of the watch: the connection is gone.
        end(new Error(`the watch of ${path} sent nothing and did not end for ${silentMs / 1000} s (asked to end after ${timeoutSeconds} s): its connection is gone; starting it over`));
      }, silentMs);
      silence.unref();
    };
    const failed = (err: unknown): void => {
      // One object vsxds fails on must not end the watch of all the others.
      this.log.error({ path, err: (err as Error).message, stack: (err as Error).stack }, 'handling a watch event failed');
    };
    heard();
    const query = new URLSearchParams({ watch: 'true' });
    for (const [k, v] of Object.entries({ ...queryParams, timeoutSeconds, allowWatchBookmarks: true })) if (v !== undefined) query.set(k, String(v));
    const watch = this.http.watch(
      `${path}?${query.toString()}`,
      (line) => {
        heard();
        let event: { type: string; object: unknown };
        try {
          event = JSON.parse(line) as { type: string; object: unknown };
        } catch (err) {
          this.log.warn({ path, err: (err as Error).message }, 'ignoring a watch event that is not JSON');
          return;
        }
        try {
          // ListWatch's handler is async: what it throws comes back as a rejection.
          const handled = callback(event.type, event.object, event) as unknown;
          if (handled instanceof Promise) handled.catch(failed);
        } catch (err) {
          failed(err);
        }
      },
      end,
    );
    handle = watch;
    if (ended) watch.abort();
    await watch.answered;
    // Only the latest request counts, and only while it has not ended already.
    if (call === this.calls && !ended) this.connected = true;
    return { abort: () => end(null, false) } as unknown as AbortController;
  }
}

const WATCH_TIMEOUT_S = 60;
