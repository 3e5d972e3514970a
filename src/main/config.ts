import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** The package root: two levels above both src/main and dist/main. */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface OptionSpec {
  readonly flag: string;
  readonly env: string;
  readonly help: string;
  readonly default?: string;
}

/** Every option has a flag and an environment variable; the flag wins. */
export const OPTIONS = {
  source: { flag: 'source', env: 'VSXDS_SOURCE', help: 'kubernetes | file:DIR (default: kubernetes when a cluster is configured, else file:examples)' },
  xdsAddress: { flag: 'xds-address', env: 'VSXDS_XDS_ADDRESS', help: 'host:port of the ADS gRPC server', default: '0.0.0.0:18000' },
  adminAddress: { flag: 'admin-address', env: 'VSXDS_ADMIN_ADDRESS', help: 'host:port of the admin HTTP server (health, debug)', default: '0.0.0.0:18001' },
  coalesceMs: { flag: 'coalesce-ms', env: 'VSXDS_COALESCE_MS', help: 'a change after a quiet spell is built at once; the changes that follow within this many ms (or twice the last build, if longer) are built together', default: '5' },
  coalesceDeletionsMs: { flag: 'coalesce-deletions-ms', env: 'VSXDS_COALESCE_DELETIONS_MS', help: "VirtualService deletions with nothing else to build wait up to this many ms for the next change and are built with it (an ended call rides on the next call's build; until then its listener keeps forwarding, also for a new call given its port); 0 (the default) builds them at once", default: '0' },
  shareClusters: { flag: 'share-clusters', env: 'VSXDS_SHARE_CLUSTERS', help: 'true | false: one Envoy cluster (named vsxds-eds-<hash>) for all clusters of a proxy with the same endpoints and health check', default: 'true' },
  statusMs: { flag: 'status-interval-ms', env: 'VSXDS_STATUS_INTERVAL_MS', help: 'VirtualService status is recomputed at most this often', default: '250' },
  logLevel: { flag: 'log-level', env: 'VSXDS_LOG_LEVEL', help: 'trace | debug | info | warn | error', default: 'info' },
  kubeconfig: { flag: 'kubeconfig', env: 'KUBECONFIG', help: 'kubeconfig file (default: in-cluster config, then ~/.kube/config)' },
  namespace: { flag: 'namespace', env: 'VSXDS_NAMESPACE', help: 'watch only this namespace (default: all namespaces)' },
  xdsTlsCert: { flag: 'xds-tls-cert', env: 'VSXDS_XDS_TLS_CERT', help: 'PEM certificate chain for TLS on the xDS port (with --xds-tls-key)' },
  xdsTlsKey: { flag: 'xds-tls-key', env: 'VSXDS_XDS_TLS_KEY', help: 'PEM private key for TLS on the xDS port' },
  xdsTlsClientCa: { flag: 'xds-tls-client-ca', env: 'VSXDS_XDS_TLS_CLIENT_CA', help: 'PEM CA bundle: require client certificates signed by it (mutual TLS)' },
  nodeAuth: { flag: 'node-auth', env: 'VSXDS_NODE_AUTH', help: 'none | peer-ip | client-cert: how a proxy proves the pod it claims to be', default: 'none' },
  maxStreams: { flag: 'max-streams', env: 'VSXDS_MAX_STREAMS', help: 'concurrent ADS streams; more are refused with RESOURCE_EXHAUSTED', default: '50000' },
  maxMessageBytes: { flag: 'max-message-bytes', env: 'VSXDS_MAX_MESSAGE_BYTES', help: 'largest DiscoveryRequest accepted', default: '4194304' },
  maxRequestsPerSecond: { flag: 'max-requests-per-second', env: 'VSXDS_MAX_REQUESTS_PER_SECOND', help: 'requests one ADS stream may send per second (0: unlimited)', default: '200' },
  maxSubscribedNames: { flag: 'max-subscribed-names', env: 'VSXDS_MAX_SUBSCRIBED_NAMES', help: 'resource names one ADS stream may subscribe to, over all types', default: '100000' },
  identifyTimeoutS: { flag: 'identify-timeout-s', env: 'VSXDS_IDENTIFY_TIMEOUT_S', help: 'how long a stream whose pod is not known waits for it to appear before it is ended with NOT_FOUND', default: '60' },
  removalDelayMs: { flag: 'removal-delay-ms', env: 'VSXDS_REMOVAL_DELAY_MS', help: 'a cluster (endpoints) a replaced listener (cluster) used stays this long after the replacement is ACKed, for replies still on their way through its sessions', default: '1000' },
  watchTimeoutS: { flag: 'watch-timeout-s', env: 'VSXDS_WATCH_TIMEOUT_S', help: '(kubernetes) each watch asks the API server to end it after 80-100% of this many seconds; one that sent nothing and did not end for that plus a quarter of this (a half-open connection) is started over', default: '60' },
  leaderElection: { flag: 'leader-election', env: 'VSXDS_LEADER_ELECTION', help: '(kubernetes) true | false: only the holder of the vsxds-leader Lease writes status and events', default: 'true' },
  leaderElectionNamespace: { flag: 'leader-election-namespace', env: 'VSXDS_LEADER_ELECTION_NAMESPACE', help: '(kubernetes) namespace of the Lease (default: $POD_NAMESPACE, else default)' },
  leaseDurationSeconds: { flag: 'lease-duration-seconds', env: 'VSXDS_LEASE_DURATION_SECONDS', help: '(kubernetes) how long a silent leader keeps the Lease, and how long the leader counts the proxies of a replica whose status ConfigMap went unrenewed', default: '15' },
  maxConnectionAgeMs: { flag: 'max-connection-age-ms', env: 'VSXDS_MAX_CONNECTION_AGE_MS', help: 'an xDS connection older than this (±10% jitter) is sent an HTTP/2 GOAWAY, so Envoys reconnect through the Service and spread over the replicas again (0: never)', default: '1800000' },
  maxConnectionAgeGraceMs: { flag: 'max-connection-age-grace-ms', env: 'VSXDS_MAX_CONNECTION_AGE_GRACE_MS', help: 'after the GOAWAY, how long its ADS streams may stay before the connection is closed', default: '10000' },
  replicaName: { flag: 'replica-name', env: 'VSXDS_REPLICA_NAME', help: 'name of this replica in CSDS answers and proxy-status (default: $POD_NAME, else the host name)' },
  shutdownGraceMs: { flag: 'shutdown-grace-ms', env: 'VSXDS_SHUTDOWN_GRACE_MS', help: 'on SIGTERM, how long open ADS streams may stay before they are closed', default: '5000' },
  nodeNamespace: { flag: 'node-namespace', env: 'VSXDS_NODE_NAMESPACE', help: '(render) namespace of the proxy' },
  nodeLabels: { flag: 'node-labels', env: 'VSXDS_NODE_LABELS', help: '(render) labels of the proxy, k=v,k=v' },
  nodeId: { flag: 'node-id', env: 'VSXDS_NODE_ID', help: '(render) <namespace>/<pod> of the proxy, resolved through the source' },
  format: { flag: 'format', env: 'VSXDS_FORMAT', help: '(render) yaml | json', default: 'yaml' },
} as const satisfies Record<string, OptionSpec>;

