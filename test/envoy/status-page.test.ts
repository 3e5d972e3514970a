/**
 * What an operator looks at, met as they meet it: headless Chromium loads the admin status page
 * of a running vsxds that a real Envoy is connected to, and the test reads what it rendered: the
 * proxy's row, then the NACK Envoy sends for a port it cannot bind. Screenshots are kept in
 * test-artifacts/ (gitignored). The same live vsxds then answers for the Grafana dashboard and
 * the alert rules: every metric they query is in its /metrics.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ENDPOINT_TYPE } from '../../src/xds/index.js';
import { RawAdsStream } from '../support/ads-client.js';
import { ARTIFACTS, loadPage, screenshot } from '../support/chromium.js';
import { adsBootstrap, startEnvoy, type Envoy } from '../support/envoy.js';
import { FileVsxds, listener, pod, printEnvoyLogsOnFailure, virtualService } from '../support/envoy-scenario.js';
import { metricNames } from '../support/promql.js';
import { ROOT } from '../support/tools.js';
import { freePorts, holdUdpPort, UdpEcho, udpEventually, waitUntil } from '../support/udp.js';

const NODE_ID = 'default/ingress-1';
const GROUP = 'default/app=ingress';
const MONITORING = path.join(ROOT, 'deploy', 'monitoring');

/** The rows of the table with this id, each as the text of its cells. */
function tableRows(dom: string, id: string): string[][] {
  const table = new RegExp(`<table id="${id}">([\\s\\S]*?)</table>`).exec(dom)?.[1];
  if (table === undefined) return [];
  return [...table.matchAll(/<tr[^>]*>([\s\S]*?)<\/tr>/g)].map((row) => [...(row[1] ?? '').matchAll(/<t[dh][^>]*>([\s\S]*?)<\/t[dh]>/g)].map((c) => text(c[1] ?? '')));
}

function text(markup: string): string {
  return markup
    .replace(/<br>/g, ' ')
    .replace(/<[^>]+>/g, ' ')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&')
    .replace(/\s+/g, ' ')
    .trim();
}

