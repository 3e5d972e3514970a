import { API_VERSION, PLURAL, GROUP } from '../model/types.js';

/** A Kubernetes API failure put in words an operator can act on, with a stable kind for de-duplication. */
export interface ExplainedError {
  readonly kind: string;
  readonly message: string;
}

export function explainKubeError(err: unknown, what: string, server: string): ExplainedError {
  const e = err as { code?: number | string; statusCode?: number; body?: unknown; message?: string; cause?: { code?: string } };
  const status = typeof e.code === 'number' ? e.code : e.statusCode;
  const netCode = typeof e.code === 'string' ? e.code : e.cause?.code;
  if (status === 404 && what === PLURAL) {
    return {
      kind: 'crd-missing',
      message: `the VirtualService CRD (${API_VERSION}) is not installed in the cluster at ${server}: apply crds/virtualservice.yaml (kubectl apply -f crds/); retrying`,
    };
  }
  if (status === 401) {
    return { kind: 'unauthorized', message: `the API server at ${server} rejected vsxds's credentials (401): check the kubeconfig or service account token; retrying` };
  }
  if (status === 403) {
    const resource = what === PLURAL ? `${PLURAL}.${GROUP}` : what;
    return {
      kind: `forbidden-${what}`,
      message: `vsxds may not list/watch ${resource} (403 Forbidden): bind the ClusterRole in deploy/ (get, list, watch on ${resource}) to its service account; retrying. API server said: ${bodyMessage(e.body) ?? e.message}`,
    };
  }
  if (netCode) {
    return { kind: `network-${netCode}`, message: `cannot reach the API server at ${server} (${netCode}); retrying` };
  }
  return { kind: `other-${status ?? 'unknown'}`, message: `${what}: ${e.message ?? String(err)}${status ? ` (HTTP ${status})` : ''}; retrying` };
}

/** The `message` of an API server's Status body (JSON text or parsed); a body that is not JSON as it is. */
export function bodyMessage(body: unknown): string | undefined {
  if (typeof body === 'string') {
    try {
      return (JSON.parse(body) as { message?: string }).message;
    } catch {
      return body;
    }
  }
  return (body as { message?: string } | undefined)?.message;
}

/**
 * Exponential backoff with a cap and jitter; `attempt` starts at 0. The delay is drawn from the
 * upper half of the exponential step ("equal jitter"), so replicas that failed together (an API
 * server restart) do not retry together, and none retries sooner than half the step.
 */
export function backoffMs(attempt: number, baseMs = 500, capMs = 30_000, random: () => number = Math.random): number {
  const step = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 16));
  return Math.round(step / 2 + random() * (step / 2));
}
