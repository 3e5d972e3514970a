import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Subscription } from 'rxjs';
import { wallNow, type ChangeTracker } from '../main/change-tracker.js';
import type { ConfigPipeline } from '../main/config-pipeline.js';
import type { Metrics } from './metrics.js';
import type { StatusReporter } from '../main/status-reporter.js';
import type { Source } from '../sources/source.js';
import type { SnapshotCache } from '../xds/snapshot-cache.js';
import type { ProxyStatusRegistry } from '../xds/status-registry.js';
import { shortTypeName } from '../xds/type-urls.js';
import { renderStatusPage, STATUS_PAGE_CSP, type BuildEntry } from './status-page.js';

export interface AdminDeps {
  readonly cache: SnapshotCache;
  readonly registry: ProxyStatusRegistry;
  readonly pipeline: ConfigPipeline;
  readonly reporter: StatusReporter;
  readonly metrics?: Metrics;
  readonly tracker?: ChangeTracker;
  /** Its name and watch restarts, for the status page. */
  readonly source?: Pick<Source, 'name' | 'watchRestarts'>;
  readonly log: Logger;
}

/** Builds the status page lists (the pipeline keeps only the last one's figures). */
const KEEP_BUILDS = 10;
const DEFAULT_REFRESH_SECONDS = 5;

interface Reply {
  readonly status: number;
  readonly body: unknown;
  readonly contentType?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

type Handler = (url: URL) => Reply | Promise<Reply>;

/** Health, readiness and debugging over HTTP, for operators and probes. */
export class AdminServer {
  private readonly server: Server;
  private readonly routes: Record<string, Handler>;
  private readonly builds: BuildEntry[] = [];
  private readonly buildWatch: Subscription;

  constructor(private readonly deps: AdminDeps) {
    this.routes = {
      '/': (url) => this.statusPage(url),
      '/healthz': () => ({ status: 200, body: 'ok' }),
      '/readyz': () =>
        deps.cache.ready ? { status: 200, body: 'ok' } : { status: 503, body: 'waiting for the sources to finish their initial sync' },
      '/debug/syncz': () => ({ status: 200, body: this.syncz() }),
      '/debug/stream_errors': () => ({ status: 200, body: deps.registry.streamErrors() }),
      '/debug/config_dump': (url) => this.configDump(url.searchParams.get('node') ?? ''),
      '/debug/virtualservices': () => ({ status: 200, body: Object.fromEntries(deps.reporter.current()) }),
      '/debug/changes': (url) => {
        if (!deps.tracker) return { status: 404, body: 'change tracking is off' };
        const since = url.searchParams.get('since');
        if (since !== null && !/^\d+(\.\d+)?$/.test(since)) return { status: 400, body: 'since: milliseconds since the epoch (as receivedAt and completedAt give them)' };
        return { status: 200, body: { now: Math.round(wallNow()), changes: deps.tracker.list(since === null ? undefined : Number(since)) } };
      },
      '/metrics': async () =>
        deps.metrics ? { status: 200, body: await deps.metrics.text(), contentType: deps.metrics.contentType } : { status: 404, body: 'metrics are off' },
    };
    this.server = createServer((req, res) => this.handle(req, res));
    let seen = 0;
    this.buildWatch = deps.pipeline.view$.subscribe((view) => {
      if (view.builds === seen) return;
      seen = view.builds;
      this.builds.push({ at: Date.now(), ms: view.lastBuildMs, groups: view.lastBuildGroups, errors: view.buildErrors.size });
      if (this.builds.length > KEEP_BUILDS) this.builds.shift();
    });
  }

  listen(address: string): Promise<number> {
    const { host, port } = splitHostPort(address);
    return new Promise((resolve, reject) => {
      this.server.once('error', (err) => reject(new Error(`cannot listen for admin HTTP on ${address}: ${err.message}`)));
      this.server.listen(port, host, () => {
        const bound = this.server.address();
        resolve(typeof bound === 'object' && bound ? bound.port : port);
      });
    });
  }

