import type { CoreV1Api } from '@kubernetes/client-node';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { API_VERSION, KIND } from '../model/types.js';
import { BoundedCache } from '../translate/memo.js';
import type { EventSink } from './source.js';

/** An event repeated within this window bumps the count of the one already recorded. */
const AGGREGATE_WINDOW_MS = 10 * 60_000;
/** Per VirtualService: events in a burst, then one per interval (client-go's spam filter: 25, then 1 per 5 min). */
const BURST = 25;
const REFILL_MS = 5 * 60_000;
/** Distinct events and objects remembered; the oldest are forgotten first. */
const REMEMBERED = 4096;

interface Recorded {
  readonly name: string;
  readonly firstTimestamp: Date;
  count: number;
  at: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Kubernetes Events on VirtualServices, as `kubectl describe vsvc` shows them. Best effort, and
 * frugal with the API server as client-go's event correlator is: the same event again within
 * 10 minutes updates the count and lastTimestamp of the one recorded (a patch, not a new
 * object), and each VirtualService may record 25 events in a burst, then one per 5 minutes.
 */
export class KubernetesEventRecorder implements EventSink {
  enabled = true;
  /** API writes made: creates and patches. */
  writes = 0;
  /** Events left out by the per-object rate limit. */
  dropped = 0;
  private readonly recorded = new BoundedCache<string, Recorded>(REMEMBERED);
  private readonly buckets = new BoundedCache<string, Bucket>(REMEMBERED);

  constructor(
    private readonly api: CoreV1Api,
    private readonly identity: string,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  record(key: string, uid: string | undefined, type: 'Normal' | 'Warning', reason: string, message: string): void {
    if (!this.enabled) return;
    const [namespace, name] = key.split('/') as [string, string];
    const text = message.slice(0, 1024);
    const id = `${key}\u0000${uid ?? ''}\u0000${type}\u0000${reason}\u0000${text}`;
    const now = this.now();
    const known = this.recorded.get(id);
    if (known && now - known.at < AGGREGATE_WINDOW_MS) {
      known.count += 1;
      known.at = now;
      this.writes += 1;
      void this.api
        .patchNamespacedEvent(
          { namespace, name: known.name, body: { count: known.count, lastTimestamp: new Date(now) } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        )
        .catch((err: unknown) => {
          // Gone (expired by the API server's event TTL): record it anew next time.
          this.recorded.set(id, { ...known, at: 0 });
          this.log.warn({ key, reason, err: (err as Error).message }, 'cannot update event');
        });
      return;
    }
    if (!this.allow(key, now)) {
      this.dropped += 1;
      return;
    }
    const at = new Date(now);
    this.writes += 1;
    void this.api
      .createNamespacedEvent({
        namespace,
        body: {
          metadata: { generateName: `${name}.`, namespace },
          involvedObject: { apiVersion: API_VERSION, kind: KIND, name, namespace, uid },
          type,
          reason,
          message: text,
          source: { component: 'vsxds' },
          reportingComponent: 'vsxds',
          reportingInstance: this.identity,
          firstTimestamp: at,
          lastTimestamp: at,
          count: 1,
        },
      })
      .then((created) => {
        if (created.metadata?.name) this.recorded.set(id, { name: created.metadata.name, firstTimestamp: at, count: 1, at: now });
      })
      .catch((err: unknown) => this.log.warn({ key, reason, err: (err as Error).message }, 'cannot record event'));
  }

  /** Token bucket per VirtualService. */
  private allow(key: string, now: number): boolean {
    let bucket = this.buckets.get(key);
    if (!bucket) this.buckets.set(key, (bucket = { tokens: BURST, at: now }));
    bucket.tokens = Math.min(BURST, bucket.tokens + (now - bucket.at) / REFILL_MS);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}
