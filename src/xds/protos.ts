import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { createRequire } from 'node:module';
import protobuf from 'protobufjs';

/** The vendored proto tree; two levels above both src/xds and dist/xds. */
export const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../protos');

const ENTRY_FILES = [
  'envoy/service/discovery/v3/discovery.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/udp/udp_proxy/v3/udp_proxy.proto',
  'envoy/extensions/filters/udp/udp_proxy/v3/route.proto',
  'envoy/extensions/access_loggers/stream/v3/stream.proto',
  'envoy/service/status/v3/csds.proto',
];

const DESCRIPTOR_PROTO = createRequire(import.meta.url).resolve('protobufjs/google/protobuf/descriptor.proto');

let cachedRoot: protobuf.Root | undefined;

/** One protobufjs Root over the vendored protos, loaded on first use. */
export function protoRoot(): protobuf.Root {
  if (cachedRoot) return cachedRoot;
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    // protobufjs bundles the well-known types except descriptor.proto, which it ships as a file.
    if (target === 'google/protobuf/descriptor.proto') return DESCRIPTOR_PROTO;
    if (target.startsWith('google/protobuf/')) return target;
    return path.isAbsolute(target) ? target : path.join(PROTO_DIR, target);
  };
  root.loadSync(ENTRY_FILES, { keepCase: true });
  root.resolveAll();
  cachedRoot = root;
  return root;
}

// protobufjs's lookupType searches the namespace tree on every call; decoding every request and
// encoding every resource looked the same few types up again and again.
const typesByName = new Map<string, protobuf.Type>();
const typesByUrl = new Map<string, protobuf.Type>();

export function messageType(fullName: string): protobuf.Type {
  let type = typesByName.get(fullName);
  if (!type) typesByName.set(fullName, (type = protoRoot().lookupType(fullName)));
  return type;
}

/** The message type that a type URL (type.googleapis.com/<full name>) names, or undefined. */
export function typeForUrl(typeUrl: string): protobuf.Type | undefined {
  const known = typesByUrl.get(typeUrl);
  if (known) return known;
  const slash = typeUrl.lastIndexOf('/');
  if (slash < 0) return undefined;
  let type: protobuf.Type;
  try {
    type = protoRoot().lookupType(typeUrl.slice(slash + 1));
  } catch {
    // Not cached: only URLs that name a type are, so the map stays as small as the proto tree.
    return undefined;
  }
  typesByUrl.set(typeUrl, type);
  return type;
}

/** Options for turning decoded messages into plain objects, shared by everything that inspects protos. */
export const TO_OBJECT: protobuf.IConversionOptions = {
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: false,
  oneofs: true,
};
