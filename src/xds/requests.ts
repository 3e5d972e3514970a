import protobuf from 'protobufjs';
import { messageType, protoRoot, TO_OBJECT } from './protos.js';
import { structToJson, type NodeInfo } from './node-identity.js';

export interface RequestError {
  readonly message: string;
}

export interface SotwRequest {
  readonly node?: NodeInfo;
  readonly versionInfo: string;
  readonly resourceNames: readonly string[];
  readonly typeUrl: string;
  readonly responseNonce: string;
  readonly errorDetail?: RequestError;
  /** Encoded size in bytes, when decoded from the wire. */
  readonly size?: number;
}

export interface DeltaRequest {
  readonly node?: NodeInfo;
  readonly typeUrl: string;
  readonly subscribe: readonly string[];
  readonly unsubscribe: readonly string[];
  readonly initialResourceVersions: Readonly<Record<string, string>>;
  readonly responseNonce: string;
  readonly errorDetail?: RequestError;
  /** Encoded size in bytes, when decoded from the wire. */
  readonly size?: number;
}

/** What the deserializer hands the stream when the bytes are not a request: the stream ends with it. */
export interface MalformedRequest {
  readonly malformed: string;
  /** The request was larger than vsxds accepts (RESOURCE_EXHAUSTED, not INVALID_ARGUMENT). */
  readonly tooLarge?: boolean;
}

/** A decoder that refuses requests over `maxBytes` with a message naming the vsxds limit. */
export function limitedDecoder<R>(decode: (bytes: Buffer) => R | MalformedRequest, maxBytes: number): (bytes: Buffer) => R | MalformedRequest {
  return (bytes) =>
    bytes.length > maxBytes
      ? { malformed: `the request is ${bytes.length} bytes, more than the ${maxBytes} bytes vsxds accepts (--max-message-bytes)`, tooLarge: true }
      : decode(bytes);
}

export function isMalformed(r: unknown): r is MalformedRequest {
  return typeof r === 'object' && r !== null && 'malformed' in r;
}

const OPTIONS = { ...TO_OBJECT, arrays: true, objects: true };

/**
 * The request messages as vsxds reads them: the same field numbers, but a node of only the
 * fields vsxds uses (id, cluster, metadata). Envoy sends its whole node on every request unless
 * the bootstrap sets `set_node_on_first_message_only`, and the node carries Envoy's build and
 * every extension compiled in (hundreds of entries, kilobytes): decoding that into objects on
 * every ACK was most of what an ACK cost. Fields a type leaves out are skipped by their length.
 */
let requestTypes: { sotw: protobuf.Type; delta: protobuf.Type } | undefined;

function slimRequestTypes(): { sotw: protobuf.Type; delta: protobuf.Type } {
  if (requestTypes) return requestTypes;
  const root = protoRoot();
  const ns = root.define('vsxds.requests');
  const node = new protobuf.Type('NodeIdentity')
    .add(new protobuf.Field('id', 1, 'string'))
    .add(new protobuf.Field('cluster', 2, 'string'))
    .add(new protobuf.Field('metadata', 3, 'google.protobuf.Struct'));
  const sotw = new protobuf.Type('DiscoveryRequest')
    .add(new protobuf.Field('version_info', 1, 'string'))
    .add(new protobuf.Field('node', 2, 'NodeIdentity'))
    .add(new protobuf.Field('resource_names', 3, 'string', 'repeated'))
    .add(new protobuf.Field('type_url', 4, 'string'))
    .add(new protobuf.Field('response_nonce', 5, 'string'))
    .add(new protobuf.Field('error_detail', 6, 'google.rpc.Status'));
  const delta = new protobuf.Type('DeltaDiscoveryRequest')
    .add(new protobuf.Field('node', 1, 'NodeIdentity'))
    .add(new protobuf.Field('type_url', 2, 'string'))
    .add(new protobuf.Field('resource_names_subscribe', 3, 'string', 'repeated'))
    .add(new protobuf.Field('resource_names_unsubscribe', 4, 'string', 'repeated'))
    .add(new protobuf.MapField('initial_resource_versions', 5, 'string', 'string'))
    .add(new protobuf.Field('response_nonce', 6, 'string'))
    .add(new protobuf.Field('error_detail', 7, 'google.rpc.Status'));
  ns.add(node).add(sotw).add(delta);
  ns.resolveAll();
  requestTypes = { sotw, delta };
  return requestTypes;
}

export function decodeSotwRequest(bytes: Buffer): SotwRequest | MalformedRequest {
  try {
    const type = slimRequestTypes().sotw;
    const m = type.toObject(type.decode(bytes), OPTIONS) as Record<string, any>;
    return {
      node: m['node'] ? nodeInfo(m['node']) : undefined,
      versionInfo: m['version_info'] ?? '',
      resourceNames: m['resource_names'] ?? [],
      typeUrl: m['type_url'] ?? '',
      responseNonce: m['response_nonce'] ?? '',
      errorDetail: errorDetail(m['error_detail']),
      size: bytes.length,
    };
  } catch (err) {
    return { malformed: `malformed DiscoveryRequest: ${(err as Error).message}` };
  }
}

export function decodeDeltaRequest(bytes: Buffer): DeltaRequest | MalformedRequest {
  try {
    const type = slimRequestTypes().delta;
    const m = type.toObject(type.decode(bytes), OPTIONS) as Record<string, any>;
    return {
      node: m['node'] ? nodeInfo(m['node']) : undefined,
      typeUrl: m['type_url'] ?? '',
      subscribe: m['resource_names_subscribe'] ?? [],
      unsubscribe: m['resource_names_unsubscribe'] ?? [],
      initialResourceVersions: m['initial_resource_versions'] ?? {},
      responseNonce: m['response_nonce'] ?? '',
      errorDetail: errorDetail(m['error_detail']),
      size: bytes.length,
    };
  } catch (err) {
    return { malformed: `malformed DeltaDiscoveryRequest: ${(err as Error).message}` };
  }
}

function nodeInfo(node: Record<string, any>): NodeInfo {
  return {
    id: node['id'] ?? '',
    cluster: node['cluster'] ?? '',
    metadata: node['metadata'] ? structToJson(node['metadata']) : undefined,
  };
}

/** A NACK is a request with `error_detail` set; protobuf cannot tell an empty Status from none, so code 0 and no message is an ACK. */
function errorDetail(status: Record<string, any> | undefined): RequestError | undefined {
  if (!status) return undefined;
  const code = Number(status['code'] ?? 0);
  const message = String(status['message'] ?? '');
  if (code === 0 && message === '') return undefined;
  return { message: message || `error code ${code}` };
}

/** Requests are only decoded here; tests and tools encode them with this. */
export function encodeSotwRequest(req: Record<string, unknown>): Buffer {
  const type = messageType('envoy.service.discovery.v3.DiscoveryRequest');
  return Buffer.from(type.encode(type.fromObject(req)).finish());
}

export function encodeDeltaRequest(req: Record<string, unknown>): Buffer {
  const type = messageType('envoy.service.discovery.v3.DeltaDiscoveryRequest');
  return Buffer.from(type.encode(type.fromObject(req)).finish());
}
