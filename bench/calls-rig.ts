/**
 * What the rigs around real components share (B5 bench/calls.ts, B6 bench/faults.ts, the soak
 * bench/soak.ts): the worker pods, vsxds as a process of its own from its CLI, CPU and process
 * figures from /proc, vsxds's metrics and /debug/changes, and cleaning up VirtualServices.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CustomObjectsApi } from '@kubernetes/client-node';
import type { Change } from './calls-breakdown.js';
import { spawnTied } from '../test/support/envoy.js';
import type { KubeEnv } from '../test/support/kube-env.js';
import { freePort } from '../test/support/udp.js';
import { sleep } from '../test/support/wait.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const WORKERS = [
  { name: 'worker-1', ip: '127.0.0.2' },
  { name: 'worker-2', ip: '127.0.0.3' },
  { name: 'worker-3', ip: '127.0.0.4' },
];
export const SINK_PORT = 2001;
export const HEALTH_PORT = 1233;
export const PROXY_LABELS = { app: 'envoy-ingress' };
export const WORKER_LABELS = { app: 'worker' };
const CLK_TCK = 100;

/** Re-exported for the rigs that take everything from here. */
export { sleep };

// ---------------------------------------------------------------------------------------------
// Processes and their CPU

/** user+sys CPU seconds of a process, from /proc/<pid>/stat; NaN when it is gone. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Resident memory (bytes, VmRSS) and open file descriptors of a process; NaN when it is gone. */
export function processFigures(pid: number): { rss: number; fds: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN) * 1024;
    return { rss, fds: readdirSync(`/proc/${pid}/fd`).length };
  } catch {
    return { rss: NaN, fds: NaN };
  }
}

