import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { makeApiClient } from './kube-client.js';

export interface LeaderElectionOptions {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  /** How long a lease holds without renewal before another replica may take it. */
  readonly leaseDurationSeconds: number;
  /** How often the holder renews, and a follower checks. */
  readonly retryPeriodMs: number;
  readonly log: Logger;
  readonly onChange: (leader: boolean) => void;
  /** Injectable clock for tests. */
  readonly now?: () => number;
}

/**
 * Leader election on a coordination.k8s.io Lease, with optimistic concurrency (resourceVersion)
 * so two replicas cannot both win. Only the leader writes status and events; every replica
 * serves xDS.
 */
export class LeaseLeaderElection {
  private readonly api: CoordinationV1Api;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private leaderNow = false;
  private lastError?: string;

  constructor(
    kc: KubeConfig,
    private readonly options: LeaderElectionOptions,
  ) {
    this.api = makeApiClient(kc, CoordinationV1Api);
  }

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
    if (!this.leaderNow) return;
    this.setLeader(false);
    try {
      const lease = await this.api.readNamespacedLease({ name: this.options.name, namespace: this.options.namespace });
      if (lease.spec?.holderIdentity === this.options.identity) {
        lease.spec.holderIdentity = undefined;
        lease.spec.leaseDurationSeconds = 1;
        await this.api.replaceNamespacedLease({ name: this.options.name, namespace: this.options.namespace, body: lease });
      }
    } catch {
      // Best effort: the lease expires on its own.
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    try {
      this.setLeader(await this.tryAcquireOrRenew());
      if (this.lastError) this.options.log.info('leader election: API reachable again');
      this.lastError = undefined;
    } catch (err) {
      const message = (err as Error).message;
      if (message !== this.lastError) this.options.log.warn({ err: message }, 'leader election: cannot read or write the lease');
      this.lastError = message;
      // Without a renewed lease we cannot be sure we still lead: step down rather than risk two writers.
      this.setLeader(false);
    }
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), this.options.retryPeriodMs);
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { name, namespace, identity, leaseDurationSeconds } = this.options;
    const now = (this.options.now ?? Date.now)();
    let lease: V1Lease | undefined;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
    const spec = { holderIdentity: identity, leaseDurationSeconds, renewTime: new V1MicroTime(now) };
    if (!lease) {
      await this.api.createNamespacedLease({ namespace, body: { metadata: { name, namespace }, spec: { ...spec, acquireTime: new V1MicroTime(now), leaseTransitions: 0 } } });
      return true;
    }
    const holder = lease.spec?.holderIdentity;
    const renewed = lease.spec?.renewTime ? new Date(lease.spec.renewTime).getTime() : 0;
    const duration = (lease.spec?.leaseDurationSeconds ?? leaseDurationSeconds) * 1000;
    const expired = !holder || renewed + duration < now;
    if (holder !== identity && !expired) return false;
    const taking = holder !== identity;
    lease.spec = {
      ...lease.spec,
      ...spec,
      ...(taking ? { acquireTime: new V1MicroTime(now), leaseTransitions: (lease.spec?.leaseTransitions ?? 0) + 1 } : {}),
    };
    try {
      // resourceVersion in metadata makes this fail if another replica wrote in between.
      await this.api.replaceNamespacedLease({ name, namespace, body: lease });
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