  close(): Promise<void> {
    this.buildWatch.unsubscribe();
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://admin');
    const route = this.routes[url.pathname];
    const reply: Promise<Reply> = route
      ? Promise.resolve().then(() => route(url))
      : Promise.resolve({ status: 404, body: `no such endpoint; try ${Object.keys(this.routes).join(' ')}` });
    void reply
      .catch((err: unknown): Reply => ({ status: 500, body: (err as Error).message }))
      .then(({ status, body, contentType, headers }) => {
        const text = typeof body === 'string' ? (body.endsWith('\n') ? body : `${body}\n`) : `${JSON.stringify(body, null, 2)}\n`;
        res.writeHead(status, { ...headers, 'content-type': contentType ?? (typeof body === 'string' ? 'text/plain' : 'application/json') });
        res.end(text);
      });
  }

  /** `?refresh=<seconds>` (0: never) overrides the reload interval. */
  private statusPage(url: URL): Reply {
    const { cache, registry, pipeline, reporter, tracker, source } = this.deps;
    const refresh = Number(url.searchParams.get('refresh') ?? DEFAULT_REFRESH_SECONDS);
    const view = pipeline.current;
    const proxies = registry.list();
    const groupKeys = new Set([...cache.groupKeys(), ...proxies.flatMap((p) => (p.group ? [p.group.key] : []))]);
    const body = renderStatusPage({
      now: Date.now(),
      refreshSeconds: Number.isInteger(refresh) && refresh >= 0 && refresh <= 3600 ? refresh : DEFAULT_REFRESH_SECONDS,
      ready: cache.ready,
      source: { name: source?.name ?? 'unknown', watchRestarts: source?.watchRestarts, problems: view.sourceProblems },
      proxies,
      nacks: new Map([...groupKeys].map((key) => [key, registry.groupNacks(key)])),
      virtualServices: reporter.current(),
      totalBuilds: view.builds,
      builds: this.builds,
      buildErrors: [...view.buildErrors.values()].map((e) => ({ group: e.group.key, message: e.message })),
      changes: tracker?.list(),
      streamErrors: registry.streamErrors(),
    });
    return {
      status: 200,
      body,
      contentType: 'text/html; charset=utf-8',
      headers: { 'content-security-policy': STATUS_PAGE_CSP, 'x-content-type-options': 'nosniff', 'cache-control': 'no-store' },
    };
  }

  private syncz(): unknown {
    return this.deps.registry.list().map((p) => ({
      node: p.nodeId,
      stream: p.streamId,
      mode: p.mode,
      peer: p.peer,
      group: p.group?.key,
      synced: p.synced,
      types: Object.fromEntries([...p.types].map(([t, s]) => [shortTypeName(t), s])),
    }));
  }

  /** `node` is a group key (`ns/k=v,...`) or a connected proxy's node id. */
  private configDump(node: string): { status: number; body: unknown } {
    const groupKey = this.deps.cache.getSnapshot(node) ? node : this.deps.registry.list().find((p) => p.nodeId === node)?.group?.key;
    const snapshot = groupKey ? this.deps.cache.getSnapshot(groupKey) : undefined;
    if (!groupKey || !snapshot) {
      return { status: 404, body: `no configuration for node ${JSON.stringify(node)}; known groups: ${this.deps.cache.groupKeys().join(', ') || '(none)'}` };
    }
    const types: Record<string, unknown> = {};
    for (const typeUrl of snapshot.typeUrls()) {
      const set = snapshot.resources(typeUrl);
      types[shortTypeName(typeUrl)] = {
        version: set.version,
        resources: set.names.map((n) => {
          const r = set.get(n);
          return r && { name: n, version: r.version, resource: r.source };
        }),
      };
    }
    return { status: 200, body: { group: groupKey, nacks: this.deps.registry.groupNacks(groupKey).map((n) => ({ ...n, nodeIds: [...n.nodeIds] })), types } };
  }
}

export function splitHostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0';
  const port = Number(address.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`not a host:port address: ${address}`);
  return { host, port };
}
