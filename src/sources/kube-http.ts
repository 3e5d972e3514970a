import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { REQUEST_TIMEOUT_MS, sameIdentity } from './kube-client.js';
import { bodyMessage } from './kube-errors.js';

/** An API server answer other than 2xx, shaped as client-node's ApiException (`code`, `body`) so callers and `explainKubeError` read both alike. */
export class KubeHttpError extends Error {
  readonly statusCode: number;
  constructor(
    readonly code: number,
    readonly body: string,
    method: string,
    path: string,
  ) {
    super(`${method} ${path}: HTTP ${code}${body ? `: ${messageOf(body)}` : ''}`);
    this.statusCode = code;
  }
}

/** The Status message of the answer; any other body, its start. */
function messageOf(body: string): string {
  const message = bodyMessage(body);
  return message !== undefined && message !== body ? message : body.slice(0, 300);
}

/** A request's body: JSON text and its content type (`application/json`, `application/merge-patch+json`). */
export interface RequestBody {
  readonly contentType: string;
  readonly data: string;
}

/** The Accept of a list, or of a watch's objects, with metadata only (PartialObjectMetadata). */
export const PARTIAL_METADATA_LIST = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1';
export const PARTIAL_METADATA = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1';

/** The content type of a JSON merge patch. */
export const MERGE_PATCH = 'application/merge-patch+json';

/** `data` as a JSON request body. */
export function json(data: unknown, contentType = 'application/json'): RequestBody {
  return { contentType, data: JSON.stringify(data) };
}

/** How long the credentials and TLS identity read from the kubeconfig are used before they are read again (a rotated token file, an exec plugin's new token). */
const CREDENTIALS_TTL_MS = 10_000;

interface Prepared {
  readonly at: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly tls: https.AgentOptions;
  /** Keep-alive connections for requests. */
  readonly agent: http.Agent;
  /** Connections for watches: each holds its connection for as long as it runs, so they do not take the request pool's. */
  readonly watchAgent: http.Agent;
}

/**
 * The two requests vsxds makes on every VirtualService change, the status merge patch and the
 * watch, and the replica status's ConfigMap requests, straight on node:https with the
 * kubeconfig's credentials. client-node's generated
 * client routes each request through its serializer, an Observable middleware chain, node-fetch's
 * Headers and Body streams, and parses every answer into typed models; a watch through node-fetch
 * and readline. Under one VirtualService per call (three watch events and one status write per
 * call), those layers were over half of vsxds's main-thread CPU per call. The leader election's
 * Lease requests (one every retry period on every replica) go through it too. The informers'
 * lists and Events stay on client-node.
 *
 * Credentials come from client-node's KubeConfig (tokens, token files, client certificates, exec
 * plugins), read again every CREDENTIALS_TTL_MS and after a 401. A kubeconfig with a proxy is
 * served through the agent client-node makes for it.
 */
export class KubeHttp {
  private readonly base: URL;
  private readonly transport: typeof https | typeof http;
  private prepared?: Prepared;
  private preparing?: Promise<Prepared>;

