import { firstValueFrom, filter, timeout } from 'rxjs';
import { stringify } from 'yaml';
import { nodeGroup, type NodeGroup, type PodLookup } from '../xds/node-identity.js';
import { shortTypeName } from '../xds/type-urls.js';
import { appliesTo, translateGroup } from '../translate/index.js';
import { ConfigPipeline } from './config-pipeline.js';
import { boolean, defaultSource, parseLabels, UsageError, type Settings } from './config.js';
import { createLogger } from './logger.js';
import { makeSource } from './make-source.js';
import { SnapshotCache } from '../xds/snapshot-cache.js';
import { Snapshot } from '../xds/snapshot.js';

/**
 * Prints the Envoy resources one proxy would receive, without serving. Exit status 1 when a
 * VirtualService that selects the proxy is invalid or loses a conflict, so users can gate CI on it.
 */
export async function render(settings: Settings, out: NodeJS.WritableStream, err: NodeJS.WritableStream, env = process.env): Promise<number> {
  const log = createLogger(settings.logLevel === 'info' ? 'warn' : (settings.logLevel ?? 'warn'));
  // render only reads: it must not campaign for the status-writer lease.
  const source = await makeSource(settings.source ?? defaultSource(env), { ...settings, leaderElection: 'false' }, log, env);
  await source.start();
  try {
    const state = await firstValueFrom(source.state$.pipe(filter((s) => s.synced), timeout({ first: 60_000, with: () => { throw new Error('the source did not finish its initial sync within 60 s'); } })));
    const group = resolveGroup(settings, source.podLookup);
    const pipeline = new ConfigPipeline({ source, cache: new SnapshotCache(), log, coalesceMs: 0 });
    const evaluated = state.virtualServices.map((raw) => pipeline.evaluate(raw));
    const translation = translateGroup(group, evaluated.flatMap((e) => (e.accepted && e.vs ? [e.vs] : [])), state.pods, { shareClusters: boolean(settings, 'shareClusters') });
    // What serve would do with it: a configuration that does not encode or is inconsistent fails.
    let buildError: string | undefined;
    try {
      Snapshot.build(translation.snapshot);
    } catch (e) {
      buildError = (e as Error).message;
    }
    const resources: Record<string, unknown[]> = {};
    for (const [typeUrl, items] of Object.entries(translation.snapshot)) {
      resources[shortTypeName(typeUrl)] = items.map((i) => i.resource);
    }
    const doc = { node: { namespace: group.namespace, labels: group.labels }, resources };
    out.write(settings.format === 'json' ? `${JSON.stringify(doc, null, 2)}\n` : stringify(doc, { aliasDuplicateObjects: false }));
    let failed = false;
    if (buildError) {
      err.write(`invalid: the configuration of this proxy does not build: ${buildError}\n`);
      failed = true;
    }
    for (const p of state.problems) {
      // A problem with an object of another namespace cannot touch this proxy; one with a file
      // can (what the file holds is unknown).
      const related = p.namespace === undefined || p.namespace === group.namespace;
      err.write(`${related ? 'problem' : 'warning'}: ${p.subject}: ${p.message}\n`);
      if (related) failed = true;
    }
    for (const e of evaluated) {
      // An object that did not parse has no selector: report it to every proxy of its namespace.
      const selects = e.vs ? appliesTo(e.vs, group) : e.raw.metadata.namespace === group.namespace;
      if (!e.accepted && selects) {
        err.write(`invalid: VirtualService ${e.key}: ${e.reason}: ${e.message}\n`);
        failed = true;
      }
    }
    for (const [key, c] of translation.contributions) {
      for (const conflict of c.conflicts) {
        err.write(`conflict: VirtualService ${key}: ${conflict.message}\n`);
        failed = true;
      }
    }
    return failed ? 1 : 0;
  } finally {
    await source.stop();
  }
}

function resolveGroup(settings: Settings, lookup: PodLookup | undefined): NodeGroup {
  if (settings.nodeId) {
    const [namespace, name] = settings.nodeId.split('/');
    if (!namespace || !name) throw new UsageError('--node-id must be <namespace>/<pod-name>');
    const pod = lookup?.byName(namespace, name);
    if (!pod) throw new UsageError(`pod ${settings.nodeId} is not known to the source`);
    return nodeGroup(pod.namespace, pod.labels);
  }
  if (!settings.nodeNamespace) throw new UsageError('render needs --node-namespace (and --node-labels) or --node-id');
  return nodeGroup(settings.nodeNamespace, parseLabels(settings.nodeLabels));
}
