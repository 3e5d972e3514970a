import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XdsClient, Watcher } from '@grpc/grpc-js-xds/build/src/xds-client.js';
import { validateBootstrapConfig } from '@grpc/grpc-js-xds/build/src/xds-bootstrap.js';
import { ClusterResourceType } from '@grpc/grpc-js-xds/build/src/xds-resource-type/cluster-resource-type.js';
import { EndpointResourceType } from '@grpc/grpc-js-xds/build/src/xds-resource-type/endpoint-resource-type.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE } from '../src/xds/index.js';
import { startAds, type AdsHarness } from './support/ads-harness.js';
import { edsCluster, endpoints, snapshotInput } from './support/resources.js';
import { waitUntil } from './support/wait.js';

const GROUP = 'media/app=worker';

/** grpc-js-xds's own client: an independent implementation of the xDS client protocol. */
function newClient(address: string, nodeId: string): XdsClient {
  return new XdsClient(
    validateBootstrapConfig({
      xds_servers: [{ server_uri: address, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
      node: { id: nodeId, locality: {}, metadata: { namespace: 'media', labels: { app: 'worker' } } },
    }),
  );
}

interface Seen<T> {
  updates: T[];
  errors: string[];
  missing: number;
  watcher: Watcher<T>;
}

function watcher<T>(): Seen<T> {
  const seen: Seen<T> = {
    updates: [],
    errors: [],
    missing: 0,
    watcher: new Watcher<T>({
      onResourceChanged: (r: T) => seen.updates.push(r),
      onError: (s) => seen.errors.push(s.details),
      onResourceDoesNotExist: () => (seen.missing += 1),
    }),
  };
  return seen;
}


describe('grpc-js-xds XdsClient against vsxds', () => {
  let ads: AdsHarness;
  let client: XdsClient | undefined;

  beforeEach(async () => {
    ads = await startAds();
  });
  afterEach(async () => {
    // XdsClient has no close(); dropping the watches ends its stream.
    client = undefined;
    await ads.stop();
  });

  it('receives clusters and endpoints, follows updates, and ACKs them', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput({ clusters: [edsCluster('rtp')], endpoints: [endpoints('rtp', ['10.0.0.1'])] }));
    client = newClient(ads.address, 'media/worker-1');
    const cds = watcher<{ name: string; type: string }>();
    const eds = watcher<{ cluster_name: string; endpoints: any[] }>();
    ClusterResourceType.startWatch(client, 'rtp', cds.watcher);
    EndpointResourceType.startWatch(client, 'rtp', eds.watcher);
    await waitUntil(() => cds.updates.length > 0 && eds.updates.length > 0, 'first cluster and endpoints');
    expect(cds.updates[0]).toMatchObject({ name: 'rtp', type: 'EDS' });
    const address = (cla: any): string[] => cla.endpoints[0].lb_endpoints.map((e: any) => e.endpoint.address.socket_address.address);
    expect(address(eds.updates[0])).toEqual(['10.0.0.1']);

    const proxy = () => ads.server.status.list(GROUP)[0];
    await waitUntil(() => proxy()?.types.get(ENDPOINT_TYPE)?.acked !== undefined, 'EDS ACK');
    const firstEds = proxy()?.types.get(ENDPOINT_TYPE)?.acked;

    ads.cache.setSnapshot(GROUP, snapshotInput({ clusters: [edsCluster('rtp')], endpoints: [endpoints('rtp', ['10.0.0.1', '10.0.0.2'])] }));
    await waitUntil(() => eds.updates.length === 2, 'endpoint update');
    expect(address(eds.updates[1])).toEqual(['10.0.0.1', '10.0.0.2']);
    await waitUntil(() => proxy()?.types.get(ENDPOINT_TYPE)?.acked !== firstEds, 'ACK of the endpoint update');
    expect(proxy()?.types.get(ENDPOINT_TYPE)?.acked).toBe(proxy()?.types.get(ENDPOINT_TYPE)?.sent);
    expect(proxy()?.types.get(CLUSTER_TYPE)?.acked).toBe(proxy()?.types.get(CLUSTER_TYPE)?.sent);
    expect(cds.errors).toEqual([]);
    ClusterResourceType.cancelWatch(client, 'rtp', cds.watcher);
    EndpointResourceType.cancelWatch(client, 'rtp', eds.watcher);
  });

  it('records the NACK it produces for a Maglev cluster and does not re-send the rejected version', async () => {
    ads.cache.setSnapshot(GROUP, snapshotInput({ clusters: [edsCluster('rtp', 'MAGLEV')], endpoints: [endpoints('rtp', ['10.0.0.1'])] }));
    client = newClient(ads.address, 'media/worker-1');
    const cds = watcher<{ name: string }>();
    ClusterResourceType.startWatch(client, 'rtp', cds.watcher);

    await waitUntil(() => ads.server.status.groupNacks(GROUP).length > 0, 'NACK recorded');
    const [nack] = ads.server.status.groupNacks(GROUP);
    expect(nack?.typeUrl).toBe(CLUSTER_TYPE);
    expect(nack?.message).toContain('MAGLEV');
    expect(nack?.nodeIds).toEqual(new Set(['media/worker-1']));
    const proxy = ads.server.status.list(GROUP)[0];
    expect(proxy?.types.get(CLUSTER_TYPE)?.nack?.version).toBe(nack?.version);
    expect(cds.updates).toEqual([]);

    // The rejected version is not pushed again: the next CDS response the client sees is the
    // fixed configuration, and the server sent exactly two CDS responses in all.
    ads.cache.setSnapshot(GROUP, snapshotInput({ clusters: [edsCluster('rtp')], endpoints: [endpoints('rtp', ['10.0.0.1'])] }));
    await waitUntil(() => cds.updates.length === 1, 'fixed cluster accepted');
    await waitUntil(() => ads.server.status.groupNacks(GROUP).length === 0, 'NACK cleared by the ACK of a newer version');
    expect(proxy?.types.get(CLUSTER_TYPE)?.responses).toBe(2);
    ClusterResourceType.cancelWatch(client, 'rtp', cds.watcher);
  });
});
