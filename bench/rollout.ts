/**
 * B7 "rollout": do proxies spread over the replicas again after one restarts, and does moving
 * cost a single re-sent response?
 *
 * Two vsxds replicas, each its own process from the CLI (`node dist/main/cli.js serve --source
 * file:DIR`, default flags except the ports, --replica-name and a short
 * --max-connection-age-ms), read the same directory: 100 VirtualServices in namespace `bench`
 * (one per node group, selector app=ingress + group=gNNN; 10 UDP listeners each, every one to
 * an EDS cluster of its own 5 pods, hash key, TCP health check) and the 5,000 pods. 1,000
 * simulated Envoys (`loadgen fleet`, bench/loadgen/fleet.go) each hold a connection of their
 * own and pick a replica at random on every (re)connect, as a Service does.
 *
 * Timeline, per ADS mode and stop signal: all connect; STEADY_S with both replicas up (every
 * connection ages out about once); replica b is stopped (SIGTERM: it refuses new connections
 * and ends its streams after --shutdown-grace-ms, 5 s; SIGKILL: at once), started again on the
 * same ports as soon as it is gone, and the fleet is watched for OBSERVE_S more.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import { freePorts } from '../test/support/udp.js';
import { sleep } from '../test/support/wait.js';
import { cpuSeconds, jemallocEnv } from './calls-rig.js';

export type RolloutMode = 'sotw' | 'delta';
/** How b is stopped; `none`: not at all (the control run). */
export type StopSignal = 'SIGTERM' | 'SIGKILL' | 'none';

export interface RolloutOptions {
  readonly root: string;
  readonly loadgen: string;
  readonly mode: RolloutMode;
  readonly signal: StopSignal;
  readonly clients?: number;
  readonly groups?: number;
  readonly maxConnectionAgeMs?: number;
  readonly graceMs?: number;
  readonly steadyS?: number;
  readonly observeS?: number;
  readonly intervalS?: number;
  /** false: clients reconnect without saying what they hold (loadgen --forget), the control. */
  readonly seedVersions?: boolean;
  /** Node flags for the replicas, e.g. --cpu-prof. */
  readonly nodeArgs?: readonly string[];
  readonly log?: (msg: string) => void;
}

/** One report period of the load generator (counts are for the period; streams at its end). */
export interface RolloutRow {
  readonly t: number;
  readonly streams: readonly [number, number];
  readonly synced: number;
  readonly streamsOpened: number;
  readonly reconnects: number;
  readonly connectFailures: number;
  readonly responses: Record<ResponseClass, number>;
  readonly unchangedByType: Record<'CDS' | 'EDS' | 'LDS', number>;
  readonly unchangedSameVersion: number;
  readonly bytes: number;
  /** CPU cores each replica used in the period (b: whichever process was running). */
  cores: [number, number];
}

export type ResponseClass = 'initial' | 'changed' | 'unchangedAfterReconnect' | 'unchangedOther' | 'empty';

export interface RolloutResult {
  readonly mode: RolloutMode;
  readonly signal: StopSignal;
  readonly seedVersions: boolean;
  readonly clients: number;
  readonly maxConnectionAgeMs: number;
  readonly graceMs: number;
  readonly intervalS: number;
  /** Seconds since the load generator started. */
  readonly events: { synced: number; stop: number; exited: number; ready: number; end: number };
  readonly rows: RolloutRow[];
  readonly summary: {
    readonly reconnects: number;
    readonly connectFailures: number;
    readonly responses: Record<ResponseClass, number>;
    readonly unchangedByType: Record<string, number>;
    readonly unchangedSameVersion: number;
    readonly bytesAfterSync: number;
    readonly streamEnds: Record<string, number>;
  };
  /** Least share of the fleet on b from the stop on, and when (s after the stop) both were within 60/40 again for good. */
  readonly lowestShareB: number; // NaN without a restart
  readonly rebalancedAfterStopS: number | null;
  readonly rebalancedAfterReadyS: number | null;
  /** CPU seconds of each replica: start and connect, synced until the stop (steady), from the stop to the end (b: its new process's start included). */
  readonly cpu: { readonly connect: [number, number]; readonly steady: [number, number]; readonly after: [number, number]; readonly steadyS: number; readonly afterS: number };
}

