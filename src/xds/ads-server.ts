import { Server, ServerCredentials, status as GrpcStatus, type ServerDuplexStream, type ServiceDefinition } from '@grpc/grpc-js';
import { hostname } from 'node:os';
import type { NodeAuthMode } from './node-auth.js';
import pino, { type Logger } from 'pino';
import { ClientStatusService, CSDS_SERVICE } from './csds-server.js';
import type { StreamContext } from './ads-stream.js';
import { DeltaStream } from './delta-stream.js';
import type { NodeGrouping, PodLookup } from './node-identity.js';
import { decodeDeltaRequest, decodeSotwRequest, encodeDeltaRequest, encodeSotwRequest, limitedDecoder, type DeltaRequest, type MalformedRequest, type SotwRequest } from './requests.js';
import type { SnapshotCache } from './snapshot-cache.js';
import { ProxyStatusRegistry } from './status-registry.js';
import { SotwStream } from './sotw-stream.js';

const SERVICE = '/envoy.service.discovery.v3.AggregatedDiscoveryService';

/**
 * Responses are written as pre-assembled bytes (see wire.ts), so the response "serializer" is
 * the identity; requests are decoded into plain objects, or a MalformedRequest the stream
 * answers with INVALID_ARGUMENT.
 */
const identity = (b: Buffer): Buffer => b;

