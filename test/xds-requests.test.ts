import { describe, expect, it } from 'vitest';
import { decodeDeltaRequest, decodeSotwRequest, encodeDeltaRequest, encodeSotwRequest, isMalformed } from '../src/xds/requests.js';

// What Envoy sends on every request unless its bootstrap sets set_node_on_first_message_only:
// its whole node, build version and every compiled-in extension included.
const envoyNode = {
  id: 'default/ingress-0',
  cluster: 'ingress',
  metadata: { fields: { namespace: { stringValue: 'media' }, labels: { structValue: { fields: { app: { stringValue: 'envoy-ingress' } } } } } },
  user_agent_name: 'envoy',
  user_agent_build_version: { version: { major_number: 1, minor_number: 40 }, metadata: { fields: { 'revision.status': { stringValue: 'Clean' } } } },
  extensions: Array.from({ length: 300 }, (_, i) => ({ name: `envoy.filters.x${i}`, category: 'envoy.filters.network', type_urls: [`type.googleapis.com/x${i}`] })),
  client_features: ['envoy.lb.does_not_support_overprovisioning'],
};
const identity = { id: 'default/ingress-0', cluster: 'ingress', metadata: { namespace: 'media', labels: { app: 'envoy-ingress' } } };

describe('request decoding', () => {
  it('reads the node identity and every request field from a request carrying Envoy\'s whole node (SotW)', () => {
    const bytes = encodeSotwRequest({ node: envoyNode, version_info: 'v1', resource_names: ['a', 'b'], type_url: 'type.googleapis.com/envoy.config.cluster.v3.Cluster', response_nonce: '7', error_detail: { code: 3, message: 'rejected' } });
    expect(decodeSotwRequest(bytes)).toEqual({ node: identity, versionInfo: 'v1', resourceNames: ['a', 'b'], typeUrl: 'type.googleapis.com/envoy.config.cluster.v3.Cluster', responseNonce: '7', errorDetail: { message: 'rejected' }, size: bytes.length });
  });

  it('reads the node identity and every request field from a request carrying Envoy\'s whole node (delta)', () => {
    const bytes = encodeDeltaRequest({ node: envoyNode, type_url: 'type.googleapis.com/envoy.config.listener.v3.Listener', resource_names_subscribe: ['*'], resource_names_unsubscribe: ['old'], initial_resource_versions: { l1: 'abc' }, response_nonce: '9' });
    expect(decodeDeltaRequest(bytes)).toEqual({ node: identity, typeUrl: 'type.googleapis.com/envoy.config.listener.v3.Listener', subscribe: ['*'], unsubscribe: ['old'], initialResourceVersions: { l1: 'abc' }, responseNonce: '9', errorDetail: undefined, size: bytes.length });
  });

  it('reports bytes that are not a request as malformed', () => {
    expect(isMalformed(decodeDeltaRequest(Buffer.from([0x0a, 0xff, 0xff, 0x01])))).toBe(true);
    expect(isMalformed(decodeSotwRequest(Buffer.from([0x12, 0x05, 0x01])))).toBe(true);
  });
});