  constructor(
    private readonly kc: KubeConfig,
    private readonly timeoutMs = REQUEST_TIMEOUT_MS,
  ) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('No active cluster!');
    this.base = new URL(cluster.server);
    this.transport = this.base.protocol === 'http:' ? http : https;
  }

  /**
   * A request whose body is read whole; rejects with KubeHttpError on a non-2xx answer, or on no
   * answer within `timeoutMs` (the constructor's, unless given).
   */
  async request(method: string, path: string, body?: RequestBody, accept = 'application/json', timeoutMs = this.timeoutMs): Promise<string> {
    let p = await this.credentials();
    try {
      return await this.once(p, method, path, body, accept, timeoutMs);
    } catch (err) {
      if (!(err instanceof KubeHttpError) || err.code !== 401) throw err;
      // A token that expired or was rotated since it was read: read it again, once.
      this.expireCredentials();
      p = await this.credentials();
      return this.once(p, method, path, body, accept, timeoutMs);
    }
  }

  /**
   * A watch: `onLine` gets each line of the answer (one JSON watch event each), `done` is called
   * once when the watch ends, with the error if it failed (a KubeHttpError for a non-200 answer),
   * and not after `abort`. `answered` resolves once the API server answered, or the watch ended.
   * `accept` asks for another form of the objects (metadata only: PARTIAL_METADATA).
   */
  watch(path: string, onLine: (line: string) => void, done: (err: unknown) => void, accept = 'application/json'): { readonly abort: () => void; readonly answered: Promise<void> } {
    let ended = false;
    let req: http.ClientRequest | undefined;
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    const end = (err: unknown, tell = true): void => {
      if (ended) return;
      ended = true;
      req?.destroy();
      answer();
      if (tell) done(err);
    };
    const start = (p: Prepared): void => {
      if (ended) return;
      const r = this.transport.request(this.url(path), { method: 'GET', agent: p.watchAgent, headers: { ...p.headers, Accept: accept } }, (res) => {
        answer();
        res.setEncoding('utf8');
        if (res.statusCode !== 200) {
          let text = '';
          res.on('data', (d: string) => (text += d));
          res.on('end', () => {
            if (res.statusCode === 401) this.expireCredentials();
            end(new KubeHttpError(res.statusCode ?? 0, text, 'GET', path));
          });
          res.on('error', end);
          return;
        }
        let partial = '';
        res.on('data', (chunk: string) => {
          let nl = chunk.indexOf('\n');
          if (nl < 0) {
            partial += chunk;
            return;
          }
          let line = partial + chunk.slice(0, nl);
          let from = nl + 1;
          for (;;) {
            if (line.length > 0) onLine(line);
            if (ended) return;
            nl = chunk.indexOf('\n', from);
            if (nl < 0) break;
            line = chunk.slice(from, nl);
            from = nl + 1;
          }
          partial = chunk.slice(from);
        });
        res.on('end', () => end(null));
        res.on('close', () => end(null));
        res.on('error', end);
      });
      req = r;
      r.on('error', end);
      r.end();
    };
    this.credentials().then(start, end);
    return { abort: () => end(null, false), answered };
  }

  private url(path: string): URL {
    return new URL(path, this.base);
  }

  private once(p: Prepared, method: string, path: string, body: RequestBody | undefined, accept: string, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { ...p.headers, Accept: accept };
      if (body) {
        headers['Content-Type'] = body.contentType;
        headers['Content-Length'] = Buffer.byteLength(body.data);
      }
      const req = this.transport.request(this.url(path), { method, agent: p.agent, headers }, (res) => {
        res.setEncoding('utf8');
        let text = '';
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          clearTimeout(timer);
          const code = res.statusCode ?? 0;
          if (code >= 200 && code < 300) resolve(text);
          else reject(new KubeHttpError(code, text, method, path));
        });
        res.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      // A request on a connection that went silent without closing (a half-open connection)
      // would wait for the kernel's ~15 minutes of retransmissions: destroying it closes that
      // connection; the caller retries on a new one.
      const timer = setTimeout(() => req.destroy(new Error(`no answer from the API server within ${timeoutMs} ms (${method} ${path})`)), timeoutMs);
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.end(body?.data);
    });
  }

  /** The next request reads the credentials again; the connections stay while the TLS identity does. */
  private expireCredentials(): void {
    if (this.prepared) this.prepared = { ...this.prepared, at: -Infinity };
  }

  private async credentials(): Promise<Prepared> {
    const p = this.prepared;
    if (p && Date.now() - p.at < CREDENTIALS_TTL_MS) return p;
    this.preparing ??= this.read().finally(() => (this.preparing = undefined));
    return this.preparing;
  }

  private async read(): Promise<Prepared> {
    const opts: https.RequestOptions = {};
    await this.kc.applyToHTTPSOptions(opts);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.headers ?? {})) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : String(v);
    if (opts.auth) headers['Authorization'] = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    const made = opts.agent instanceof http.Agent ? opts.agent : undefined;
    const before = this.prepared;
    const tls = made instanceof https.Agent ? (made as https.Agent & { options: https.AgentOptions }).options : {};
    let agent: http.Agent;
    let watchAgent: http.Agent;
    if (made && made.constructor !== https.Agent && made.constructor !== http.Agent) {
      // A proxy agent from the kubeconfig's proxy-url: used as client-node made it.
      agent = made;
      watchAgent = made;
    } else if (before && sameIdentity(before.tls, tls)) {
      made?.destroy();
      agent = before.agent;
      watchAgent = before.watchAgent;
    } else {
      made?.destroy();
      before?.agent.destroy();
      const Agent = this.transport === https ? https.Agent : http.Agent;
      // An idle connection that stays silent this long is closed; it would be the next request's.
      agent = new Agent({ ...tls, keepAlive: true, maxSockets: 16, timeout: this.timeoutMs });
      watchAgent = new Agent({ ...tls, keepAlive: false });
    }
    this.prepared = { at: Date.now(), headers, tls, agent, watchAgent };
    return this.prepared;
  }

  /** Closes the idle connections. */
  destroy(): void {
    this.prepared?.agent.destroy();
  }
}
