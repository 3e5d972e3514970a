import type { Logger } from 'pino';
import { withTimeout } from './kube-client.js';
import { json, type KubeHttp } from './kube-http.js';

/** A coordination.k8s.io/v1 Lease as the API server sends it: the fields used here (times are RFC 3339 strings), the others kept as they came. */
interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  renewTime?: string;
  acquireTime?: string;
  leaseTransitions?: number;
  readonly [other: string]: unknown;
}
interface Lease {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata?: { readonly name?: string; readonly namespace?: string; readonly resourceVersion?: string; readonly [other: string]: unknown };
  spec?: LeaseSpec;
}

export interface LeaderElectionOptions {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  /** How long a lease holds without renewal before another replica may take it. */
  readonly leaseDurationSeconds: number;
  /** How often the holder renews, and a follower checks. */
  readonly retryPeriodMs: number;
  /**
   * A leader that has not renewed for this long steps down, even while its request hangs, so it
   * stops writing before its lease expires for the others. Default: two thirds of the lease.
   */
  readonly renewDeadlineMs?: number;
  readonly log: Logger;
  readonly onChange: (leader: boolean) => void;
  /** Injectable clock for tests. */
  readonly now?: () => number;
}

/**
 * Leader election on a coordination.k8s.io Lease, with optimistic concurrency (resourceVersion)
 * so two replicas cannot both win. Only the leader writes status and events; every replica
 * serves xDS.
 *
 * As client-go does, only the local clock measures time: the holder's `renewTime` is not compared
 * with it (another node's clock may be off by any amount). A lease is expired when this replica
 * has seen its record unchanged for the lease duration; a leader steps down when it has not
 * renewed within the renew deadline, before the others may take over.
 */
export class LeaseLeaderElection {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private leaderNow = false;
  private lastError?: string;
  /** The lease record as last read (holder, renew time, resource version), and when, by the local clock. */
  private observed?: { readonly record: string; readonly at: number };
  /** The lease as this replica last wrote it while holding it: the next renewal writes it again without reading. */
  private held?: Lease;
  /** Local time the last successful renewal was started. */
  private renewedAt = 0;
  private deadline?: NodeJS.Timeout;

  constructor(
    private readonly http: KubeHttp,
    private readonly options: LeaderElectionOptions,
  ) {}

  get isLeader(): boolean {
    return this.leaderNow;
  }

  start(): void {
    void this.tick();
  }

  /** Stops campaigning; a leader gives the lease up so another replica takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.deadline);
    if (!this.leaderNow) return;
    this.setLeader(false);
    try {
      const lease = await this.read();
      if (lease?.spec?.holderIdentity === this.options.identity) {
        lease.spec.holderIdentity = undefined;
        lease.spec.leaseDurationSeconds = 1;
        await this.send('PUT', this.path(), lease);
      }
    } catch {
      // Best effort: the lease expires on its own.
    }
  }

  /**
   * The retry period, at most half the renew deadline: a renewal is due that long after the last
   * one ended, so a period as long as the deadline (2 s against a 3 s lease's 2 s) let the deadline
   * pass before every renewal and the leader stepped down and back each period.
   */
  private get retryPeriodMs(): number {
    return Math.min(this.options.retryPeriodMs, this.renewDeadlineMs / 2);
  }

