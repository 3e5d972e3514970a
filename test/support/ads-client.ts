import { credentials, makeGenericClientConstructor, type ChannelCredentials, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { ADS_SERVICE } from '../../src/xds/ads-server.js';
import { messageType, TO_OBJECT } from '../../src/xds/protos.js';
import { decodeResource } from '../../src/xds/encode.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../../src/xds/type-urls.js';

/** A decoded DiscoveryResponse / DeltaDiscoveryResponse, with resources decoded by type. */
export interface Response {
  version_info?: string;
  system_version_info?: string;
  type_url: string;
  nonce: string;
  resources: Array<{ name: string; version?: string; value: Record<string, any> }>;
  removed_resources: string[];
  raw: Buffer;
}

// Same service, but a Buffer passes through unencoded so tests can send bytes that are not a request.
const passBuffers = (encode: (r: any) => Buffer) => (r: any) => (Buffer.isBuffer(r) ? r : encode(r));
const AdsClient = makeGenericClientConstructor(
  Object.fromEntries(
    Object.entries(ADS_SERVICE).map(([k, m]) => [k, { ...m, requestSerialize: passBuffers(m.requestSerialize) }]),
  ),
  'AggregatedDiscoveryService',
);

/**
 * A bare ADS client for protocol tests: it sends exactly the requests a test writes and records
 * every response, so tests can check what an xDS client library would hide.
 */
export class RawAdsStream {
  readonly responses: Response[] = [];
  private waiters: Array<() => void> = [];
  private readonly call: ClientDuplexStream<Record<string, unknown>, Buffer>;
  private readonly client: InstanceType<typeof AdsClient>;
  ended?: { code: number; details: string };

  constructor(address: string, readonly mode: 'sotw' | 'delta', creds: ChannelCredentials = credentials.createInsecure(), options: Record<string, unknown> = {}) {
    this.client = new AdsClient(address, creds, options);
    const method = mode === 'sotw' ? 'StreamAggregatedResources' : 'DeltaAggregatedResources';
    this.call = (this.client as any)[method]();
    this.call.on('data', (bytes: Buffer) => {
      this.responses.push(decodeResponse(bytes, mode));
      this.wake();
    });
    this.call.on('error', (err: ServiceError) => {
      this.ended = { code: err.code, details: err.details };
      this.wake();
    });
    this.call.on('status', (s) => {
      this.ended ??= { code: s.code, details: s.details };
      this.wake();
    });
  }

  /** Responses handed to the test so far (see next). */
  private read = 0;

  send(request: Record<string, unknown>): void {
    this.call.write(request);
  }

  /** Writes bytes that are not a valid request. */
  sendRaw(bytes: Buffer): void {
    this.call.write(bytes as unknown as Record<string, unknown>);
  }

  /** The n-th response (0-based), waiting for it up to `timeoutMs`. */
  async response(n: number, timeoutMs = 5_000): Promise<Response> {
    this.read = Math.max(this.read, n + 1);
    await this.until(() => this.responses.length > n, timeoutMs, `response #${n}`);
    return this.responses[n] as Response;
  }

  /**
   * The first response the test has not read yet (with next or response). One that arrived while
   * the test was still making the change counts: vsxds may answer before kubectl returns.
   */
  next(timeoutMs = 5_000): Promise<Response> {
    return this.response(this.read, timeoutMs);
  }

  async end(timeoutMs = 5_000): Promise<{ code: number; details: string }> {
    await this.until(() => this.ended !== undefined, timeoutMs, 'stream end');
    return this.ended as { code: number; details: string };
  }

  async until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what} (${this.responses.length} responses so far, ended: ${JSON.stringify(this.ended)})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 20));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** ACK the response (SotW: version and nonce; delta: nonce). */
  ack(r: Response, extra: Record<string, unknown> = {}): void {
    if (this.mode === 'sotw') {
      this.send({ type_url: r.type_url, version_info: r.version_info, response_nonce: r.nonce, ...extra });
    } else {
      this.send({ type_url: r.type_url, response_nonce: r.nonce, ...extra });
    }
  }

  nack(r: Response, message: string, previousVersion = '', extra: Record<string, unknown> = {}): void {
    const error_detail = { code: 3, message };
    if (this.mode === 'sotw') {
      this.send({ type_url: r.type_url, version_info: previousVersion, response_nonce: r.nonce, error_detail, ...extra });
    } else {
      this.send({ type_url: r.type_url, response_nonce: r.nonce, error_detail, ...extra });
    }
  }

  /**
   * Subscribes as Envoy does and ACKs what it gets: wildcard CDS and LDS, then EDS for `edsNames`
   * (default: the clusters received). Delta requests may carry `initial` versions per type.
   */
  async syncLikeEnvoy(
    node: Record<string, unknown>,
    opts: { edsNames?: string[]; initial?: Record<string, Record<string, string>>; timeoutMs?: number } = {},
  ): Promise<{ cds: Response; eds: Response; lds: Response }> {
    const initial = (typeUrl: string) => (this.mode === 'delta' ? { initial_resource_versions: opts.initial?.[typeUrl] ?? {} } : {});
    this.send({ node, type_url: CLUSTER_TYPE, ...initial(CLUSTER_TYPE) });
    this.send({ type_url: LISTENER_TYPE, ...initial(LISTENER_TYPE) });
    const cds = await this.next(opts.timeoutMs);
    const names = opts.edsNames ?? cds.resources.map((r) => r.name);
    this.send(
      this.mode === 'sotw'
        ? { type_url: ENDPOINT_TYPE, resource_names: names }
        : { type_url: ENDPOINT_TYPE, resource_names_subscribe: names, ...initial(ENDPOINT_TYPE) },
    );
    this.ack(cds);
    const eds = await this.next();
    // A SotW request always repeats the subscription; a delta ACK changes nothing.
    this.ack(eds, this.mode === 'sotw' ? { resource_names: names } : {});
    const lds = await this.next();
    this.ack(lds);
    return { cds, eds, lds };
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

export function decodeResponse(bytes: Buffer, mode: 'sotw' | 'delta'): Response {
  const typeName = mode === 'sotw' ? 'envoy.service.discovery.v3.DiscoveryResponse' : 'envoy.service.discovery.v3.DeltaDiscoveryResponse';
  const type = messageType(typeName);
  const m = type.toObject(type.decode(bytes), { ...TO_OBJECT, arrays: true }) as Record<string, any>;
  const typeUrl: string = m['type_url'];
  const resources =
    mode === 'sotw'
      ? (m['resources'] as any[]).map((any) => {
          const value = decodeResource(any.type_url, any.value, TO_OBJECT);
          return { name: String(value['name'] ?? value['cluster_name']), value };
        })
      : (m['resources'] as any[]).map((r) => ({
          name: r.name as string,
          version: r.version as string,
          value: decodeResource(r.resource.type_url, r.resource.value, TO_OBJECT),
        }));
  return {
    version_info: m['version_info'],
    system_version_info: m['system_version_info'],
    type_url: typeUrl,
    nonce: m['nonce'],
    resources,
    removed_resources: m['removed_resources'] ?? [],
    raw: bytes,
  };
}

export function nodeFor(namespace: string, labels: Record<string, string>, id = `${namespace}/proxy`): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(labels)) fields[k] = { stringValue: v };
  return {
    id,
    cluster: 'test',
    metadata: { fields: { namespace: { stringValue: namespace }, labels: { structValue: { fields } } } },
  };
}