export const ADS_SERVICE: ServiceDefinition = {
  StreamAggregatedResources: {
    path: `${SERVICE}/StreamAggregatedResources`,
    requestStream: true,
    responseStream: true,
    requestSerialize: (r: Record<string, unknown>) => encodeSotwRequest(r),
    requestDeserialize: decodeSotwRequest,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
  DeltaAggregatedResources: {
    path: `${SERVICE}/DeltaAggregatedResources`,
    requestStream: true,
    responseStream: true,
    requestSerialize: (r: Record<string, unknown>) => encodeDeltaRequest(r),
    requestDeserialize: decodeDeltaRequest,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

export interface AdsServerOptions {
  readonly cache: SnapshotCache;
  readonly status?: ProxyStatusRegistry;
  readonly podLookup?: PodLookup;
  /** Which proxies share a snapshot (default: those of the same namespace and labels). */
  readonly grouping?: NodeGrouping;
  readonly logger?: Logger;
  /** Extra grpc-js server options (keepalive, ...). */
  readonly grpcOptions?: Record<string, unknown>;
  readonly limits?: Partial<AdsLimits>;
  readonly nodeAuth?: NodeAuthMode;
  /** This replica's name, in CSDS answers (default: the host name). */
  readonly replicaName?: string;
}

export interface AdsLimits {
  /** Concurrent ADS streams; one more is refused with RESOURCE_EXHAUSTED. */
  readonly maxStreams: number;
  /** Largest request accepted, in bytes. */
  readonly maxMessageBytes: number;
  /** Requests per second one stream may send (burst of the same size); 0 = unlimited. */
  readonly maxRequestsPerSecond: number;
  /** Resource names one stream may subscribe to, over all types (delta subscriptions accumulate). */
  readonly maxSubscribedNames: number;
  /** How long a stream whose pod is not known may wait for it to appear. */
  readonly identifyTimeoutMs: number;
  /** Requests, and their bytes, a stream may send before its proxy is identified. */
  readonly maxUnidentifiedRequests: number;
  readonly maxUnidentifiedBytes: number;
  /** Bytes of requests all unidentified streams together may hold. */
  readonly maxUnidentifiedBytesTotal: number;
  /**
   * How long a cluster (endpoints) that a replaced listener (cluster) referenced stays after the
   * replacement is ACKed, for replies still on their way through the old sessions; 0: none.
   */
  readonly removalDelayMs: number;
}

export const DEFAULT_LIMITS: AdsLimits = {
  maxStreams: 50_000,
  maxMessageBytes: 4 * 1024 * 1024,
  maxRequestsPerSecond: 200,
  maxSubscribedNames: 100_000,
  identifyTimeoutMs: 60_000,
  maxUnidentifiedRequests: 16,
  maxUnidentifiedBytes: 4 * 1024 * 1024,
  maxUnidentifiedBytesTotal: 64 * 1024 * 1024,
  removalDelayMs: 0,
};

/** The limits as the streams of one server take them (the unidentified streams' byte budget is shared). */
export function streamLimits(limits: AdsLimits): Pick<StreamContext, 'maxRequestsPerSecond' | 'maxSubscribedNames' | 'removalDelayMs' | 'unidentified'> {
  return {
    maxRequestsPerSecond: limits.maxRequestsPerSecond,
    maxSubscribedNames: limits.maxSubscribedNames,
    removalDelayMs: limits.removalDelayMs,
    unidentified: {
      maxRequests: limits.maxUnidentifiedRequests,
      maxBytes: limits.maxUnidentifiedBytes,
      timeoutMs: limits.identifyTimeoutMs,
      total: { used: 0, limit: limits.maxUnidentifiedBytesTotal },
    },
  };
}

/** TLS for the xDS port; with `clientCa`, clients must present a certificate it signed (mTLS). */
export interface AdsTls {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly clientCa?: Buffer;
}

export function adsCredentials(tls: AdsTls | undefined): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  return ServerCredentials.createSsl(tls.clientCa ?? null, [{ private_key: tls.key, cert_chain: tls.cert }], tls.clientCa !== undefined);
}

/** The ADS gRPC server: owns streams and protocol mechanics, asks the cache what to send. */
export class AdsServer {
  readonly status: ProxyStatusRegistry;
  private readonly server: Server;
  private readonly log: Logger;
  readonly limits: AdsLimits;
  private streams = 0;
  /** CSDS, served on the same port. */
  readonly clientStatus: ClientStatusService;

  constructor(private readonly options: AdsServerOptions) {
    this.status = options.status ?? new ProxyStatusRegistry();
    this.log = (options.logger ?? pino({ level: 'silent' })).child({ component: 'ads' });
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.server = new Server({
      // Envoy keeps ADS streams open for days; let keepalives detect dead peers.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 5_000,
      // vsxds refuses what is over its limit itself, naming it (see limitedDecoder); gRPC only
      // stops what is far over it before it is read whole.
      'grpc.max_receive_message_length': 2 * this.limits.maxMessageBytes,
      ...options.grpcOptions,
    });
    const ctx = {
      cache: options.cache,
      status: this.status,
      podLookup: options.podLookup,
      grouping: options.grouping,
      log: this.log,
      nodeAuth: options.nodeAuth ?? 'none',
      ...streamLimits(this.limits),
      onClose: () => {
        this.streams -= 1;
      },
    };
    const admit = (call: ServerDuplexStream<unknown, Buffer>): boolean => {
      if (this.streams < this.limits.maxStreams) {
        this.streams += 1;
        return true;
      }
      this.log.warn({ limit: this.limits.maxStreams, peer: call.getPeer() }, 'refusing ADS stream: concurrent stream limit reached');
      call.emit('error', { code: GrpcStatus.RESOURCE_EXHAUSTED, details: `vsxds serves at most ${this.limits.maxStreams} concurrent ADS streams (the stream limit)` });
      return false;
    };
    const service: ServiceDefinition = {
      StreamAggregatedResources: { ...ADS_SERVICE['StreamAggregatedResources'], requestDeserialize: limitedDecoder(decodeSotwRequest, this.limits.maxMessageBytes) },
      DeltaAggregatedResources: { ...ADS_SERVICE['DeltaAggregatedResources'], requestDeserialize: limitedDecoder(decodeDeltaRequest, this.limits.maxMessageBytes) },
    } as ServiceDefinition;
    this.server.addService(service, {
      StreamAggregatedResources: (call: ServerDuplexStream<SotwRequest | MalformedRequest, Buffer>) => {
        if (admit(call)) new SotwStream(call, ctx, 'sotw');
      },
      DeltaAggregatedResources: (call: ServerDuplexStream<DeltaRequest | MalformedRequest, Buffer>) => {
        if (admit(call)) new DeltaStream(call, ctx, 'delta');
      },
    });
    this.clientStatus = new ClientStatusService(this.status, options.replicaName ?? hostname());
    this.server.addService(CSDS_SERVICE, this.clientStatus.handlers);
  }

  /** Open ADS streams. */
  get streamCount(): number {
    return this.streams;
  }

  /** Binds `host:port` (port 0 picks a free one) and returns the bound port. */
  listen(address: string, credentials: ServerCredentials = ServerCredentials.createInsecure()): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.bindAsync(address, credentials, (err, port) => {
        if (err) reject(new Error(`cannot listen for xDS on ${address}: ${err.message}`));
        else {
          this.log.info({ address, port }, 'ADS server listening');
          resolve(port);
        }
      });
    });
  }

  /** Stops accepting streams; open streams end after `graceMs`, when Envoys reconnect elsewhere. */
  close(graceMs = 5_000): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      timer.unref();
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Ends every stream now. */
  forceClose(): void {
    this.server.forceShutdown();
  }
}