/** The proxy's row in its group's table: node, mode, peer, in step, then a cell per type. */
function proxyRow(dom: string, nodeId: string): string[] | undefined {
  const row = new RegExp(`<tr class="proxy" data-node="${nodeId}">([\\s\\S]*?)</tr>`).exec(dom)?.[1];
  return row === undefined ? undefined : [...row.matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((c) => text(c[1] ?? ''));
}

describe('the admin status page in a browser, with a real Envoy connected', { timeout: 120_000 }, () => {
  let vsxds: FileVsxds;
  let envoy: Envoy;
  let echo: UdpEcho;
  let ports: { echo: number; rtp: number; busy: number };
  const page = () => `http://127.0.0.1:${vsxds.running.adminPort}/`;
  const workers = { selector: { app: 'worker' } };

  printEnvoyLogsOnFailure(() => [envoy]);

  beforeAll(async () => {
    const [e, rtp, busy] = await freePorts(3);
    ports = { echo: e!, rtp: rtp!, busy: busy! };
    echo = await UdpEcho.start('127.0.30.2', '127.0.30.2', ports.echo);
    vsxds = await FileVsxds.start({
      'pods.yaml': [pod('worker-1', { app: 'worker' }, '127.0.30.2')],
      'media.yaml': [virtualService('media', { app: 'ingress' }, [listener('rtp', ports.rtp, { name: 'media', to: workers, port: ports.echo, hashKey: 'call' })])],
    });
    envoy = await startEnvoy({
      name: 'ingress-status-page',
      bootstrap: adsBootstrap({ nodeId: NODE_ID, metadata: { namespace: 'default', labels: { app: 'ingress' } }, xdsPort: vsxds.xdsPort, apiType: 'GRPC' }),
      extraArgs: ['--drain-time-s', '1'],
    });
    await udpEventually(ports.rtp, 'first');
    await waitUntil(async () => (await vsxds.admin<any[]>('/debug/syncz')).find((p) => p.node === NODE_ID && p.synced), 'the proxy in step');
  }, 90_000);

  afterAll(async () => {
    await envoy?.stop();
    await vsxds?.stop();
    await echo?.close();
  });

  it('serves HTML that forbids every external load, reloads itself and fits a phone', async () => {
    const res = await fetch(page());
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(/default-src 'none'/);
    expect(csp).not.toMatch(/unsafe-inline|https?:|\*/);
    const body = await res.text();
    expect(body).toContain('<meta http-equiv="refresh" content="5">');
    expect(body).toContain('<meta name="viewport" content="width=device-width, initial-scale=1">');
    expect(body).not.toMatch(/<script|<link|src=|https?:\/\//);
  });

  it('shows the connected proxy in its group with the versions it was sent and ACKed', async () => {
    const syncz = (await vsxds.admin<any[]>('/debug/syncz')).find((p) => p.node === NODE_ID);
    const { dom, log } = await loadPage(page());
    // The inline style is allowed by its hash; a wrong hash would show up as a violation here.
    expect(log).not.toMatch(/Content Security Policy|Refused to/);
    expect(dom).toContain(`<h3>${GROUP} <span class="mute">(1)</span></h3>`);
    const row = proxyRow(dom, NODE_ID);
    expect(row).toBeDefined();
    const [node, mode, , inStep, ...types] = row!;
    expect([node, mode, inStep]).toEqual([NODE_ID, 'sotw', 'yes']);
    expect(types).toHaveLength(3);
    for (const [i, t] of ['CDS', 'EDS', 'LDS'].entries()) {
      const v = (syncz.types[t].acked as string).slice(0, 12);
      expect(types[i]).toMatch(new RegExp(`^sent ${v}.* acked ${v}`));
    }
    expect(tableRows(dom, 'virtualservices').find((r) => r[0] === 'default/media')).toEqual(['default/media', 'True Accepted', 'False NoConflicts', 'True Synced', '1/1 synced', '1']);
    expect(dom).toContain('No proxy rejects its configuration.');
    await screenshot(page(), path.join(ARTIFACTS, 'status-page-synced.png'), 1280, 1000);
  });

  it('shows the NACK Envoy sends for a listener it cannot bind, with its message, on the proxy and on the VirtualService', async () => {
    const held = await holdUdpPort(ports.busy);
    try {
      await vsxds.write('late.yaml', [virtualService('late', { app: 'ingress' }, [listener('late', ports.busy, { name: 'late', to: workers, port: ports.echo })])]);
      const nack = await waitUntil(async () => (await vsxds.admin<any[]>('/debug/syncz')).find((p) => p.node === NODE_ID)?.types?.LDS?.nack, 'Envoy to NACK the listener');
      await waitUntil(() => vsxds.running.reporter.current().get('default/late')?.nackMessage, 'the NACK on the VirtualService status');
      const { dom } = await loadPage(page());
      const nacks = tableRows(dom, 'nacks');
      expect(nacks[0]).toEqual(['group', 'type', 'version', 'proxies']);
      expect(nacks[1]?.slice(0, 2)).toEqual([GROUP, 'LDS']);
      expect(nacks[1]?.[3]).toBe(NODE_ID);
      // The message has a row of its own under its NACK, and names the address Envoy could not bind.
      expect(nacks[2]?.[0]).toContain(`0.0.0.0:${ports.busy}`);
      expect(proxyRow(dom, NODE_ID)?.[6]).toContain(`NACK ${(nack.version as string).slice(0, 12)}`);
      expect(dom).toMatch(new RegExp(`<td data-label="LDS" class="bad">sent [^]*NACK <code title="${nack.version}">`));
      const late = tableRows(dom, 'virtualservices').findIndex((r) => r[0] === 'default/late');
      expect(tableRows(dom, 'virtualservices')[late]?.slice(3, 5)).toEqual(['False Rejected', '0/1 synced, 1 NACKed']);
      expect(tableRows(dom, 'virtualservices')[late + 1]?.[0]).toMatch(new RegExp(`^Synced: 1 of 1 proxies rejected the configuration: .*0\\.0\\.0\\.0:${ports.busy}`));
      // A person reads the summary first.
      expect(text(/<dl id="summary">([\s\S]*?)<\/dl>/.exec(dom)?.[1] ?? '')).toContain('NACKs 1');
      const desktop = await screenshot(page(), path.join(ARTIFACTS, 'status-page-nack.png'), 1280, 1200);
      const phone = await screenshot(page(), path.join(ARTIFACTS, 'status-page-nack-phone.png'), 412, 1600);
      for (const file of [desktop, phone]) {
        expect(readFileSync(file).subarray(1, 4).toString()).toBe('PNG');
        expect(statSync(file).size).toBeGreaterThan(10_000);
      }
    } finally {
      await held.close();
    }
  });

  it('exports every metric the Grafana dashboard and the alert rules query', async () => {
    // A stream vsxds ends with an error, so that vsxds_xds_stream_errors_total has a series too.
    const bad = new RawAdsStream(`127.0.0.1:${vsxds.xdsPort}`, 'sotw');
    bad.send({ type_url: ENDPOINT_TYPE });
    await waitUntil(() => bad.ended, 'vsxds to end the stream without a node');
    bad.close();

    const dashboard = JSON.parse(readFileSync(path.join(MONITORING, 'vsxds-dashboard.json'), 'utf8'));
    const exprs: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) k === 'expr' || k === 'definition' ? exprs.push(String(x)) : walk(x);
    };
    walk(dashboard);
    walk(parse(readFileSync(path.join(MONITORING, 'vsxds-alerts.rules.yaml'), 'utf8')));
    const queried = new Set(exprs.flatMap(metricNames));
    // What the issue asks the dashboard and alerts to cover.
    for (const m of ['vsxds_connected_proxies', 'vsxds_xds_pushes_total', 'vsxds_xds_push_bytes_total', 'vsxds_xds_push_ack_seconds_bucket', 'vsxds_xds_nacks_total', 'vsxds_snapshot_build_seconds_bucket', 'vsxds_watch_restarts_total', 'vsxds_ready', 'vsxds_unsynced_seconds']) {
      expect(queried, m).toContain(m);
    }

    const metrics = await (await fetch(`http://127.0.0.1:${vsxds.running.adminPort}/metrics`)).text();
    const exported = new Set([...metrics.matchAll(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )/gm)].map((m) => m[1]));
    const missing = [...queried].filter((m) => !exported.has(m));
    expect(missing, `queried but without a sample in a live /metrics`).toEqual([]);
  });
});
