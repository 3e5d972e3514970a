import { credentials, makeGenericClientConstructor, type ChannelCredentials, type Metadata, type ServiceError } from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CSDS_SERVICE, REPLICA_HEADER } from '../xds/csds-server.js';
import { PUSH_ORDER, shortTypeName } from '../xds/type-urls.js';
import { UsageError } from './config.js';

const CsdsClient = makeGenericClientConstructor(CSDS_SERVICE, 'ClientStatusDiscoveryService');

export const PROXY_STATUS_USAGE = [
  'Usage: vsxds proxy-status [--server host:port ...] [options]',
  '',
  'Asks each vsxds replica (CSDS, on its xDS port) for its connected proxies and prints one line per proxy:',
  'proxy (node id), replica, node group, per type SYNCED / STALE / NACKED (- when it has none), and the',
  'age of its newest update.',
  '',
  '  --server HOST:PORT   a replica; repeat for several [default: localhost:18000]',
  '  --tls-ca FILE        TLS: PEM CA that signed the replicas\' certificates (plaintext without it)',
  '  --tls-cert FILE      mutual TLS: PEM client certificate (with --tls-key)',
  '  --tls-key FILE       mutual TLS: PEM client key',
  '  --timeout-ms N       per replica [default: 5000]',
].join('\n');

/** One proxy on one replica, as proxy-status prints it. */
export interface ProxyStatusRow {
  readonly proxy: string;
  readonly replica: string;
  readonly group: string;
  /** Short type name (CDS, EDS, LDS, ...) → SYNCED | STALE | NACKED. */
  readonly types: Readonly<Record<string, string>>;
  /** Wall clock ms of the newest update of any of its resources. */
  readonly updatedAt?: number;
}

interface Fetched {
  readonly replica: string;
  readonly response: Record<string, any>;
}

/** `vsxds proxy-status`: returns the exit status (1 when a replica could not be asked). */
export async function proxyStatus(argv: readonly string[], out: NodeJS.WritableStream, err: NodeJS.WritableStream, now = Date.now()): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        server: { type: 'string', multiple: true },
        'tls-ca': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'timeout-ms': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n\n${PROXY_STATUS_USAGE}`);
  }
  const v = parsed.values;
  if (v.help) {
    out.write(`${PROXY_STATUS_USAGE}\n`);
    return 0;
  }
  const timeoutMs = Number(v['timeout-ms'] ?? '5000');
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new UsageError('--timeout-ms must be a positive integer');
  const creds = clientCredentials(v['tls-ca'], v['tls-cert'], v['tls-key']);
  const servers = v.server?.length ? v.server : ['localhost:18000'];
  const results = await Promise.all(servers.map((s) => fetchClientStatus(s, creds, timeoutMs).then((r) => ({ server: s, r }), (e: Error) => ({ server: s, e }))));
  let status = 0;
  const rows: ProxyStatusRow[] = [];
  for (const res of results) {
    if ('e' in res) {
      err.write(`vsxds proxy-status: ${res.server}: ${res.e.message}\n`);
      status = 1;
    } else rows.push(...statusRows(res.r.replica || res.server, res.r.response));
  }
  out.write(formatRows(rows, now));
  return status;
}

function clientCredentials(ca?: string, cert?: string, key?: string): ChannelCredentials {
  if (!ca && !cert && !key) return credentials.createInsecure();
  if (!ca) throw new UsageError('--tls-cert and --tls-key need --tls-ca');
  if (!cert !== !key) throw new UsageError('mutual TLS needs both --tls-cert and --tls-key');
  const read = (file: string) => {
    try {
      return readFileSync(file);
    } catch (e) {
      throw new UsageError(`cannot read ${file}: ${(e as Error).message}`);
    }
  };
  return credentials.createSsl(read(ca), key ? read(key) : null, cert ? read(cert) : null);
}

/** One FetchClientStatus call, without resource contents; the replica from the response metadata. */
export function fetchClientStatus(server: string, creds: ChannelCredentials, timeoutMs: number): Promise<Fetched> {
  const client = new CsdsClient(server, creds);
  return new Promise<Fetched>((resolve, reject) => {
    let replica = '';
    const call = (client as any).FetchClientStatus(
      { exclude_resource_contents: true },
      { deadline: Date.now() + timeoutMs },
      (e: ServiceError | null, response: Record<string, any>) => {
        client.close();
        if (e) reject(new Error(e.details || e.message));
        else resolve({ replica, response });
      },
    );
    call.on('metadata', (md: Metadata) => {
      replica = String(md.get(REPLICA_HEADER)[0] ?? '');
    });
  });
}

/** The rows of one replica's ClientStatusResponse (decoded with enums as names). */
export function statusRows(replica: string, response: Record<string, any>): ProxyStatusRow[] {
  const rows: ProxyStatusRow[] = [];
  for (const config of (response['config'] ?? []) as Record<string, any>[]) {
    const types: Record<string, string> = {};
    let updatedAt: number | undefined;
    for (const g of (config['generic_xds_configs'] ?? []) as Record<string, any>[]) {
      const type = shortTypeName(g['type_url'] ?? '');
      const s = g['config_status'] === 'ERROR' ? 'NACKED' : g['config_status'] === 'SYNCED' ? 'SYNCED' : 'STALE';
      types[type] = worse(types[type], s);
      for (const ts of [g['last_updated'], g['error_state']?.['last_update_attempt']]) {
        if (ts) updatedAt = Math.max(updatedAt ?? 0, Number(ts.seconds ?? 0) * 1000 + Math.floor(Number(ts.nanos ?? 0) / 1e6));
      }
    }
    rows.push({ proxy: config['node']?.['id'] ?? '', replica, group: config['client_scope'] ?? '', types, updatedAt });
  }
  return rows;
}

const RANK: Record<string, number> = { SYNCED: 0, STALE: 1, NACKED: 2 };

function worse(a: string | undefined, b: string): string {
  return a === undefined || (RANK[b] ?? 0) > (RANK[a] ?? 0) ? b : a;
}

/** A table as istioctl proxy-status prints it: a header, then one line per proxy sorted by proxy and replica. */
export function formatRows(rows: readonly ProxyStatusRow[], now: number): string {
  const known = PUSH_ORDER.map(shortTypeName);
  const extra = [...new Set(rows.flatMap((r) => Object.keys(r.types)))].filter((t) => !known.includes(t)).sort();
  const typeColumns = [...known, ...extra];
  const header = ['PROXY', 'REPLICA', 'GROUP', ...typeColumns, 'AGE'];
  const sorted = [...rows].sort((a, b) => (a.proxy === b.proxy ? (a.replica < b.replica ? -1 : 1) : a.proxy < b.proxy ? -1 : 1));
  const table = [header, ...sorted.map((r) => [r.proxy, r.replica, r.group || '-', ...typeColumns.map((t) => r.types[t] ?? '-'), age(r.updatedAt, now)])];
  const widths = header.map((_, i) => Math.max(...table.map((line) => (line[i] ?? '').length)));
  return table.map((line) => line.map((cell, i) => (i === line.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('   ')).join('\n') + '\n';
}

function age(at: number | undefined, now: number): string {
  if (at === undefined) return '-';
  const s = Math.max(0, Math.floor((now - at) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}