  private get renewDeadlineMs(): number {
    return this.options.renewDeadlineMs ?? Math.floor((this.options.leaseDurationSeconds * 1000 * 2) / 3);
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  /** The Leases of the namespace, or this one. */
  private path(collection = false): string {
    const base = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.options.namespace)}/leases`;
    return collection ? base : `${base}/${encodeURIComponent(this.options.name)}`;
  }

  /** The Lease, undefined when there is none. Past the renew deadline an answer no longer counts (see tick): requests are aborted then, so one on a dead connection does not hold a connection of the pool. */
  private async read(): Promise<Lease | undefined> {
    try {
      return JSON.parse(await this.http.request('GET', this.path(), undefined, 'application/json', this.renewDeadlineMs)) as Lease;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
  }

  /** Writes the lease; the answer is the lease as stored (its new resourceVersion). */
  private async send(method: 'POST' | 'PUT', path: string, lease: Lease): Promise<Lease> {
    return JSON.parse(await this.http.request(method, path, json(lease), 'application/json', this.renewDeadlineMs)) as Lease;
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const started = this.now();
    try {
      // A request that hangs must not hold the loop: past the deadline its answer no longer counts.
      const leader = await withTimeout(this.tryAcquireOrRenew(started), this.renewDeadlineMs);
      if (leader) this.renewed(started);
      else this.setLeader(false);
      if (this.lastError) this.options.log.info('leader election: API reachable again');
      this.lastError = undefined;
    } catch (err) {
      const message = (err as Error).message;
      if (message !== this.lastError) this.options.log.warn({ err: message }, 'leader election: cannot read or write the lease');
      this.lastError = message;
      // Without a renewed lease we cannot be sure we still lead: step down rather than risk two writers.
      this.setLeader(false);
    }
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), this.retryPeriodMs);
  }

  /** Renewed (or acquired) by a request started at `started`: leader until the renew deadline from then. */
  private renewed(started: number): void {
    this.renewedAt = started;
    clearTimeout(this.deadline);
    const left = started + this.renewDeadlineMs - this.now();
    if (left <= 0) {
      this.setLeader(false);
      return;
    }
    this.setLeader(true);
    this.deadline = setTimeout(() => {
      if (this.renewedAt !== started || !this.leaderNow) return;
      this.options.log.warn({ renewDeadlineMs: this.renewDeadlineMs }, 'leader election: the lease was not renewed within the renew deadline; stepping down');
      this.setLeader(false);
    }, left);
    this.deadline.unref();
  }

  private async tryAcquireOrRenew(now: number): Promise<boolean> {
    const { name, namespace, identity, leaseDurationSeconds } = this.options;
    const spec = { holderIdentity: identity, leaseDurationSeconds, renewTime: microTime(now) };
    const held = this.held;
    this.held = undefined;
    if (held && this.leaderNow) {
      // The leader renews the lease as it last wrote it, without reading it first (as client-go
      // does): one request per retry period. Anyone's write since makes it a conflict (a deletion,
      // not found), and the lease is read as a follower would.
      try {
        this.held = await this.send('PUT', this.path(), { ...held, spec: { ...held.spec, ...spec } });
        return true;
      } catch (err) {
        // 404: the lease was deleted; the read path creates it again.
        const code = (err as { code?: number }).code;
        if (code !== 409 && code !== 404) throw err;
      }
    }
    const lease = await this.read();
    if (!lease) {
      const body = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace }, spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 } };
      this.held = await this.send('POST', this.path(true), body);
      return true;
    }
    const holder = lease.spec?.holderIdentity;
    const duration = (lease.spec?.leaseDurationSeconds ?? leaseDurationSeconds) * 1000;
    const record = JSON.stringify([holder, lease.spec?.renewTime, lease.metadata?.resourceVersion]);
    if (this.observed?.record !== record) this.observed = { record, at: now };
    const expired = !holder || this.observed.at + duration < now;
    if (holder !== identity && !expired) return false;
    const taking = holder !== identity;
    lease.spec = {
      ...lease.spec,
      ...spec,
      ...(taking ? { acquireTime: microTime(now), leaseTransitions: (lease.spec?.leaseTransitions ?? 0) + 1 } : {}),
    };
    try {
      // resourceVersion in metadata makes this fail if another replica wrote in between.
      this.held = await this.send('PUT', this.path(), lease);
      return true;
    } catch (err) {
      if ((err as { code?: number }).code === 409) return false;
      throw err;
    }
  }

  private setLeader(leader: boolean): void {
    if (leader === this.leaderNow) return;
    this.leaderNow = leader;
    this.options.log.info({ identity: this.options.identity, lease: `${this.options.namespace}/${this.options.name}` }, leader ? 'became leader: writing status' : 'not the leader: status writes paused');
    this.options.onChange(leader);
  }
}

/** A Lease's MicroTime: RFC 3339 with microseconds, as the API server writes it. */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, '000Z');
}
