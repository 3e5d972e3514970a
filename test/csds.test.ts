import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_TYPE, LISTENER_TYPE } from '../src/xds/index.js';
import { nodeFor, RawAdsStream } from './support/ads-client.js';
import { entriesOf, fetchCsds } from './support/csds-client.js';
import { FileVsxds, loadExamples } from './support/envoy-scenario.js';
import { waitUntil } from './support/wait.js';

const INGRESS = { app: 'ingress' };
const GROUP = 'default/app=ingress';

describe.each(['sotw', 'delta'] as const)('CSDS over %s ADS', { timeout: 60_000 }, (mode) => {
  let vsxds: FileVsxds;
  let address: string;
  const streams: RawAdsStream[] = [];
  const open = () => {
    const s = new RawAdsStream(address, mode);
    streams.push(s);
    return s;
  };
  const proxyConfig = async (nodeId: string) => (await fetchCsds(address)).config.find((c) => c.node?.id === nodeId);

  beforeAll(async () => {
    vsxds = await FileVsxds.start((await loadExamples()).files, ['--replica-name', `replica-${mode}`]);
    address = `127.0.0.1:${vsxds.xdsPort}`;
  });
  afterAll(async () => {
    for (const s of streams) s.close();
    await vsxds?.stop();
  });

  it('reports what a proxy ACKed as SYNCED / ACKED, with its node, group, version, contents and the replica', async () => {
    const s = open();
    const { cds, eds, lds } = await s.syncLikeEnvoy(nodeFor('default', INGRESS, 'default/ingress-synced'));
    const answer = await waitUntil(async () => {
      const a = await fetchCsds(address);
      const c = a.config.find((x) => x.node?.id === 'default/ingress-synced');
      return c && [...entriesOf(c).values()].filter((g) => g.config_status === 'SYNCED').length === cds.resources.length + eds.resources.length + lds.resources.length && { a, c };
    }, 'the synced proxy in CSDS');
    expect(answer.a.replica).toBe(`replica-${mode}`);
    const c = answer.c;
    expect(c.client_scope).toBe(GROUP);
    expect(c.node.metadata.fields.namespace.stringValue).toBe('default');
    const entries = entriesOf(c);
    expect(entries.size).toBe(cds.resources.length + eds.resources.length + lds.resources.length);
    for (const r of lds.resources) {
      const g = entries.get(`LDS/${r.name}`);
      expect(g).toMatchObject({ type_url: LISTENER_TYPE, config_status: 'SYNCED', client_status: 'ACKED' });
      expect(g?.xds_config?.type_url).toBe(LISTENER_TYPE);
      expect(Number(g?.last_updated?.seconds)).toBeGreaterThan(0);
      if (mode === 'delta') expect(g?.version_info).toBe(r.version);
    }
    // Over the stream RPC too, and without contents when asked.
    const streamed = await fetchCsds(address, { exclude_resource_contents: true }, { stream: true });
    const again = entriesOf(streamed.config.find((x) => x.node?.id === 'default/ingress-synced'));
    expect(again.size).toBe(entries.size);
    for (const g of again.values()) expect(g.xds_config).toBeUndefined();
  });

  it('reports a NACKed resource as ERROR / NACKED with the message, and one sent but not ACKed as STALE', async () => {
    const nacker = open();
    nacker.send({ node: nodeFor('default', INGRESS, 'default/ingress-nacker'), type_url: CLUSTER_TYPE });
    const cds = await nacker.next();
    nacker.nack(cds, 'this Envoy does not like these clusters');
    const silent = open();
    silent.send({ node: nodeFor('default', INGRESS, 'default/ingress-silent'), type_url: CLUSTER_TYPE });
    const sent = await silent.next();

    const nacked = await waitUntil(async () => {
      const c = await proxyConfig('default/ingress-nacker');
      const e = entriesOf(c);
      return e.size > 0 && [...e.values()].every((g) => g.config_status === 'ERROR') && e;
    }, 'the NACK in CSDS');
    expect(nacked.size).toBe(cds.resources.length);
    for (const r of cds.resources) {
      const g = nacked.get(`CDS/${r.name}`);
      expect(g).toMatchObject({ config_status: 'ERROR', client_status: 'NACKED' });
      expect(g?.error_state?.details).toBe('this Envoy does not like these clusters');
    }

    const stale = entriesOf(await proxyConfig('default/ingress-silent'));
    expect(stale.size).toBe(sent.resources.length);
    for (const g of stale.values()) expect(g).toMatchObject({ type_url: CLUSTER_TYPE, config_status: 'STALE', client_status: 'REQUESTED' });
    // Once it ACKs, the same resources are SYNCED.
    silent.ack(sent);
    await waitUntil(async () => [...entriesOf(await proxyConfig('default/ingress-silent')).values()].every((g) => g.config_status === 'SYNCED'), 'the late ACK in CSDS');
  });

  it('reports what a reconnecting proxy says it holds as SYNCED, though nothing was re-sent', async () => {
    const first = open();
    const { cds, lds } = await first.syncLikeEnvoy(nodeFor('default', INGRESS, 'default/ingress-first'));
    first.close();
    const again = open();
    const node = nodeFor('default', INGRESS, 'default/ingress-again');
    if (mode === 'sotw') {
      again.send({ node, type_url: CLUSTER_TYPE, version_info: cds.version_info });
      again.send({ type_url: LISTENER_TYPE, version_info: lds.version_info });
    } else {
      const versions = (r: typeof cds) => Object.fromEntries(r.resources.map((x) => [x.name, x.version as string]));
      again.send({ node, type_url: CLUSTER_TYPE, initial_resource_versions: versions(cds) });
      again.send({ type_url: LISTENER_TYPE, initial_resource_versions: versions(lds) });
    }
    const entries = await waitUntil(async () => {
      const e = entriesOf(await proxyConfig('default/ingress-again'));
      return e.size === cds.resources.length + lds.resources.length && e;
    }, 'the reconnected proxy in CSDS');
    for (const g of entries.values()) expect(g).toMatchObject({ config_status: 'SYNCED', client_status: 'ACKED' });
    // Nothing was re-sent (an empty delta response that ends the proxy's initialization is fine).
    expect(again.responses.flatMap((r) => r.resources)).toEqual([]);
  });

  it('selects proxies with node matchers: node id exact or prefix, metadata path exact', async () => {
    const s = open();
    await s.syncLikeEnvoy(nodeFor('default', INGRESS, 'default/ingress-matched'));
    const ids = async (matchers: object[]) => (await fetchCsds(address, { node_matchers: matchers })).config.map((c) => c.node.id as string);
    await waitUntil(async () => (await ids([{ node_id: { exact: 'default/ingress-matched' } }])).length === 1, 'the proxy by exact id');
    expect(await ids([{ node_id: { exact: 'default/ingress-matched' } }])).toEqual(['default/ingress-matched']);
    expect(await ids([{ node_id: { prefix: 'default/ingress-ma' } }])).toEqual(['default/ingress-matched']);
    expect(await ids([{ node_id: { prefix: 'nope/' } }])).toEqual([]);
    const byLabel = (app: string) => ids([{ node_metadatas: [{ path: [{ key: 'labels' }, { key: 'app' }], value: { string_match: { exact: app } } }] }]);
    expect(await byLabel('ingress')).toContain('default/ingress-matched');
    expect(await byLabel('worker')).toEqual([]);
    // Matchers are ORed.
    expect(await ids([{ node_id: { exact: 'nope' } }, { node_id: { exact: 'default/ingress-matched' } }])).toEqual(['default/ingress-matched']);
  });
});
