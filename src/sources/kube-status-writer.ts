import type { Logger } from 'pino';
import { GROUP, PLURAL, VERSION, type VirtualServiceStatus } from '../model/types.js';
import type { StatusWriter } from './source.js';
import { backoffMs } from './kube-errors.js';
import { json, MERGE_PATCH, type KubeHttp } from './kube-http.js';

/** Writes one VirtualService's status subresource (a JSON merge patch of `{status}`); rejects with the API server's `code` on failure. */
export type StatusPatch = (namespace: string, name: string, patch: { status: object }) => Promise<unknown>;

/** The status patch through KubeHttp. */
export function statusPatchOver(http: KubeHttp): StatusPatch {
  return (namespace, name, patch) =>
    http.request('PATCH', `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(namespace)}/${PLURAL}/${encodeURIComponent(name)}/status`, json(patch, MERGE_PATCH));
}

/**
 * Status writes in flight at once. The rest wait here, not in the HTTP agent's queue, where each
 * request's timeout (REQUEST_TIMEOUT_MS) already runs: 10,000 VirtualServices created at once
 * queued 10,000 writes there, most timed out before they were sent and were retried, over and
 * over (bench B6's bulk fault: 700 writes done in two minutes, the heap at 750 MB).
 *
 * Eight only while a backlog waits (BACKLOG: thousands of new VirtualServices at once, or a new
 * leader writing every status); otherwise two. A status report hands over the writes of a whole
 * window at once (a dozen every 250 ms at 50 calls/s), and eight of them at once made the API
 * server answer everyone else late, the creates of new calls included: their watch events came
 * 20-73 ms late every 250 ms (bench B5). Two at a time keep those under ~20 ms.
 */
const MAX_IN_FLIGHT = 8;
const STEADY_IN_FLIGHT = 2;
/** Writes waiting beyond which up to MAX_IN_FLIGHT go at once. */
const BACKLOG = 64;

interface Pending {
  status: VirtualServiceStatus;
  generation?: number;
  attempt: number;
  timer?: NodeJS.Timeout;
  inflight: boolean;
}

/**
 * Writes VirtualService status through the status subresource (merge patch), one write in
 * flight per object and at most MAX_IN_FLIGHT in all (the others wait their turn, oldest first),
 * always the latest status, skipping writes that would change nothing.
 */
export class KubernetesStatusWriter implements StatusWriter {
  private readonly written = new Map<string, string>();
  private readonly pending = new Map<string, Pending>();
  /** The latest status given per object, kept while not leading so a new leader can write them all. */
  private readonly latest = new Map<string, { generation?: number; status: VirtualServiceStatus }>();
  /** Pending objects waiting for one of the writes in flight to end, oldest first. */
  private readonly queued = new Set<string>();
  private inFlight = 0;
  private stopped = false;
  private enabledNow = true;
  writes = 0;

  constructor(
    private readonly patch: StatusPatch,
    private readonly log: Logger,
    private readonly backoff: (attempt: number) => number = (a) => backoffMs(a, 200, 10_000),
    private readonly maxInFlight = MAX_IN_FLIGHT,
    private readonly steadyInFlight = STEADY_IN_FLIGHT,
  ) {}

  /** Only the leader writes; a follower remembers, and writes everything when it takes over. */
  get enabled(): boolean {
    return this.enabledNow;
  }

  set enabled(on: boolean) {
    if (on === this.enabledNow) return;
    this.enabledNow = on;
    if (!on) return;
    // What the previous leader wrote is unknown to us: write every status once.
    this.written.clear();
    for (const [key, { generation, status }] of this.latest) this.write(key, generation, status);
    // Writes that were waiting when leadership paused them (a retry whose timer fired meanwhile
    // found writing off and stopped): `write` only updates a pending entry, so start them here.
    for (const [key, entry] of this.pending) {
      if (entry.inflight) continue;
      clearTimeout(entry.timer);
      this.schedule(key);
    }
  }

  write(key: string, generation: number | undefined, status: VirtualServiceStatus): void {
    if (this.stopped) return;
    this.latest.set(key, { generation, status });
    if (!this.enabledNow) return;
    const json = JSON.stringify(status);
    if (this.written.get(key) === json && !this.pending.has(key)) return;
    const entry = this.pending.get(key);
    if (entry) {
      entry.status = status;
      entry.generation = generation;
      return;
    }
    this.pending.set(key, { status, generation, attempt: 0, inflight: false });
    this.schedule(key);
  }

  forget(key: string): void {
    this.written.delete(key);
    this.latest.delete(key);
    const entry = this.pending.get(key);
    if (entry) clearTimeout(entry.timer);
    this.pending.delete(key);
    this.queued.delete(key);
  }

  stop(): void {
    this.stopped = true;
    for (const e of this.pending.values()) clearTimeout(e.timer);
  }

  /** Writes now if fewer than the limit are in flight, else when its turn comes. */
  private schedule(key: string): void {
    if (this.inFlight < this.limit()) void this.flush(key);
    else this.queued.add(key);
  }

  /** How many may be in flight now: a few, more while a backlog waits. */
  private limit(): number {
    return this.queued.size > BACKLOG ? this.maxInFlight : Math.min(this.steadyInFlight, this.maxInFlight);
  }

  /** A write ended: the next ones waiting take its place. */
  private next(): void {
    for (const key of this.queued) {
      if (this.inFlight >= this.limit()) return;
      void this.flush(key);
    }
  }

  private async flush(key: string): Promise<void> {
    this.queued.delete(key);
    const entry = this.pending.get(key);
    if (!entry || entry.inflight || this.stopped || !this.enabledNow) return;
    const json = JSON.stringify(entry.status);
    if (this.written.get(key) === json) {
      this.pending.delete(key);
      return;
    }
    const [namespace, name] = key.split('/') as [string, string];
    entry.inflight = true;
    this.inFlight += 1;
    try {
      // A merge patch keeps fields it does not mention: clear the optional ones explicitly.
      await this.patch(namespace, name, { status: { nackMessage: null, ...entry.status } });
      this.writes += 1;
      this.written.set(key, json);
      entry.attempt = 0;
    } catch (err) {
      const code = (err as { code?: number }).code;
      entry.inflight = false;
      this.inFlight -= 1;
      if (code === 404) {
        // Deleted meanwhile: nothing to report on.
        this.forget(key);
      } else {
        this.log.warn({ key, code, err: (err as Error).message }, 'status write failed; retrying');
        entry.timer = setTimeout(() => this.schedule(key), this.backoff(entry.attempt++));
      }
      this.next();
      return;
    }
    entry.inflight = false;
    this.inFlight -= 1;
    // A newer status may have arrived while this one was being written.
    if (JSON.stringify(entry.status) !== json) this.schedule(key);
    else this.pending.delete(key);
    this.next();
  }
}
