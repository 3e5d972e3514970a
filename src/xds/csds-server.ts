import { Metadata, status as GrpcStatus, type ServerDuplexStream, type ServerUnaryCall, type ServiceDefinition, type sendUnaryData } from '@grpc/grpc-js';
import type { Subscription } from 'rxjs';
import { matchNode, resourceStatuses, streamView, UnsupportedMatcher, type ResourceStatus, type TypeTimes } from './client-status.js';
import type { NodeInfo } from './node-identity.js';
import { messageType, TO_OBJECT } from './protos.js';
import type { ProxyInfo, ProxyStatusRegistry } from './status-registry.js';

const SERVICE = '/envoy.service.status.v3.ClientStatusDiscoveryService';
const REQUEST = 'envoy.service.status.v3.ClientStatusRequest';
const RESPONSE = 'envoy.service.status.v3.ClientStatusResponse';

/** Initial metadata of every CSDS answer: the replica that answers (ClientStatusResponse has no field for it). */
export const REPLICA_HEADER = 'vsxds-replica';

export interface ClientStatusRequest {
  readonly node_matchers?: Record<string, any>[];
  readonly exclude_resource_contents?: boolean;
  /** Set instead when the bytes are not a ClientStatusRequest. */
  readonly malformed?: string;
}

function decodeRequest(bytes: Buffer): ClientStatusRequest {
  try {
    const type = messageType(REQUEST);
    return type.toObject(type.decode(bytes), TO_OBJECT) as ClientStatusRequest;
  } catch (err) {
    return { malformed: `not a ClientStatusRequest: ${(err as Error).message}` };
  }
}

function encodeMessage(name: string) {
  return (value: Record<string, unknown>): Buffer => {
    const type = messageType(name);
    return Buffer.from(type.encode(type.fromObject(value)).finish());
  };
}

function decodeMessage(name: string) {
  return (bytes: Buffer): Record<string, any> => {
    const type = messageType(name);
    return type.toObject(type.decode(bytes), TO_OBJECT);
  };
}

export const CSDS_SERVICE: ServiceDefinition = {
  StreamClientStatus: {
    path: `${SERVICE}/StreamClientStatus`,
    requestStream: true,
    responseStream: true,
    requestSerialize: encodeMessage(REQUEST),
    requestDeserialize: decodeRequest,
    responseSerialize: encodeMessage(RESPONSE),
    responseDeserialize: decodeMessage(RESPONSE),
  },
  FetchClientStatus: {
    path: `${SERVICE}/FetchClientStatus`,
    requestStream: false,
    responseStream: false,
    requestSerialize: encodeMessage(REQUEST),
    requestDeserialize: decodeRequest,
    responseSerialize: encodeMessage(RESPONSE),
    responseDeserialize: decodeMessage(RESPONSE),
  },
};

/**
 * The Client Status Discovery Service on the xDS port: for each connected proxy (or those a
 * request's node matchers select, any of them), its node, its node group as `client_scope`, and
 * per resource a GenericXdsConfig (see resourceStatuses). The answering replica is named in the
 * `vsxds-replica` initial metadata.
 */
export class ClientStatusService {
  private readonly times = new WeakMap<ProxyInfo, Map<string, TypeTimes>>();
  private readonly subscription: Subscription;

  constructor(
    private readonly registry: ProxyStatusRegistry,
    readonly replica: string,
  ) {
    this.subscription = registry.events$.subscribe((e) => {
      if (e.kind !== 'ack' && e.kind !== 'nack') return;
      let perType = this.times.get(e.proxy);
      if (!perType) this.times.set(e.proxy, (perType = new Map()));
      let t = perType.get(e.typeUrl);
      if (!t) perType.set(e.typeUrl, (t = {}));
      if (e.kind === 'ack') t.ackedAt = Date.now();
      else t.nackedAt = Date.now();
    });
  }

  stop(): void {
    this.subscription.unsubscribe();
  }

  get handlers() {
    return {
      StreamClientStatus: (call: ServerDuplexStream<ClientStatusRequest, Record<string, unknown>>) => {
        call.sendMetadata(this.metadata());
        call.on('data', (req: ClientStatusRequest) => {
          const answer = this.answer(req);
          if ('error' in answer) call.emit('error', answer.error);
          else call.write(answer.response);
        });
        call.on('end', () => call.end());
        call.on('error', () => undefined);
      },
      FetchClientStatus: (call: ServerUnaryCall<ClientStatusRequest, Record<string, unknown>>, callback: sendUnaryData<Record<string, unknown>>) => {
        call.sendMetadata(this.metadata());
        const answer = this.answer(call.request);
        if ('error' in answer) callback(answer.error);
        else callback(null, answer.response);
      },
    };
  }

  private metadata(): Metadata {
    const md = new Metadata();
    md.set(REPLICA_HEADER, this.replica);
    return md;
  }

  private answer(req: ClientStatusRequest): { response: Record<string, unknown> } | { error: { code: GrpcStatus; details: string } } {
    if (req.malformed) return { error: { code: GrpcStatus.INVALID_ARGUMENT, details: req.malformed } };
    try {
      return { response: this.response(req) };
    } catch (err) {
      const code = err instanceof UnsupportedMatcher || err instanceof SyntaxError ? GrpcStatus.INVALID_ARGUMENT : GrpcStatus.INTERNAL;
      return { error: { code, details: (err as Error).message } };
    }
  }

  /** The ClientStatusResponse (as a plain object for protobufjs) for one request. */
  response(req: ClientStatusRequest): Record<string, unknown> {
    const matchers = req.node_matchers ?? [];
    const config: Record<string, unknown>[] = [];
    const proxies = this.registry.list().sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : a.streamId - b.streamId));
    for (const proxy of proxies) {
      const view = streamView(proxy);
      const node = view?.node ?? { id: proxy.nodeId };
      if (matchers.length > 0 && !matchers.some((m) => matchNode(m, node))) continue;
      const statuses = view ? resourceStatuses(proxy, view, this.times.get(proxy) ?? new Map()) : [];
      config.push({
        node: nodeMessage(node),
        client_scope: proxy.group?.key ?? '',
        generic_xds_configs: statuses.map((s) => genericXdsConfig(s, req.exclude_resource_contents === true)),
      });
    }
    return { config };
  }
}

function genericXdsConfig(s: ResourceStatus, excludeContents: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {
    type_url: s.typeUrl,
    name: s.name,
    version_info: s.version,
    config_status: s.configStatus,
    client_status: s.clientStatus,
  };
  if (s.lastUpdated !== undefined) out['last_updated'] = timestamp(s.lastUpdated);
  if (s.resource && !excludeContents) out['xds_config'] = messageType('google.protobuf.Any').decode(s.resource.any);
  if (s.error) {
    out['error_state'] = {
      details: s.error.message,
      version_info: s.error.version,
      ...(s.error.at === undefined ? {} : { last_update_attempt: timestamp(s.error.at) }),
    };
  }
  return out;
}

function timestamp(ms: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

function nodeMessage(node: NodeInfo): Record<string, unknown> {
  return { id: node.id, cluster: node.cluster ?? '', ...(node.metadata ? { metadata: jsonToStruct(node.metadata) } : {}) };
}

/** JSON → google.protobuf.Struct as protobufjs's bundled types name its fields. */
function jsonToStruct(json: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(json)) fields[k] = jsonToValue(v);
  return { fields };
}

function jsonToValue(v: unknown): Record<string, unknown> {
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(jsonToValue) } };
  if (v && typeof v === 'object') return { structValue: jsonToStruct(v as Record<string, unknown>) };
  return { nullValue: 0 };
}
