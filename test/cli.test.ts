import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from '../src/xds/index.js';
import { nodeFor, RawAdsStream } from './support/ads-client.js';
import { RTCP_CLUSTER, RTP_CLUSTER } from './support/envoy-scenario.js';
import { waitUntil } from './support/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const CLI = [path.join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), path.join(ROOT, 'src', 'main', 'cli.ts')];

interface Proc {
  child: ChildProcess;
  out: string;
  err: string;
  exited: Promise<number | null>;
}

/** Runs the vsxds CLI as a user would, with a HOME that has no kubeconfig. */
function run(args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, [...CLI, ...args], {
    cwd: ROOT,
    env: { PATH: process.env['PATH'] ?? '', HOME: os.tmpdir(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc: Proc = { child, out: '', err: '', exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))) };
  child.stdout?.on('data', (d) => (proc.out += d));
  child.stderr?.on('data', (d) => (proc.err += d));
  return proc;
}


const logLines = (p: Proc) => p.out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);

describe('vsxds CLI', { timeout: 60_000 }, () => {
  const procs: Proc[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    for (const p of procs.splice(0)) p.child.kill('SIGKILL');
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it('--help lists every option with its environment variable', async () => {
    const p = run(['--help']);
    expect(await p.exited).toBe(0);
    expect(p.out).toContain('vsxds serve');
    expect(p.out).toContain('vsxds render');
    expect(p.out).toMatch(/--xds-address\s+\$VSXDS_XDS_ADDRESS/);
    expect(p.out).toMatch(/--source\s+\$VSXDS_SOURCE/);
  });

  it('rejects an unknown flag with the usage and status 2', async () => {
    const p = run(['serve', '--no-such-flag']);
    expect(await p.exited).toBe(2);
    expect(p.err).toContain("Unknown option '--no-such-flag'");
    expect(p.err).toContain('Usage:');
  });

  it('serves the examples with no cluster configured, follows file edits, and shuts down cleanly on SIGTERM', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vsxds-cli-'));
    dirs.push(dir);
    await cp(path.join(ROOT, 'examples'), dir, { recursive: true });
    const p = run(['serve', '--xds-address', '127.0.0.1:0', '--admin-address', '127.0.0.1:0', '--coalesce-ms', '20'], {
      VSXDS_SOURCE: `file:${dir}`,
    });
    procs.push(p);
    const started = await waitUntil(() => logLines(p).find((l) => l['msg'] === 'vsxds started'), 'startup log');
    expect(started['source']).toBe(`file:${dir}`);

    const s = new RawAdsStream(`127.0.0.1:${started['xdsPort']}`, 'sotw');
    s.send({ node: nodeFor('default', { app: 'ingress' }, 'default/ingress-1'), type_url: CLUSTER_TYPE });
    s.send({ type_url: LISTENER_TYPE });
    const cds = await s.next();
    expect(cds.resources.map((r) => r.name).sort()).toEqual([RTP_CLUSTER, RTCP_CLUSTER]);
    s.send({ type_url: ENDPOINT_TYPE, resource_names: [RTP_CLUSTER, RTCP_CLUSTER] });
    s.ack(cds);
    const eds = await s.next();
    s.ack(eds, { resource_names: [RTP_CLUSTER, RTCP_CLUSTER] });
    const lds = await s.next();
    expect(lds.resources.map((r) => r.name).sort()).toEqual(['ingress-rtcp', 'ingress-rtp']);
    s.ack(lds);

    // A new worker pod appears in a file: an endpoint update, nothing else.
    await writeFile(
      path.join(dir, 'virtualservices', 'more-pods.yaml'),
      'apiVersion: v1\nkind: Pod\nmetadata: {name: worker-9, labels: {app: worker}}\nstatus: {podIP: 127.0.0.9, conditions: [{type: Ready, status: "True"}]}\n',
    );
    const update = await s.next();
    expect(update.type_url).toBe(ENDPOINT_TYPE);
    expect(JSON.stringify(update.resources)).toContain('127.0.0.9');
    s.ack(update, { resource_names: [RTP_CLUSTER, RTCP_CLUSTER] });

    // A broken file is reported; the rest keeps being served.
    await writeFile(path.join(dir, 'virtualservices', 'broken.yaml'), 'kind: VirtualService\n  - nope: [');
    await waitUntil(() => logLines(p).find((l) => String(l['msg']).includes('file source: YAML document 1')), 'broken file report');

    const syncz = await (await fetch(`http://127.0.0.1:${started['adminPort']}/debug/syncz`)).json();
    expect(syncz).toMatchObject([{ node: 'default/ingress-1', group: 'default/app=ingress', synced: true }]);

    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(logLines(p).map((l) => l['msg'])).toContain('stopped');
    s.close();
  });

  it('uses the examples when no cluster is configured (what npm start does on a fresh clone)', async () => {
    const p = run(['--xds-address', '127.0.0.1:0', '--admin-address', '127.0.0.1:0'], { KUBECONFIG: path.join(os.tmpdir(), 'no-such-kubeconfig') });
    procs.push(p);
    const started = await waitUntil(() => logLines(p).find((l) => l['msg'] === 'vsxds started'), 'startup log');
    expect(started['source']).toBe(`file:${path.join(ROOT, 'examples')}`);
    // Ready once the first snapshot build after the initial file read is done.
    const readyz = await waitUntil(async () => {
      const res = await fetch(`http://127.0.0.1:${started['adminPort']}/readyz`);
      return res.status === 200 ? res : undefined;
    }, '/readyz to answer 200');
    expect(await readyz.text()).toBe('ok\n');
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
  });

  it('render prints what a proxy would receive, and fails for an invalid VirtualService that selects it', async () => {
    const ok = run(['render', '--source', 'file:examples', '--node-namespace', 'default', '--node-labels', 'app=ingress', '--format', 'json']);
    expect(await ok.exited).toBe(0);
    const doc = JSON.parse(ok.out);
    expect(doc.resources.LDS.map((l: any) => l.name).sort()).toEqual(['ingress-rtcp', 'ingress-rtp']);
    expect(doc.resources.CDS.every((c: any) => c.lb_policy === 'MAGLEV')).toBe(true);

    const dir = await mkdtemp(path.join(os.tmpdir(), 'vsxds-render-'));
    dirs.push(dir);
    await cp(path.join(ROOT, 'examples', 'virtualservices'), dir, { recursive: true });
    await writeFile(
      path.join(dir, 'bad.yaml'),
      'apiVersion: servicemesh.l7mp.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspec:\n  selector: {app: ingress}\n  listeners:\n    - name: x\n      udp: {port: 99999, cluster: {name: x, service_discovery: eds, endpoints: [{host: {address: 10.0.0.1}, port: 1}]}}\n',
    );
    const bad = run(['render', '--source', `file:${dir}`, '--node-id', 'default/ingress-1']);
    expect(await bad.exited).toBe(1);
    expect(bad.err).toMatch(/invalid: VirtualService default\/bad: \w+: .*99999/);
    expect(bad.out).toContain('ingress-rtp');
  });

  it('render warns of, but does not fail for, a source problem in another namespace than the proxy', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vsxds-render-'));
    dirs.push(dir);
    await cp(path.join(ROOT, 'examples', 'virtualservices'), dir, { recursive: true });
    const other = 'apiVersion: servicemesh.l7mp.io/v1\nkind: VirtualService\nmetadata: {name: twice, namespace: other}\nspec:\n  selector: {app: gw}\n  listeners:\n    - name: x\n      udp: {port: 3000, cluster: {name: x, service_discovery: eds, endpoints: [{host: {address: 10.0.0.1}, port: 1}]}}\n';
    await writeFile(path.join(dir, 'other-a.yaml'), other);
    await writeFile(path.join(dir, 'other-b.yaml'), other);
    const unrelated = run(['render', '--source', `file:${dir}`, '--node-namespace', 'default', '--node-labels', 'app=ingress']);
    expect(await unrelated.exited).toBe(0);
    expect(unrelated.err).toContain('warning: other/twice: defined more than once in the directory');
    const related = run(['render', '--source', `file:${dir}`, '--node-namespace', 'other', '--node-labels', 'app=gw']);
    expect(await related.exited).toBe(1);
    expect(related.err).toContain('problem: other/twice: defined more than once in the directory');
  });
});