/** Children of this process with the given command name (Envoy runs exec'd from its shim, kube-env's binaries directly). */
export function childPids(comm: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (name === comm && ppid === process.pid) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

export interface VsxdsProcess {
  readonly pid: number;
  readonly xdsPort: number;
  readonly adminPort: number;
  /** When /readyz first answered 200 (epoch ms, performance clock). */
  readonly readyAt: number;
  output(): string;
  admin(p: string): Promise<Response>;
  stop(): Promise<void>;
  /** SIGKILL: no shutdown, streams just break. */
  kill(): Promise<void>;
}

/** What the image (Dockerfile) runs vsxds with: jemalloc, preloaded, returning freed pages from a thread of its own. */
const MALLOC_CONF = 'background_thread:true';

function findJemalloc(): string | undefined {
  const triplet = ({ x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' } as Record<string, string>)[process.arch];
  return [triplet && `/usr/lib/${triplet}/libjemalloc.so.2`, '/usr/lib/libjemalloc.so.2', '/usr/local/lib/libjemalloc.so.2'].find((p): p is string => !!p && existsSync(p));
}

let jemalloc: string | undefined;

/**
 * The environment that runs vsxds on jemalloc as its image does: Debian's libjemalloc2, installed
 * with apt-get when it is missing (as the Dockerfile's build stage does), or an error saying so.
 */
export function jemallocEnv(): Record<string, string> {
  if (!jemalloc) {
    jemalloc = findJemalloc();
    if (!jemalloc) {
      process.stderr.write('bench: vsxds runs on jemalloc, as in its image; installing Debian\'s libjemalloc2\n');
      // stdout carries the rigs' JSON: apt-get's output goes to stderr.
      const r = spawnSync('sh', ['-c', 'apt-get update -qq && apt-get install -y -qq --no-install-recommends libjemalloc2'], { stdio: ['ignore', 2, 2] });
      jemalloc = findJemalloc();
      if (!jemalloc) throw new Error(`vsxds runs on jemalloc in its image (Dockerfile: LD_PRELOAD, MALLOC_CONF) and the bench runs it the same way, but libjemalloc.so.2 is not installed and apt-get install libjemalloc2 failed (exit ${r.status ?? r.error?.message}): install the package libjemalloc2 (Debian, Ubuntu) or jemalloc`);
    }
  }
  return { LD_PRELOAD: jemalloc, MALLOC_CONF };
}

export interface VsxdsOptions {
  /** Ports to serve on (default: free ones): a restarted vsxds comes back on the same. */
  readonly xdsPort?: number;
  readonly adminPort?: number;
  /** A kubeconfig other than kube-env's (one through a proxy, say). */
  readonly kubeconfig?: string;
  readonly extraArgs?: readonly string[];
  readonly env?: Record<string, string>;
}

/** `node dist/main/cli.js serve --source kubernetes` with default flags but its ports (and `extraArgs`), on jemalloc as in the image; resolves once /readyz answers. */
export async function startVsxds(kube: KubeEnv, options: VsxdsOptions = {}): Promise<VsxdsProcess> {
  // B5_VSXDS_CLI=<path>: another build of vsxds's CLI, to compare two builds on one rig.
  const cli = process.env['B5_VSXDS_CLI'] ?? path.join(ROOT, 'dist', 'main', 'cli.js');
  if (!existsSync(cli)) throw new Error(`${cli} does not exist: run npm run build first`);
  const xdsPort = options.xdsPort ?? (await freePort());
  const adminPort = options.adminPort ?? (await freePort());
  // B5_VSXDS_PROFILE=<dir>: vsxds writes a CPU profile there when it stops.
  const profile = process.env['B5_VSXDS_PROFILE'];
  // B5_VSXDS_NODE_FLAGS="...": Node/V8 flags for vsxds, for experiments (the figures are for none).
  const nodeFlags = (process.env['B5_VSXDS_NODE_FLAGS'] ?? '').split(/\s+/).filter(Boolean);
  // B5_VSXDS_ENV="K=V ...": more environment for vsxds, for experiments (B5_VSXDS_ENV=LD_PRELOAD=
  // runs it on glibc's malloc; the figures are for the image's jemalloc).
  const extraEnv = Object.fromEntries((process.env['B5_VSXDS_ENV'] ?? '').split(/\s+/).filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const child: ChildProcess = spawnTied(process.execPath, [
    ...nodeFlags,
    ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : []),
    cli, 'serve',
    '--source', 'kubernetes',
    '--kubeconfig', options.kubeconfig ?? kube.kubeconfigPath,
    '--xds-address', `127.0.0.1:${xdsPort}`,
    '--admin-address', `127.0.0.1:${adminPort}`,
    ...(options.extraArgs ?? []),
  ], { cwd: ROOT, env: { PATH: process.env['PATH'] ?? '', HOME: tmpdir(), ...jemallocEnv(), ...extraEnv, ...options.env } });
  let out = '';
  const keep = (d: string) => (out = (out + d).slice(-20_000));
  child.stdout?.setEncoding('utf8').on('data', keep);
  child.stderr?.setEncoding('utf8').on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const admin = (p: string) => fetch(`http://127.0.0.1:${adminPort}${p}`);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (gone) throw new Error(`vsxds exited during startup:\n${out}`);
    if (await admin('/readyz').then((r) => r.ok, () => false)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`vsxds not ready within 60 s:\n${out}`);
    }
    await sleep(50);
  }
  const readyAt = performance.timeOrigin + performance.now();
  return {
    pid: child.pid as number,
    xdsPort,
    adminPort,
    readyAt,
    output: () => out,
    admin,
    stop: async () => {
      if (!gone) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
    kill: async () => {
      if (!gone) child.kill('SIGKILL');
      await exited;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Metrics

/** Sum of a Prometheus counter's samples whose labels pass `keep`. */
export function sumMetric(text: string, name: string, keep: (labels: string) => boolean = () => true): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^(\w+)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    if (keep(m[2] ?? '')) sum += Number(m[3]);
  }
  return sum;
}

export function kubeGet(kube: KubeEnv, p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(p, kube.server), { headers: { authorization: `Bearer ${kube.token}` }, ca: kube.caData, rejectUnauthorized: kube.caData !== undefined }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`GET ${p}: ${res.statusCode} ${text.slice(0, 200)}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Polls vsxds's /debug/changes (newest last, the last ~2,000) and keeps the latest copy of each change. */
export class ChangeLog {
  readonly changes = new Map<string, Change>();
  available: boolean | undefined;
  /** The `now` of vsxds's last answer. */
  private since?: number;
  private timer?: NodeJS.Timeout;
  private polling = false;

  constructor(private readonly vsxds: VsxdsProcess) {}

  async poll(): Promise<void> {
    if (this.available === false || this.polling) return;
    this.polling = true;
    try {
      // Only what is still open or closed since the last answer (less a second: clocks are the same, answers overlap).
      const res = await this.vsxds.admin(this.since === undefined ? '/debug/changes' : `/debug/changes?since=${this.since - 1000}`);
      if (!res.ok) {
        this.available = false;
        return;
      }
      const body = (await res.json()) as { now?: number; changes?: Change[] };
      if (!Array.isArray(body.changes)) {
        this.available = false;
        return;
      }
      this.available = true;
      if (typeof body.now === 'number') this.since = body.now;
      for (const c of body.changes) this.changes.set(`${c.key}|${c.kind}|${c.receivedAt}`, c);
    } catch {
      // vsxds busy or gone: the next poll tries again
    } finally {
      this.polling = false;
    }
  }

  start(everyMs: number): void {
    this.timer = setInterval(() => void this.poll(), everyMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

// ---------------------------------------------------------------------------------------------
// VirtualServices

export async function deleteAllVirtualServices(api: CustomObjectsApi, log: (msg: string) => void): Promise<void> {
  type List = { items: Array<{ metadata: { name: string } }> };
  let list: List;
  // Right after the CRD is established its storage may still answer 429 "(re)initializing".
  for (let attempt = 0; ; attempt++) {
    try {
      list = (await api.listNamespacedCustomObject({ group: 'servicemesh.l7mp.io', version: 'v1', namespace: 'default', plural: 'virtualservices' })) as List;
      break;
    } catch (err) {
      if (attempt >= 60) throw err;
      await sleep(500);
    }
  }
  for (const item of list.items) {
    await api.deleteNamespacedCustomObject({ group: 'servicemesh.l7mp.io', version: 'v1', namespace: 'default', plural: 'virtualservices', name: item.metadata.name }).catch(() => undefined);
  }
  if (list.items.length) log(`deleted ${list.items.length} leftover VirtualServices`);
}