const pad = (n: number, w: number): string => String(n).padStart(w, '0');

/** The fleet as the file source reads it: one VirtualService per node group and the pods its clusters select. */
export function writeFleetSource(dir: string, groups: number, listeners = 10, endpoints = 5): void {
  const vss: object[] = [];
  const pods: object[] = [];
  for (let g = 0; g < groups; g++) {
    const group = `g${pad(g, 3)}`;
    const ls: object[] = [];
    for (let k = 0; k < listeners; k++) {
      const pool = `${group}-c${pad(k, 2)}`;
      ls.push({
        name: `${group}-l${pad(k, 2)}`,
        udp: {
          port: 10000 + k,
          cluster: {
            name: pool,
            service_discovery: 'eds',
            hash_key: 'callid',
            health_check: { interval: 1000, protocol: 'TCP' },
            endpoints: [{ name: 'worker', host: { selector: { app: 'worker', pool } }, port: 2001, health_check_port: 1233 }],
          },
        },
      });
      for (let e = 0; e < endpoints; e++) {
        const n = g * listeners + k;
        pods.push({
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: `w-${pool}-${e}`, namespace: 'bench', labels: { app: 'worker', pool } },
          status: { podIP: `10.${(n >> 8) & 255}.${n & 255}.${10 + e}`, phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
        });
      }
    }
    vss.push({ apiVersion: 'servicemesh.l7mp.io/v1', kind: 'VirtualService', metadata: { name: group, namespace: 'bench' }, spec: { selector: { app: 'ingress', group }, listeners: ls } });
  }
  writeFileSync(path.join(dir, 'virtualservices.yaml'), vss.map((d) => stringify(d)).join('---\n'));
  writeFileSync(path.join(dir, 'pods.yaml'), pods.map((d) => stringify(d)).join('---\n'));
}

interface Replica {
  readonly name: string;
  child: ChildProcess;
  exited: Promise<void>;
  readonly logFile: string;
}

