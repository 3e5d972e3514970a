export { AdsServer, ADS_SERVICE, type AdsServerOptions } from './ads-server.js';
export { SnapshotCache } from './snapshot-cache.js';
export { Snapshot, SnapshotConsistencyError, type EncodedResource, type ResourceInput, type ResourceRef, type SnapshotInput } from './snapshot.js';
export { ProxyStatusRegistry, type NackRecord, type ProxyEvent, type ProxyInfo, type TypeSyncState } from './status-registry.js';
export { nodeGroup, nodeReference, NodeIdentityError, type NodeGroup, type NodeInfo, type PodIdentity, type PodLookup } from './node-identity.js';
export { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, PUSH_ORDER, shortTypeName } from './type-urls.js';
export { encodeResource, decodeResource, ResourceEncodingError } from './encode.js';
export { PROTO_DIR, protoRoot, messageType, typeForUrl } from './protos.js';
