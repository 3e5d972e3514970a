import { AdminServer } from '../admin/admin-server.js';
import { Metrics } from '../admin/metrics.js';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { adsCredentials, AdsServer, type AdsTls } from '../xds/ads-server.js';
import { NODE_AUTH_MODES, type NodeAuthMode } from '../xds/node-auth.js';
import { SnapshotCache } from '../xds/snapshot-cache.js';
import { ProxyStatusRegistry } from '../xds/status-registry.js';
import { ChangeTracker } from './change-tracker.js';
import { ConfigPipeline } from './config-pipeline.js';
import { boolean, defaultSource, integer, UsageError, type Settings } from './config.js';
import { createLogger } from './logger.js';
import { makeSource } from './make-source.js';
import { SelectorKeyGrouping } from './selector-grouping.js';
import { StatusReporter } from './status-reporter.js';
import type { Source } from '../sources/source.js';

export interface Running {
  readonly xdsPort: number;
  readonly adminPort: number;
  readonly pipeline: ConfigPipeline;
  readonly reporter: StatusReporter;
  readonly cache: SnapshotCache;
  readonly ads: AdsServer;
  readonly source: Source;
  shutdown(reason: string): Promise<void>;
}

/** Wires source → pipeline → cache → ADS server, plus status reporting and the admin server. */
export async function serve(settings: Settings, env: NodeJS.ProcessEnv = process.env): Promise<Running> {
  const log = createLogger(settings.logLevel ?? 'info');
  const sourceSpec = settings.source ?? defaultSource(env);
  const source = await makeSource(sourceSpec, settings, log, env);
  const cache = new SnapshotCache();
  const registry = new ProxyStatusRegistry();
  const nodeAuth = (settings.nodeAuth ?? 'none') as NodeAuthMode;
  if (!NODE_AUTH_MODES.includes(nodeAuth)) throw new UsageError(`--node-auth must be one of ${NODE_AUTH_MODES.join(', ')}`);
  const tls = await loadTls(settings);
  if (nodeAuth === 'client-cert' && !tls?.clientCa) throw new UsageError('--node-auth client-cert needs mutual TLS: set --xds-tls-cert, --xds-tls-key and --xds-tls-client-ca');
  // Before the pipeline subscribes: a proxy's group is known before its group is built.
  const grouping = new SelectorKeyGrouping(source.state$);
  const ads = new AdsServer({
    cache,
    status: registry,
    podLookup: source.podLookup,
    grouping,
    logger: log,
    nodeAuth,
    grpcOptions: connectionAge(integer(settings, 'maxConnectionAgeMs'), integer(settings, 'maxConnectionAgeGraceMs')),
    replicaName: settings.replicaName ?? env['POD_NAME'] ?? hostname(),
    limits: {
      maxStreams: integer(settings, 'maxStreams'),
      maxMessageBytes: integer(settings, 'maxMessageBytes'),
      maxRequestsPerSecond: integer(settings, 'maxRequestsPerSecond'),
      maxSubscribedNames: integer(settings, 'maxSubscribedNames'),
      identifyTimeoutMs: integer(settings, 'identifyTimeoutS') * 1000,
      removalDelayMs: integer(settings, 'removalDelayMs'),
    },
  });
  const tracker = new ChangeTracker();
  registry.tracer = tracker;
  const pipeline = new ConfigPipeline({
    source,
    tracker: { tracker, registry },
    cache,
    log: log.child({ component: 'pipeline' }),
    coalesceMs: integer(settings, 'coalesceMs'),
    deletionDelayMs: integer(settings, 'coalesceDeletionsMs'),
    translate: { shareClusters: boolean(settings, 'shareClusters') },
  });
  const reporter = new StatusReporter(pipeline, registry, source.statusWriter, log.child({ component: 'status' }), integer(settings, 'statusMs'), undefined, source.events, source.replicas);
  const metrics = new Metrics({ registry, pipeline, cache, source });
  tracker.registerMetrics(metrics.prometheus);
  const admin = new AdminServer({ cache, registry, pipeline, reporter, metrics, tracker, source, log });

  // Listen first: Envoys may connect at once; they wait, unanswered, until the sources synced.
  const xdsPort = await ads.listen(settings.xdsAddress ?? '0.0.0.0:18000', adsCredentials(tls));
  const adminPort = await admin.listen(settings.adminAddress ?? '0.0.0.0:18001');
  pipeline.start();
  reporter.start();
  await source.start();
  log.info({ source: source.name, xdsPort, adminPort }, 'vsxds started');

  let stopping: Promise<void> | undefined;
  const shutdown = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      log.info({ reason }, 'shutting down');
      reporter.stop();
      pipeline.stop();
      metrics.stop();
      grouping.stop();
      await source.stop();
      await ads.close(integer(settings, 'shutdownGraceMs'));
      await admin.close();
      log.info('stopped');
      log.flush();
    })();
    return stopping;
  };
  return { xdsPort, adminPort, pipeline, reporter, cache, ads, source, shutdown };
}

/**
 * ADS streams last as long as their connection, and a Service balances connections: after a
 * replica restarts, its Envoys stay on the others for good unless connections age out. grpc-js
 * sends the GOAWAY at the age with ±10% jitter (so a fleet that connected at once does not
 * reconnect at once) and closes the connection after the grace; Envoy then opens a new one,
 * and since every replica serves the same content-hash versions, nothing is re-sent.
 */
function connectionAge(ageMs: number, graceMs: number): Record<string, number> {
  if (ageMs === 0) return {};
  return { 'grpc.max_connection_age_ms': ageMs, 'grpc.max_connection_age_grace_ms': graceMs };
}

async function loadTls(settings: Settings): Promise<AdsTls | undefined> {
  const { xdsTlsCert, xdsTlsKey, xdsTlsClientCa } = settings;
  if (!xdsTlsCert && !xdsTlsKey && !xdsTlsClientCa) return undefined;
  if (!xdsTlsCert || !xdsTlsKey) throw new UsageError('TLS on the xDS port needs both --xds-tls-cert and --xds-tls-key');
  const read = async (file: string, what: string) => {
    try {
      return await readFile(file);
    } catch (err) {
      throw new UsageError(`cannot read the ${what} ${file}: ${(err as Error).message}`);
    }
  };
  return {
    cert: await read(xdsTlsCert, 'TLS certificate'),
    key: await read(xdsTlsKey, 'TLS key'),
    clientCa: xdsTlsClientCa ? await read(xdsTlsClientCa, 'client CA') : undefined,
  };
}
