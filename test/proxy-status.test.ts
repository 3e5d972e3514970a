import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_TYPE } from '../src/xds/index.js';
import { nodeFor, RawAdsStream } from './support/ads-client.js';
import { FileVsxds, loadExamples } from './support/envoy-scenario.js';
import { freePorts } from './support/udp.js';
import { waitUntil } from './support/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const CLI = [path.join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), path.join(ROOT, 'src', 'main', 'cli.ts')];

/** `vsxds proxy-status ...` as a user runs it. */
function proxyStatus(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...CLI, 'proxy-status', ...args], { cwd: ROOT, env: { PATH: process.env['PATH'] ?? '', HOME: os.tmpdir() }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

const columns = (line: string) => line.trim().split(/\s{3,}/);

describe('vsxds proxy-status against two replicas', { timeout: 90_000 }, () => {
  const replicas: FileVsxds[] = [];
  const streams: RawAdsStream[] = [];
  const ingress = (id: string) => nodeFor('default', { app: 'ingress' }, id);

  beforeAll(async () => {
    const files = (await loadExamples()).files;
    replicas.push(await FileVsxds.start(files, ['--replica-name', 'vsxds-a']));
    replicas.push(await FileVsxds.start(files, ['--replica-name', 'vsxds-b']));
    const [a, b] = replicas.map((r) => `127.0.0.1:${r.xdsPort}`) as [string, string];
    for (const [address, id, mode] of [[a, 'default/ingress-1', 'sotw'], [b, 'default/ingress-2', 'delta']] as const) {
      const s = new RawAdsStream(address, mode);
      streams.push(s);
      await s.syncLikeEnvoy(ingress(id));
    }
    const worker = new RawAdsStream(b, 'sotw');
    streams.push(worker);
    await worker.syncLikeEnvoy(nodeFor('default', { app: 'worker' }, 'default/worker-1'));
    const nacker = new RawAdsStream(b, 'sotw');
    streams.push(nacker);
    nacker.send({ node: ingress('default/ingress-3'), type_url: CLUSTER_TYPE });
    nacker.nack(await nacker.next(), 'no thanks');
  });
  afterAll(async () => {
    for (const s of streams) s.close();
    for (const r of replicas) await r.stop();
  });

  it('prints one line per proxy of every replica: proxy, replica, group, per type status, age', async () => {
    const servers = replicas.flatMap((r) => ['--server', `127.0.0.1:${r.xdsPort}`]);
    const run = await waitUntil(async () => {
      const r = await proxyStatus(servers);
      return r.code === 0 && r.out.includes('NACKED') && r.out.split('\n').filter((l) => l.includes('SYNCED')).length >= 3 && r;
    }, 'proxy-status to show every proxy', 60_000, 500);
    const lines = run.out.trim().split('\n');
    expect(columns(lines[0] as string)).toEqual(['PROXY', 'REPLICA', 'GROUP', 'CDS', 'EDS', 'LDS', 'AGE']);
    const rows = Object.fromEntries(lines.slice(1).map((l) => [columns(l)[0], columns(l)]));
    expect(Object.keys(rows).sort()).toEqual(['default/ingress-1', 'default/ingress-2', 'default/ingress-3', 'default/worker-1']);
    expect(rows['default/ingress-1']?.slice(0, 6)).toEqual(['default/ingress-1', 'vsxds-a', 'default/app=ingress', 'SYNCED', 'SYNCED', 'SYNCED']);
    expect(rows['default/ingress-2']?.slice(0, 6)).toEqual(['default/ingress-2', 'vsxds-b', 'default/app=ingress', 'SYNCED', 'SYNCED', 'SYNCED']);
    expect(rows['default/worker-1']?.slice(0, 3)).toEqual(['default/worker-1', 'vsxds-b', 'default/app=worker']);
    expect(rows['default/ingress-3']?.slice(0, 4)).toEqual(['default/ingress-3', 'vsxds-b', 'default/app=ingress', 'NACKED']);
    expect(rows['default/ingress-1']?.[6]).toMatch(/^\d+[smhd]$/);
  });

  it('says which replica it could not reach, still prints the others, and exits with status 1', async () => {
    const [dead] = await freePorts(1);
    const run = await proxyStatus(['--server', `127.0.0.1:${replicas[0]?.xdsPort}`, '--server', `127.0.0.1:${dead}`, '--timeout-ms', '2000']);
    expect(run.code).toBe(1);
    expect(run.err).toContain(`127.0.0.1:${dead}`);
    expect(run.out).toContain('default/ingress-1');
    expect(run.out).not.toContain('default/ingress-2');
  });
});