export type OptionName = keyof typeof OPTIONS;
export type Settings = Partial<Record<OptionName, string>>;

export class UsageError extends Error {
  override name = 'UsageError';
}

export function parseCommandLine(argv: readonly string[], env: NodeJS.ProcessEnv): { command: string; settings: Settings; help: boolean } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const spec of Object.values(OPTIONS)) options[spec.flag] = { type: 'string' };
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const settings: Settings = {};
  for (const [name, spec] of Object.entries(OPTIONS) as [OptionName, OptionSpec][]) {
    const value = (parsed.values[spec.flag] as string | undefined) ?? env[spec.env] ?? spec.default;
    if (value !== undefined && value !== '') settings[name] = value;
  }
  const [command = 'serve', ...rest] = parsed.positionals;
  if (rest.length > 0) throw new UsageError(`unexpected arguments: ${rest.join(' ')}`);
  return { command, settings, help: parsed.values['help'] === true };
}

export function usage(): string {
  const lines = [
    'vsxds: Envoy xDS management server for servicemesh.l7mp.io/v1 VirtualServices',
    '',
    'Usage:',
    '  vsxds serve  [options]   serve ADS to Envoys (the default command)',
    '  vsxds render [options]   print the Envoy resources one proxy would receive, then exit',
    '                           (exit status 1 when a VirtualService it selects is invalid or conflicted)',
    '  vsxds proxy-status [--server host:port ...] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]',
    '                           one line per proxy connected to any of the replicas (CSDS), then exit',
    '',
    'Options (each also read from the environment variable shown):',
  ];
  for (const spec of Object.values(OPTIONS) as OptionSpec[]) {
    const def = spec.default ? ` [default: ${spec.default}]` : '';
    lines.push(`  --${spec.flag.padEnd(20)} $${spec.env.padEnd(26)} ${spec.help}${def}`);
  }
  lines.push('  --help, -h');
  return lines.join('\n');
}

export function integer(settings: Settings, name: OptionName): number {
  const spec: OptionSpec = OPTIONS[name];
  const raw = settings[name] ?? spec.default;
  const n = Number(raw);
  if (raw === undefined || !Number.isInteger(n) || n < 0) throw new UsageError(`--${OPTIONS[name].flag} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return n;
}

export function boolean(settings: Settings, name: OptionName): boolean {
  const raw = settings[name] ?? (OPTIONS[name] as OptionSpec).default;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  throw new UsageError(`--${OPTIONS[name].flag} must be true or false, got ${JSON.stringify(raw)}`);
}

/** The source to use when none is given: a cluster if one is configured, else the examples. */
export function defaultSource(env: NodeJS.ProcessEnv): string {
  const kubeconfig = env['KUBECONFIG'] ?? path.join(os.homedir(), '.kube', 'config');
  if (env['KUBERNETES_SERVICE_HOST'] || existsSync(kubeconfig)) return 'kubernetes';
  return `file:${path.join(PACKAGE_ROOT, 'examples')}`;
}

export function parseLabels(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const part of (text ?? '').split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new UsageError(`labels must be k=v,k=v; got ${JSON.stringify(part)}`);
    labels[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return labels;
}
