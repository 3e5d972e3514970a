import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { FileSource } from '../sources/file-source.js';
import type { Source } from '../sources/source.js';
import { integer, UsageError, type Settings } from './config.js';

/** `kubernetes` or `file:DIR` → a started-able Source. */
export async function makeSource(spec: string, settings: Settings, log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<Source> {
  if (spec.startsWith('file:')) {
    const dir = spec.slice('file:'.length);
    if (!dir) throw new UsageError('--source file:DIR needs a directory');
    return new FileSource(path.resolve(dir), log.child({ component: 'file-source' }));
  }
  if (spec === 'kubernetes') {
    const { KubernetesSource } = await import('../sources/kubernetes-source.js');
    const identity = env['POD_NAME'] ?? `${os.hostname()}-${process.pid}`;
    const namespace = settings.leaderElectionNamespace ?? env['POD_NAMESPACE'] ?? 'default';
    const leaseDurationSeconds = integer(settings, 'leaseDurationSeconds');
    const podName = env['POD_NAME'];
    const podUid = env['POD_UID'];
    const watchTimeoutS = integer(settings, 'watchTimeoutS');
    if (watchTimeoutS < 1) throw new UsageError('--watch-timeout-s must be at least 1');
    return new KubernetesSource({
      kubeconfig: settings.kubeconfig,
      namespace: settings.namespace,
      log: log.child({ component: 'kubernetes-source' }),
      watchTimeoutS,
      leaderElection:
        settings.leaderElection === 'false'
          ? undefined
          : {
              namespace,
              name: 'vsxds-leader',
              identity,
              leaseDurationSeconds,
              retryPeriodMs: Math.max(200, Math.floor((leaseDurationSeconds * 1000) / 3)),
            },
      replicaStatus: {
        namespace,
        replica: settings.replicaName ?? identity,
        // An owner must live in the object's namespace.
        pod: podName && podUid && namespace === env['POD_NAMESPACE'] ? { name: podName, uid: podUid } : undefined,
        leaseDurationSeconds,
      },
    });
  }
  throw new UsageError(`unknown source ${JSON.stringify(spec)}: use kubernetes or file:DIR`);
}