async function startReplica(root: string, name: string, dir: string, xdsPort: number, adminPort: number, args: readonly string[], logFile: string, nodeArgs: readonly string[] = []): Promise<Replica> {
  const fd = openSync(logFile, 'a');
  const child = spawn(
    process.execPath,
    [...nodeArgs, path.join(root, 'dist', 'main', 'cli.js'), 'serve', '--source', `file:${dir}`, '--xds-address', `127.0.0.1:${xdsPort}`, '--admin-address', `127.0.0.1:${adminPort}`, '--replica-name', name, ...args],
    // On jemalloc, as the image runs vsxds.
    { cwd: root, stdio: ['ignore', fd, fd], env: { ...process.env, ...jemallocEnv() } },
  );
  closeSync(fd);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`replica ${name} exited at startup: ${tail(logFile)}`);
    try {
      if ((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`replica ${name} was not ready within 120 s: ${tail(logFile)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { name, child, exited, logFile };
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-3000);
  } catch {
    return '';
  }
}

async function stopReplica(r: Replica): Promise<void> {
  if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGTERM');
  const timer = setTimeout(() => r.child.kill('SIGKILL'), 15_000);
  await r.exited;
  clearTimeout(timer);
}

export async function runRollout(o: RolloutOptions): Promise<RolloutResult> {
  const log = o.log ?? (() => undefined);
  const clients = o.clients ?? 1000;
  const groups = o.groups ?? 100;
  const ageMs = o.maxConnectionAgeMs ?? 20_000;
  const graceMs = o.graceMs ?? 5_000;
  const steadyS = o.steadyS ?? 30;
  const observeS = o.observeS ?? 60;
  const intervalS = o.intervalS ?? 5;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vsxds-rollout-'));
  // The replicas' logs stay out of the source directory: the file source re-reads it on any
  // file's change, a log's included.
  const source = path.join(dir, 'source');
  mkdirSync(source);
  writeFleetSource(source, groups);
  const [xa, xb, aa, ab] = (await freePorts(4)) as [number, number, number, number];
  const args = ['--max-connection-age-ms', String(ageMs), '--max-connection-age-grace-ms', String(graceMs)];
  const replicas: Replica[] = [];
  let loadgen: ChildProcess | undefined;
  try {
    replicas.push(await startReplica(o.root, 'a', source, xa, aa, args, path.join(dir, 'a.log'), o.nodeArgs));
    replicas.push(await startReplica(o.root, 'b', source, xb, ab, args, path.join(dir, 'b.log'), o.nodeArgs));
    const pids = (): [number | undefined, number | undefined] => [replicas[0]?.child.pid, replicas[1]?.child.pid];

    loadgen = spawn(o.loadgen, ['fleet', '--servers', `127.0.0.1:${xa},127.0.0.1:${xb}`, '--mode', o.mode, '--clients', String(clients), '--groups', String(groups), '--interval', `${intervalS}s`, ...(o.seedVersions === false ? ['--forget'] : [])], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let lgErr = '';
    loadgen.stderr?.on('data', (b: Buffer) => (lgErr = (lgErr + b.toString()).slice(-3000)));
    const lgExit = new Promise<number | null>((resolve) => loadgen?.once('exit', (code) => resolve(code)));

    // CPU of each replica, sampled every 250 ms so a process that exits loses at most that much.
    const cpu: [number, number] = [0, 0];
    const last = [
      { pid: undefined as number | undefined, seconds: 0 },
      { pid: undefined as number | undefined, seconds: 0 },
    ];
    const sampleCpu = (): void => {
      pids().forEach((pid, i) => {
        const now = cpuSeconds(pid);
        const l = last[i];
        if (Number.isNaN(now) || !l) return;
        if (pid !== l.pid) Object.assign(l, { pid, seconds: 0 });
        cpu[i] = (cpu[i] ?? 0) + now - l.seconds;
        l.seconds = now;
      });
    };
    sampleCpu();
    const sampler = setInterval(sampleCpu, 250);

    const rows: RolloutRow[] = [];
    let summary: any;
    let startedAt = 0;
    let cpuAtRow: [number, number] = [...cpu];
    let rowWaiter: (() => void) | undefined;
    const lines = createInterface({ input: loadgen.stdout! });
    lines.on('line', (line) => {
      const m = JSON.parse(line);
      if (m.kind === 'start') startedAt = performance.now();
      else if (m.kind === 'interval') {
        sampleCpu();
        const cores: [number, number] = [(cpu[0] - cpuAtRow[0]) / intervalS, (cpu[1] - cpuAtRow[1]) / intervalS];
        cpuAtRow = [...cpu];
        rows.push({ ...m, cores });
        rowWaiter?.();
      } else if (m.kind === 'summary') summary = m;
    });
    const nextRow = (): Promise<void> => new Promise((resolve) => (rowWaiter = resolve));
    const now = (): number => (performance.now() - startedAt) / 1000;

    // All connect and sync.
    const syncDeadline = Date.now() + 120_000;
    while ((rows.at(-1)?.synced ?? 0) < clients) {
      if (Date.now() > syncDeadline) throw new Error(`only ${rows.at(-1)?.synced ?? 0} of ${clients} clients synced within 120 s: ${lgErr}`);
      await Promise.race([nextRow(), lgExit.then(() => Promise.reject(new Error(`loadgen exited: ${lgErr}`)))]);
    }
    const synced = now();
    sampleCpu();
    const cpuSynced: [number, number] = [...cpu];
    log(`B7 ${o.mode} ${o.signal}: ${clients} clients synced at ${synced.toFixed(1)} s, split ${rows.at(-1)?.streams.join('/')}`);
    await sleep(steadyS * 1000);

    sampleCpu();
    const cpuSteady: [number, number] = [...cpu];
    const stop = now();
    let [exited, ready] = [stop, stop];
    if (o.signal !== 'none') {
      const b = replicas[1] as Replica;
      b.child.kill(o.signal);
      await b.exited;
      exited = now();
      sampleCpu();
      replicas[1] = await startReplica(o.root, 'b', source, xb, ab, args, path.join(dir, 'b.log'), o.nodeArgs);
      ready = now();
      log(`B7 ${o.mode} ${o.signal}: b stopped at ${stop.toFixed(1)} s, gone ${(exited - stop).toFixed(1)} s later, ready again ${(ready - exited).toFixed(1)} s after that`);
      await sleep(Math.max(0, observeS * 1000 - (ready - stop) * 1000));
    }
    // One more report, so the last period ends after the observation.
    await nextRow();
    const end = now();
    sampleCpu();
    clearInterval(sampler);
    loadgen.stdin?.end();
    const code = await lgExit;
    if (code !== 0 || !summary) throw new Error(`loadgen fleet failed (${code}): ${lgErr}`);

    const share = (r: RolloutRow): number => (r.streams[1] / Math.max(1, r.streams[0] + r.streams[1])) * 100;
    const after = o.signal === 'none' ? [] : rows.filter((r) => r.t > stop);
    const lowestShareB = after.length ? Math.min(...after.map(share)) : NaN;
    // From the stop on, the first report after which every report was within 60/40.
    let rebalancedAt: number | null = null;
    for (const r of after) {
      const ok = share(r) >= 40 && share(r) <= 60;
      if (ok && rebalancedAt === null) rebalancedAt = r.t;
      if (!ok) rebalancedAt = null;
    }
    const syncedRowT = rows.find((r) => r.synced >= clients)?.t ?? 0;
    return {
      mode: o.mode,
      signal: o.signal,
      seedVersions: o.seedVersions !== false,
      clients,
      maxConnectionAgeMs: ageMs,
      graceMs,
      intervalS,
      events: { synced, stop, exited, ready, end },
      rows,
      summary: {
        reconnects: summary.reconnects,
        connectFailures: summary.connectFailures,
        responses: summary.responses,
        unchangedByType: summary.unchangedByType,
        unchangedSameVersion: summary.unchangedSameVersion,
        bytesAfterSync: rows.filter((r) => r.t > syncedRowT).reduce((s, r) => s + r.bytes, 0),
        streamEnds: summary.streamEnds ?? {},
      },
      lowestShareB,
      rebalancedAfterStopS: rebalancedAt === null ? null : rebalancedAt - stop,
      rebalancedAfterReadyS: rebalancedAt === null ? null : rebalancedAt - ready,
      cpu: {
        connect: cpuSynced,
        steady: [cpuSteady[0] - cpuSynced[0], cpuSteady[1] - cpuSynced[1]],
        after: [cpu[0] - cpuSteady[0], cpu[1] - cpuSteady[1]],
        steadyS: stop - synced,
        afterS: end - stop,
      },
    };
  } finally {
    loadgen?.kill('SIGKILL');
    for (const r of replicas) await stopReplica(r);
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Tables

const f0 = (x: number | null | undefined, d = 0): string => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));

function mdTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ')} |`;
  return [line(headers), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

const signalLabel = (r: RolloutResult): string => (r.signal === 'none' ? `none${r.seedVersions ? '' : ' (control: reconnects without versions)'}` : r.signal);

const shareB = (r: RolloutRow): number => (r.streams[1] / Math.max(1, r.streams[0] + r.streams[1])) * 100;

/** The k-th report after the stop (k ≤ 0: the report at or before the stop is 0, the one before it -1). */
function periodRow(res: RolloutResult, k: number): RolloutRow | undefined {
  const firstAfter = res.rows.findIndex((r) => r.t > res.events.stop);
  const i = (firstAfter < 0 ? res.rows.length : firstAfter) + k - 1;
  return i >= 0 ? res.rows[i] : undefined;
}

export function rolloutTables(results: readonly RolloutResult[]): string {
  if (results.length === 0) return '## B7: rollout — no results';
  const first = results[0] as RolloutResult;
  const rows = results.map((r) => {
    const before = periodRow(r, 0);
    const s = r.summary;
    const cores = (cpu: [number, number], secs: number): string => `${f0(cpu[0] / secs, 2)} / ${f0(cpu[1] / secs, 2)}`;
    return [
      r.mode,
      signalLabel(r),
      before ? `${before.streams[0]} / ${before.streams[1]}` : '–',
      Number.isFinite(r.lowestShareB) ? `${f0(r.lowestShareB)}%` : '–',
      `${f0(r.rebalancedAfterStopS)} (${f0(r.rebalancedAfterReadyS)})`,
      r.signal === 'none' ? '–' : `${f0(r.events.exited - r.events.stop, 1)} / ${f0(r.events.ready - r.events.exited, 1)}`,
      `${s.reconnects} (${s.connectFailures})`,
      `${s.responses.unchangedAfterReconnect} / ${s.responses.unchangedOther}`,
      String(s.responses.changed),
      String(s.responses.empty),
      f0(s.bytesAfterSync / 1024, 0),
      cores(r.cpu.steady, r.cpu.steadyS),
      `${f0(r.cpu.after[0], 1)} / ${f0(r.cpu.after[1], 1)}`,
    ];
  });
  const periods = Math.max(0, ...results.filter((r) => r.signal !== 'none').map((r) => r.rows.filter((x) => x.t > r.events.stop).length));
  const ks = [-1, 0, ...Array.from({ length: periods }, (_, j) => j + 1)];
  const restarts = results.filter((r) => r.signal !== 'none');
  const splitRows = restarts.map((r) => [r.mode, r.signal, ...ks.map((k) => {
    const p = periodRow(r, k);
    return p ? f0(shareB(p)) : '';
  })]);
  const reconnectRows = restarts.map((r) => [r.mode, r.signal, ...ks.map((k) => {
    const p = periodRow(r, k);
    return p ? String(p.reconnects) : '';
  })]);
  return [
    `## B7: rollout — ${first.clients} simulated Envoys over 2 replicas (CLI, file source), one restarted; --max-connection-age-ms ${first.maxConnectionAgeMs}, grace ${first.graceMs} ms`,
    '',
    mdTable(
      [
        'mode',
        'stop',
        'streams a / b before',
        'lowest b share',
        'back within 60/40: s after stop (after b ready)',
        'b gone / ready again (s)',
        'reconnects (failed attempts)',
        're-sent after reconnect / other',
        'changed',
        'empty (delta)',
        'KB sent after sync',
        'cores a / b before stop',
        'CPU s a / b after stop',
      ],
      rows,
    ),
    '',
    `### B7: share of the streams on b (%) at each ${first.intervalS} s report, by its number from b's stop (+1: the first report after it; labelled in seconds, ±1)`,
    '',
    mdTable(['mode', 'stop', ...ks.map((k) => (k <= 0 ? String(k * first.intervalS) : `+${k * first.intervalS}`))], splitRows),
    '',
    `### B7: reconnects per ${first.intervalS} s period`,
    '',
    mdTable(['mode', 'stop', ...ks.map((k) => (k <= 0 ? String(k * first.intervalS) : `+${k * first.intervalS}`))], reconnectRows),
  ].join('\n');
}
