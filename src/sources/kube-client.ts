import https from 'node:https';
import { createConfiguration, ServerConfiguration, type Configuration, type KubeConfig, type RequestContext, type SecurityAuthentication } from '@kubernetes/client-node';

/** The agent options that decide who the connection is to and as whom. */
const IDENTITY_OPTIONS = ['ca', 'cert', 'key', 'pfx', 'passphrase', 'rejectUnauthorized', 'servername'] as const;

/** Whether two agents' options connect to the same server as the same client. */
export function sameIdentity(a: https.AgentOptions, b: https.AgentOptions): boolean {
  return IDENTITY_OPTIONS.every((k) => {
    const x = a[k] as unknown;
    const y = b[k] as unknown;
    if (Buffer.isBuffer(x) && Buffer.isBuffer(y)) return x.equals(y);
    return x === y || String(x) === String(y);
  });
}

/**
 * The kubeconfig's authentication, with one keep-alive agent for all requests. client-node makes
 * a new https.Agent for every request, so every status write and Event opened a connection and
 * did a TLS handshake: under one VirtualService per call, most of vsxds's CPU per call. The
 * agent is made again when the TLS identity changes (a rotated client certificate).
 */
class KeepAliveAuthentication implements SecurityAuthentication {
  private agent?: https.Agent;

  constructor(
    private readonly kc: KubeConfig,
    private readonly timeoutMs: number,
  ) {}

  getName(): string {
    return 'kubeconfig, keep-alive';
  }

  async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await this.kc.applySecurityAuthentication(context);
    const made = context.getAgent();
    // Proxy agents and plain HTTP are left as client-node made them.
    if (!(made instanceof https.Agent) || made.constructor !== https.Agent) return;
    const options = (made as https.Agent & { options: https.AgentOptions }).options;
    if (!this.agent || !sameIdentity((this.agent as https.Agent & { options: https.AgentOptions }).options, options)) {
      this.agent?.destroy();
      // An idle connection that stays silent this long is closed; it would be the next request's.
      this.agent = new https.Agent({ ...options, keepAlive: true, maxSockets: 16, timeout: this.timeoutMs });
    }
    made.destroy();
    context.setAgent(this.agent);
    // A request on a connection that went silent without closing (a half-open connection, an
    // API server gone from under a load balancer) would wait for the kernel's ~15 minutes of
    // retransmissions, holding one of the pool's connections: after a few of those, every status
    // write queued behind them. Aborting it closes its connection; the caller retries on a new one.
    if (!context.getSignal()) context.setSignal(AbortSignal.timeout(this.timeoutMs));
  }
}

/**
 * How long a request to the API server may take before it is aborted: writes and reads of single
 * objects answer in milliseconds on a working API server.
 */
export const REQUEST_TIMEOUT_MS = 15_000;

/**
 * kc.makeApiClient, with connections kept between requests (see KeepAliveAuthentication) and each
 * request aborted after `timeoutMs` (lists of a large cluster need more than the default).
 */
export function makeApiClient<T>(kc: KubeConfig, apiClientType: new (config: Configuration) => T, timeoutMs = REQUEST_TIMEOUT_MS): T {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('No active cluster!');
  const config = createConfiguration({
    baseServer: new ServerConfiguration(cluster.server, {}),
    authMethods: { default: new KeepAliveAuthentication(kc, timeoutMs) },
  });
  return new apiClientType(config);
}

/**
 * The promise, or a rejection after `ms` (the request itself is not aborted: its answer, if it
 * ever comes, no longer counts), for a step of several requests that must not hold a loop.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer from the API server within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
