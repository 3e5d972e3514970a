import type { CoreV1Api } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { API_VERSION, KIND } from '../model/types.js';
import type { EventSink } from './source.js';

/** Kubernetes Events on VirtualServices, as `kubectl describe vsvc` shows them. Best effort. */
export class KubernetesEventRecorder implements EventSink {
  enabled = true;

  constructor(
    private readonly api: CoreV1Api,
    private readonly identity: string,
    private readonly log: Logger,
  ) {}

  record(key: string, uid: string | undefined, type: 'Normal' | 'Warning', reason: string, message: string): void {
    if (!this.enabled) return;
    const [namespace, name] = key.split('/') as [string, string];
    const now = new Date();
    void this.api
      .createNamespacedEvent({
        namespace,
        body: {
          metadata: { generateName: `${name}.`, namespace },
          involvedObject: { apiVersion: API_VERSION, kind: KIND, name, namespace, uid },
          type,
          reason,
          message: message.slice(0, 1024),
          source: { component: 'vsxds' },
          reportingComponent: 'vsxds',
          reportingInstance: this.identity,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      })
      .catch((err: unknown) => this.log.warn({ key, reason, err: (err as Error).message }, 'cannot record event'));
  }
}
