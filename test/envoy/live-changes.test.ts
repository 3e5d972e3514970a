/**
 * A running Envoy follows VirtualService and pod changes: listeners open and close, pod churn
 * stays on EDS, and a configuration Envoy rejects is reported and not pushed again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LISTENER_TYPE } from '../../src/xds/index.js';
import { adsBootstrap, startEnvoy, type AdsApiType, type Envoy } from '../support/envoy.js';
import { changedStats, CONFIG_CHURN_STATS, FileVsxds, listener, pod, printEnvoyLogsOnFailure, stat, virtualService, waitForStats } from '../support/envoy-scenario.js';
import { freePorts, holdUdpPort, sleep, UdpEcho, udpEventually, udpPortFree, udpRoundTrip, waitUntil } from '../support/udp.js';

const MODES: AdsApiType[] = ['GRPC', 'DELTA_GRPC'];
const NODE_ID = 'default/ingress-1';
const GROUP = 'default/app=ingress';
const VS = 'default/media';
const LATE_VS = 'default/late-comer';
// Envoy keeps a removed listener's socket while it drains (600 s by default); a short drain
// lets the test see the port actually released.
const DRAIN_TIME_S = 2;

describe.each(MODES)('live changes on a running Envoy on %s', { timeout: 120_000 }, (apiType) => {
  const subnet = 20 + MODES.indexOf(apiType);
  const ip = (host: number) => `127.${subnet}.0.${host}`;
  const echoes: UdpEcho[] = [];
  let vsxds: FileVsxds;
  let envoy: Envoy;
  let ports: Record<'echo' | 'rtp' | 'rtcp' | 'busy' | 'fixed', number>;
  let pods: object[];

  printEnvoyLogsOnFailure(() => [envoy]);

  const workers = { selector: { app: 'worker' } };
  const rtp = () => listener('rtp', ports.rtp, { name: 'media-rtp', to: workers, port: ports.echo, hashKey: 'call' });
  const rtcp = () => listener('rtcp', ports.rtcp, { name: 'media-rtcp', to: workers, port: ports.echo, hashKey: 'call' });
  const media = (...listeners: object[]) => virtualService('media', { app: 'ingress' }, listeners);
  const syncz = () => vsxds.admin<any[]>('/debug/syncz');
  const ldsResponses = async () => (await syncz()).find((p) => p.node === NODE_ID)?.types?.LDS?.responses as number;

  beforeAll(async () => {
    const [echo, rtpPort, rtcpPort, busy, fixed] = await freePorts(5);
    ports = { echo: echo!, rtp: rtpPort!, rtcp: rtcpPort!, busy: busy!, fixed: fixed! };
    for (let host = 2; host <= 4; host++) echoes.push(await UdpEcho.start(ip(host), ip(host), ports.echo));
    pods = [pod('worker-1', { app: 'worker' }, ip(2)), pod('worker-2', { app: 'worker' }, ip(3))];
    // Each listener keeps a cluster of its own name (rtp's and rtcp's are alike, so by default
    // they would share one): this follows each cluster's make-before-break through Envoy.
    vsxds = await FileVsxds.start({ 'pods.yaml': pods, 'media.yaml': [media(rtp())] }, ['--share-clusters', 'false']);
    envoy = await startEnvoy({
      name: `ingress-${apiType}`,
      bootstrap: adsBootstrap({ nodeId: NODE_ID, metadata: { namespace: 'default', labels: { app: 'ingress' } }, xdsPort: vsxds.xdsPort, apiType }),
      extraArgs: ['--drain-time-s', String(DRAIN_TIME_S)],
    });
    await udpEventually(ports.rtp, 'first');
  }, 60_000);

  afterAll(async () => {
    await envoy?.stop();
    await vsxds?.stop();
    for (const e of echoes) await e.close();
  });

  it('opens the port of a listener added to a VirtualService, leaving the other listeners alone', async () => {
    const before = await envoy.stats();
    await vsxds.write('media.yaml', [media(rtp(), rtcp())]);
    expect(await udpEventually(ports.rtcp, 'rtcp')).toMatch(/\|rtcp$/);
    expect(await envoy.listeners()).toEqual(['rtcp', 'rtp']);
    const after = await envoy.stats();
    expect(stat(after, 'listener_manager.listener_added') - stat(before, 'listener_manager.listener_added')).toBe(1);
    expect(changedStats(before, after, ['listener_manager.listener_modified', 'listener_manager.listener_removed', 'listener_manager.listener_in_place_updated', 'listener_manager.lds.update_rejected'])).toEqual({});
    expect(stat(after, 'listener_manager.lds.update_success')).toBeGreaterThan(stat(before, 'listener_manager.lds.update_success'));
    // The new EDS cluster got its endpoints before Envoy gave up waiting for them.
    expect(stat(after, 'cluster.media-rtcp.init_fetch_timeout')).toBe(0);
    expect(await udpRoundTrip(ports.rtp, 'rtp')).toMatch(/\|rtp$/);
  });

  it('closes the port of a listener removed from a VirtualService, then drops its cluster', async () => {
    const before = await envoy.stats();
    await vsxds.write('media.yaml', [media(rtp())]);
    await waitUntil(async () => !(await envoy.listeners()).includes('rtcp'), 'the rtcp listener to go');
    const after = await envoy.stats();
    expect(stat(after, 'listener_manager.listener_removed') - stat(before, 'listener_manager.listener_removed')).toBe(1);
    expect(changedStats(before, after, ['listener_manager.listener_added', 'listener_manager.listener_modified'])).toEqual({});
    // Nothing answers on the port any more (once Envoy's worker thread let go of it), while the
    // other listener carries on.
    await waitUntil(async () => (await udpRoundTrip(ports.rtcp, 'late', 300)) === undefined, 'no answer on the removed port');
    for (let i = 0; i < 3; i++) expect(await udpRoundTrip(ports.rtcp, `late ${i}`, 300)).toBeUndefined();
    expect(await udpRoundTrip(ports.rtp, 'rtp')).toMatch(/\|rtp$/);
    // Once drained, the socket is closed: another process can bind the port.
    await waitUntil(() => udpPortFree(ports.rtcp), `UDP port ${ports.rtcp} to be released`, 30_000, 250);
    // Make-before-break: the cluster goes after the listener that used it.
    await waitUntil(async () => !(await envoy.admin('/clusters')).includes('media-rtcp::'), 'the media-rtcp cluster to go');
  });

  it('sends pod changes through EDS alone: no listener or cluster is touched', async () => {
    const before = await envoy.stats();
    const ldsBefore = await ldsResponses();
    pods = [...pods, pod('worker-3', { app: 'worker' }, ip(4))];
    await vsxds.write('pods.yaml', pods);
    await waitForStats(envoy, ['cluster.media-rtp.membership_total'], (v) => v === 3, 'the new pod in the cluster');
    pods = pods.filter((p: any) => p.metadata.name !== 'worker-1');
    await vsxds.write('pods.yaml', pods);
    const after = await waitForStats(envoy, ['cluster.media-rtp.membership_total'], (v) => v === 2, 'the removed pod out of the cluster');
    expect(changedStats(before, after, CONFIG_CHURN_STATS)).toEqual({});
    expect(stat(after, 'cluster.media-rtp.update_success')).toBeGreaterThanOrEqual(stat(before, 'cluster.media-rtp.update_success') + 2);
    expect(await ldsResponses()).toBe(ldsBefore);
    const clusters = await envoy.admin('/clusters');
    expect(clusters).toContain(`media-rtp::${ip(4)}:${ports.echo}::`);
    expect(clusters).not.toContain(`media-rtp::${ip(2)}:${ports.echo}::`);
    expect(await udpEventually(ports.rtp, 'after churn')).toMatch(/\|after churn$/);
  });

  it('reports a VirtualService whose port Envoy cannot bind as rejected, keeps serving, does not push it again, and recovers when fixed', async () => {
    const busy = (port: number) => virtualService('late-comer', { app: 'ingress' }, [listener('late', port, { name: 'late', to: workers, port: ports.echo })]);
    // Another process on the host already has the port: nothing vsxds can see, so it is valid.
    const held = await holdUdpPort(ports.busy);
    try {
      const before = await envoy.stats();
      await vsxds.write('late-comer.yaml', [busy(ports.busy)]);
      await waitForStats(envoy, ['listener_manager.lds.update_rejected'], (v) => v === stat(before, 'listener_manager.lds.update_rejected') + 1, 'Envoy to reject the listener');
      const bindError = `0.0.0.0:${ports.busy}`;

      const status = await waitUntil(() => {
        const s = vsxds.running.reporter.current().get(LATE_VS);
        return s?.conditions?.find((c) => c.type === 'Synced')?.reason === 'Rejected' ? s : undefined;
      }, 'Synced=False/Rejected on the VirtualService');
      expect(status.conditions?.find((c) => c.type === 'Accepted')?.status).toBe('True');
      expect(status.conditions?.find((c) => c.type === 'Synced')?.status).toBe('False');
      expect(status.nackMessage).toContain(bindError);
      expect(status.proxies).toMatchObject({ matched: 1, nacked: 1 });
      expect((await vsxds.admin('/debug/virtualservices'))[LATE_VS].nackMessage).toContain(bindError);
      // Envoy's message names the rejected listener: the VirtualService next to it is not blamed.
      const bystander = vsxds.running.reporter.current().get(VS);
      expect(bystander?.nackMessage).toBeUndefined();
      expect(bystander?.conditions?.find((c) => c.type === 'Synced')?.reason).toBe('Pending');
      const proxy = (await syncz()).find((p) => p.node === NODE_ID);
      expect(proxy.types.LDS.nack.message).toContain(bindError);
      const dump = await vsxds.admin(`/debug/config_dump?node=${encodeURIComponent(GROUP)}`);
      expect(dump.nacks).toEqual([expect.objectContaining({ typeUrl: LISTENER_TYPE, version: proxy.types.LDS.nack.version, nodeIds: [NODE_ID] })]);
      expect(dump.nacks[0].message).toContain(bindError);

      // Envoy keeps what it had: the old listener serves, the rejected one is not there.
      expect(await envoy.listeners()).toEqual(['rtp']);
      expect(await udpRoundTrip(ports.rtp, 'still')).toMatch(/\|still$/);

      // No resend loop: neither side sees another listener push.
      const responses = await ldsResponses();
      const rejected = stat(await envoy.stats(), 'listener_manager.lds.update_rejected');
      await sleep(3_000);
      expect(await ldsResponses()).toBe(responses);
      expect(stat(await envoy.stats(), 'listener_manager.lds.update_rejected')).toBe(rejected);
    } finally {
      await held.close();
    }

    // The operator moves the listener to a free port: accepted, and the rejection is cleared.
    await vsxds.write('late-comer.yaml', [busy(ports.fixed)]);
    expect(await udpEventually(ports.fixed, 'fixed')).toMatch(/\|fixed$/);
    const synced = (key: string) => vsxds.running.reporter.current().get(key)?.conditions?.find((c) => c.type === 'Synced')?.status === 'True';
    await waitUntil(() => synced(LATE_VS) && synced(VS), 'Synced=True again');
    expect(vsxds.running.reporter.current().get(LATE_VS)?.nackMessage).toBeUndefined();
    expect((await vsxds.admin(`/debug/config_dump?node=${encodeURIComponent(GROUP)}`)).nacks).toEqual([]);
  });
});
