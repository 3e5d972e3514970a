/**
 * `npm run bench`: builds the Go load generator and peer (cached under $VSXDS_CACHE) and the
 * TypeScript (tsc, into bench/.build), runs the scenarios of bench/README.md one server at a
 * time, prints the tables and writes bench/results/<time>-<mode>.json.
 *
 *   BENCH_QUICK=1        N = 1,000 only, B3 at 1,000 VirtualServices (a few minutes)
 *   BENCH_PROFILE=1      instead of the tables: CPU profiles of vsxds at N = 10,000 (all-groups
 *                        change) and of B3 at 10,000 VirtualServices, summarized
 *   BENCH_IDLE_WAIT=30   seconds to wait, before each server, for other processes to leave
 *                        the cores alone (0: do not wait)
 *   BENCH_ONLY=B5        run only these scenarios (comma-separated: B1, B4, B1core, B3, B5core, B5, B6, B7,
 *                        and soak, which runs only when named: 30 minutes, SOAK_ARGS="--minutes 5")
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatSummary, summarizeProfiles, type ProfileSummary } from './profile-summary.js';
import { rolloutTables, runRollout, type RolloutResult } from './rollout.js';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(BENCH, '..');
const CACHE = process.env['VSXDS_CACHE'] ?? path.join(os.homedir(), '.cache', 'vsxds');
const BIN = path.join(CACHE, 'bench-bin');
/** The TypeScript entry points run as tsc output, as `npm start` runs vsxds, not through tsx. */
const BUILD = path.join(BENCH, '.build');
const built = (name: string): string => path.join(BUILD, 'bench', name.replace(/\.ts$/, '.js'));
const RESULTS = path.join(BENCH, 'results');
const QUICK = process.env['BENCH_QUICK'] === '1';
const PROFILE = process.env['BENCH_PROFILE'] === '1';
const IDLE_WAIT_S = Number(process.env['BENCH_IDLE_WAIT'] ?? '30');
const SCENARIOS = ['B1', 'B4', 'B1core', 'B3', 'B5core', 'B5', 'B6', 'B7', 'soak'] as const;
const ONLY = (process.env['BENCH_ONLY'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
for (const o of ONLY) if (!(SCENARIOS as readonly string[]).includes(o)) throw new Error(`BENCH_ONLY: unknown scenario ${o} (have ${SCENARIOS.join(', ')})`);
/** The soak (30 minutes) runs only when BENCH_ONLY names it. */
const selected = (s: (typeof SCENARIOS)[number]): boolean => (ONLY.length === 0 && s !== 'soak') || ONLY.includes(s);

type ServerKind = 'vsxds' | 'go-control-plane' | 'stub';
type Mode = 'sotw' | 'delta';
type Scope = 'one' | 'all' | 'noop';

interface FleetShape {
  readonly groups: number;
  readonly clusters: number;
  readonly endpoints: number;
}
const B1_SHAPE: FleetShape = { groups: 100, clusters: 10, endpoints: 5 };
const B4_SHAPE: FleetShape = { groups: 1, clusters: 10_000, endpoints: 5 };

// ---------------------------------------------------------------------------------------------
// Processes

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function buildGo(): void {
  mkdirSync(BIN, { recursive: true });
  const env = {
    ...process.env,
    GOPATH: path.join(CACHE, 'go'),
    GOCACHE: path.join(CACHE, 'go-build'),
    GOFLAGS: '-mod=mod -buildvcs=false',
  };
  for (const [out, pkg] of [
    ['loadgen', './loadgen'],
    ['peer-gcp', './peer-gcp'],
  ] as const) {
    const r = spawnSync('go', ['build', '-o', path.join(BIN, out), pkg], { cwd: BENCH, env, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`go build ${pkg} failed (is Go installed? the module proxy reachable?)`);
  }
}

/** CPU seconds the whole machine has been busy (all of /proc/stat's first line but idle and iowait). */
function machineBusySeconds(): number {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  return fields.reduce((sum, v, i) => (i === 3 || i === 4 || i >= 8 ? sum : sum + v), 0) / 100;
}

/**
 * On a shared machine other processes (test suites, builds) disturb latencies; wait a while
 * for them to finish. Returns the cores they were using when the wait ended.
 */
async function waitForIdle(): Promise<number> {
  const deadline = Date.now() + IDLE_WAIT_S * 1000;
  for (let announced = false; ; ) {
    const before = machineBusySeconds();
    await new Promise((r) => setTimeout(r, 1000));
    const busy = machineBusySeconds() - before;
    if (busy < 0.25 || Date.now() >= deadline) return busy;
    if (!announced) log(`other processes are using ${busy.toFixed(1)} cores; waiting up to ${IDLE_WAIT_S} s for them`);
    announced = true;
  }
}

function buildTs(): void {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  rmSync(BUILD, { recursive: true, force: true });
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(BENCH, 'tsconfig.build.json')], { cwd: ROOT, encoding: 'utf8' });
  // Type errors elsewhere in a tree being edited do not stop tsc from emitting; missing output does.
  if (!existsSync(built('vsxds-server.ts'))) throw new Error(`tsc produced no output: ${r.stdout}${r.stderr}`);
  if (r.status !== 0) log(`tsc reported type errors (the bench runs what it emitted):\n${r.stdout.trim().split('\n').slice(0, 5).join('\n')}`);
  // src/xds finds the vendored protos, and src/model the CRD, two directories above themselves.
  symlinkSync(path.join(ROOT, 'protos'), path.join(BUILD, 'protos'));
  symlinkSync(path.join(ROOT, 'crds'), path.join(BUILD, 'crds'));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

interface RunningServer {
  readonly kind: ServerKind;
  readonly pid: number;
  readonly target: string;
  readonly control: string;
  stop(): Promise<void>;
}

async function startServer(kind: ServerKind, shape: FleetShape, profileDir?: string): Promise<RunningServer> {
  const [port, controlPort] = [await freePort(), await freePort()];
  const shapeArgs = ['--groups', String(shape.groups), '--clusters', String(shape.clusters), '--endpoints', String(shape.endpoints)];
  const [cmd, args] =
    kind === 'vsxds'
      ? [
          process.execPath,
          [
            '--expose-gc',
            ...(profileDir ? ['--enable-source-maps'] : []),
            built('vsxds-server.ts'),
            '--port',
            String(port),
            '--control-port',
            String(controlPort),
            ...shapeArgs,
            ...(profileDir ? ['--profile-dir', profileDir] : []),
          ],
        ]
      : kind === 'go-control-plane'
        ? [path.join(BIN, 'peer-gcp'), ['--listen', `127.0.0.1:${port}`, '--control', `127.0.0.1:${controlPort}`, ...shapeArgs]]
        : [path.join(BIN, 'loadgen'), ['stub', '--listen', `127.0.0.1:${port}`, '--control', `127.0.0.1:${controlPort}`, ...shapeArgs]];
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const control = `http://127.0.0.1:${controlPort}`;
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${kind} exited at startup: ${stderr}`);
    try {
      if ((await fetch(`${control}/ready`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${kind} did not become ready: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    kind,
    pid: child.pid as number,
    target: `127.0.0.1:${port}`,
    control,
    stop: async () => {
      await fetch(`${control}/quit`, { method: 'POST' }).catch(() => undefined);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

interface ScenarioResult {
  scope: Scope;
  rep: number;
  affectedClients: number;
  completed: number;
  applyMs: number;
  ackP50Ms: number;
  ackP99Ms: number;
  ackMaxMs: number;
  recvP50Ms: number;
  serverCpuSec: number;
  loadgenCpuSec: number;
  otherCpuSec: number;
  wallSec: number;
  responses: number;
  bytes: number;
  responsesByType: Record<string, number>;
}

interface LoadgenOutput {
  label: string;
  mode: Mode;
  clients: number;
  conns: number;
  connect: {
    seconds: number;
    syncP50Ms: number;
    syncP99Ms: number;
    serverCpuSec: number;
    otherCpuSec: number;
    rssBeforeKB: number;
    rssAfterKB: number;
    rssAfterGcKB: number;
    bytesPerClient: number;
  };
  scenarios: ScenarioResult[];
  serverPeakRssKB: number;
  loadgenPeakRssKB: number;
  failedStreams: number;
  errors?: string[];
}

function runLoadgen(server: RunningServer, args: string[]): Promise<LoadgenOutput> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      path.join(BIN, 'loadgen'),
      ['run', '--target', server.target, '--control', server.control, '--pid', String(server.pid), '--label', server.kind, ...args],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => {
      err = (err + b.toString()).slice(-4000);
      process.stderr.write(b);
    });
    child.once('exit', (code) => {
      if (code === 0) resolve(JSON.parse(out) as LoadgenOutput);
      else reject(new Error(`loadgen failed (${code}): ${err.trim().split('\n').pop()}`));
    });
  });
}

async function session(kind: ServerKind, shape: FleetShape, args: string[], profileDir?: string): Promise<LoadgenOutput> {
  await waitForIdle();
  const server = await startServer(kind, shape, profileDir);
  try {
    return await runLoadgen(server, ['--groups', String(shape.groups), '--clusters', String(shape.clusters), ...args]);
  } finally {
    await server.stop();
  }
}

function runTranslateScale(vs: number, churnSeconds: number, profileDir?: string, shards = 10): Record<string, any> {
  const r = spawnSync(
    process.execPath,
    [
      '--expose-gc',
      ...(profileDir ? ['--enable-source-maps'] : []),
      built('translate-scale.ts'),
      '--vs',
      String(vs),
      '--shards',
      String(shards),
      '--churn-seconds',
      String(churnSeconds),
      ...(profileDir ? ['--profile-dir', profileDir] : []),
    ],
    { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 },
  );
  if (r.status !== 0) throw new Error(`translate-scale --vs ${vs} --shards ${shards} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, any>;
}

function runFanoutCore(mode: Mode, clients: number): Record<string, any> {
  const r = spawnSync(process.execPath, ['--expose-gc', built('fanout-core.ts'), '--mode', mode, '--clients', String(clients)], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`fanout-core ${mode} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, any>;
}

function runCallsCore(mode: Mode, concurrent: number, calls: number): Record<string, any> {
  const r = spawnSync(process.execPath, ['--expose-gc', built('calls-core.ts'), '--mode', mode, '--concurrent', String(concurrent), '--calls', String(calls)], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`calls-core ${mode} --concurrent ${concurrent} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, any>;
}

/** `npm run build`: B5 runs vsxds from dist/ as a user does. */
function buildDist(): void {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, encoding: 'utf8' });
  if (!existsSync(path.join(ROOT, 'dist', 'main', 'cli.js'))) throw new Error(`npm run build produced no dist/main/cli.js: ${r.stdout}${r.stderr}`);
  if (r.status !== 0) log(`npm run build reported type errors (B5 runs what it emitted):\n${r.stdout.trim().split('\n').slice(0, 5).join('\n')}`);
}

/**
 * B5 (bench/calls.ts) and B6 (bench/faults.ts) in a process of their own. They run under tsx
 * rather than from bench/.build: they are rigs (kube-env, Envoy and the load, from test/support,
 * which find their binaries relative to the repository), and what they measure, vsxds, runs from
 * dist/ as `npm start` does.
 */
function runRig(script: string, args: string[], what: string): Record<string, any> {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(BENCH, script), ...(QUICK ? ['--quick'] : []), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 << 20,
  });
  const line = r.stdout.trim().split('\n').at(-1) ?? '';
  if (r.status !== 0 || !line.startsWith('{')) throw new Error(`${what} failed (exit ${r.status}): ${r.stdout.slice(-2000)}`);
  return JSON.parse(line) as Record<string, any>;
}

const rigArgs = (variable: string): string[] => (process.env[variable] ?? '').split(/\s+/).filter(Boolean);
const runCalls = (): Record<string, any> => runRig('calls.ts', rigArgs('B5_ARGS'), 'B5 calls');
const runFaults = (): Record<string, any> => runRig('faults.ts', rigArgs('B6_ARGS'), 'B6 faults');
const runSoak = (svg: string): Record<string, any> => runRig('soak.ts', ['--svg', svg, ...rigArgs('SOAK_ARGS')], 'soak');

// ---------------------------------------------------------------------------------------------
// Tables

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : (s[Math.floor((s.length - 1) / 2)] as number);
};
const fmt = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toFixed(digits) : '–');
const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : '–');

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ')} |`;
  return [line(headers), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

interface Stat {
  p50: number;
  p99: number;
  max: number;
  cpu: number;
  completed: number;
  affected: number;
  bytes: number;
  /** Cores other processes on the machine used meanwhile: the measurement's noise floor. */
  otherCores: number;
}

/** Median over repetitions of each statistic; `completed` is the worst repetition's. */
function stat(out: LoadgenOutput | undefined, scope: Scope): Stat | undefined {
  const reps = out?.scenarios.filter((s) => s.scope === scope) ?? [];
  if (reps.length === 0) return undefined;
  return {
    p50: median(reps.map((r) => r.ackP50Ms)),
    p99: median(reps.map((r) => r.ackP99Ms)),
    max: median(reps.map((r) => r.ackMaxMs)),
    cpu: median(reps.map((r) => r.serverCpuSec)),
    completed: Math.min(...reps.map((r) => r.completed)),
    affected: reps[0]?.affectedClients ?? 0,
    bytes: median(reps.map((r) => r.bytes)),
    otherCores: median(reps.map((r) => r.otherCpuSec / Math.max(r.wallSec, 0.001))),
  };
}

const memPerStreamKB = (o: LoadgenOutput | undefined): number => (o ? (o.connect.rssAfterKB - o.connect.rssBeforeKB) / o.clients : NaN);
const memPerStreamGcKB = (o: LoadgenOutput | undefined): number => (o ? (o.connect.rssAfterGcKB - o.connect.rssBeforeKB) / o.clients : NaN);

type B1Key = `${number}/${Mode}/${ServerKind}`;

function b1Tables(runs: Map<B1Key, LoadgenOutput>, ns: number[]): string {
  const rows: string[][] = [];
  const memRows: string[][] = [];
  for (const n of ns) {
    for (const mode of ['sotw', 'delta'] as const) {
      const get = (k: ServerKind) => runs.get(`${n}/${mode}/${k}`);
      for (const scope of ['one', 'all', 'noop'] as const) {
        const v = stat(get('vsxds'), scope);
        const g = stat(get('go-control-plane'), scope);
        const s = stat(get('stub'), scope);
        const cell = (x: Stat | undefined): string =>
          scope === 'noop'
            ? 'nothing sent'
            : x
              ? `${fmt(x.p50)} / ${fmt(x.p99)} / ${fmt(x.max)}${x.completed < x.affected ? ` (${x.completed}/${x.affected}!)` : ''}`
              : '–';
        rows.push([
          String(n),
          mode,
          scope === 'noop' ? 'none¹' : scope,
          String(v?.affected ?? g?.affected ?? ''),
          cell(v),
          cell(g),
          scope === 'noop' ? '–' : ratio(v?.p99 ?? NaN, g?.p99 ?? NaN),
          `${fmt(v?.cpu ?? NaN, 2)} / ${fmt(g?.cpu ?? NaN, 2)}`,
          ratio(v?.cpu ?? NaN, g?.cpu ?? NaN),
          s && scope !== 'noop' ? `${fmt(s.p99)}` : '–',
          fmt(Math.max(v?.otherCores ?? 0, g?.otherCores ?? 0, s?.otherCores ?? 0), 2),
        ]);
      }
      const v = get('vsxds');
      const g = get('go-control-plane');
      memRows.push([
        String(n),
        mode,
        `${fmt(memPerStreamKB(v), 1)} / ${fmt(memPerStreamKB(g), 1)}`,
        ratio(memPerStreamKB(v), memPerStreamKB(g)),
        `${fmt(memPerStreamGcKB(v), 1)} / ${fmt(memPerStreamGcKB(g), 1)}`,
        `${fmt((v?.serverPeakRssKB ?? NaN) / 1024)} / ${fmt((g?.serverPeakRssKB ?? NaN) / 1024)}`,
        ratio(v?.serverPeakRssKB ?? NaN, g?.serverPeakRssKB ?? NaN),
        `${fmt(v?.connect.seconds ?? NaN, 1)} / ${fmt(g?.connect.seconds ?? NaN, 1)} / ${fmt(get('stub')?.connect.seconds ?? NaN, 1)}`,
        `${fmt(v?.connect.bytesPerClient ?? NaN)} / ${fmt(g?.connect.bytesPerClient ?? NaN)}`,
      ]);
    }
  }
  return [
    '## B1/B2: change → every affected client received and ACKed (ms, p50 / p99 / max over clients; median of repetitions)',
    '',
    table(
      ['N', 'mode', 'change', 'clients', 'vsxds', 'go-control-plane', 'p99 ratio', 'server CPU s (vsxds / gcp)', 'CPU ratio', 'stub p99', 'other load²'],
      rows,
    ),
    '',
    '¹ every group\'s unchanged snapshot set again, as ConfigPipeline does when a group\'s inputs changed but its configuration did not: the cost of a no-op.',
    '² cores used by other processes on the machine during the measurement (worst of the three servers); above ~0.2 the latencies of that row are disturbed.',
    '',
    '## B1/B2: memory and connecting',
    '',
    table(
      [
        'N',
        'mode',
        'KB per idle stream (vsxds / gcp)',
        'ratio',
        'after GC',
        'peak RSS MB (vsxds / gcp)',
        'ratio',
        'connect+sync s (vsxds / gcp / stub)',
        'bytes per client',
      ],
      memRows,
    ),
  ].join('\n');
}

function loadgenTable(runs: Map<B1Key, LoadgenOutput>, ns: number[]): string {
  const rows: string[][] = [];
  for (const n of ns) {
    for (const mode of ['sotw', 'delta'] as const) {
      const s = runs.get(`${n}/${mode}/stub`);
      const all = (o: LoadgenOutput | undefined) => o?.scenarios.filter((x) => x.scope === 'all') ?? [];
      const lg = (o: LoadgenOutput | undefined): number => median(all(o).map((x) => x.loadgenCpuSec));
      const st = stat(s, 'all');
      rows.push([
        String(n),
        mode,
        st ? `${fmt(st.p50)} / ${fmt(st.p99)} / ${fmt(st.max)}` : '–',
        fmt(st?.cpu ?? NaN, 2),
        `${fmt(lg(s), 2)} / ${fmt(lg(runs.get(`${n}/${mode}/go-control-plane`)), 2)} / ${fmt(lg(runs.get(`${n}/${mode}/vsxds`)), 2)}`,
        fmt((s?.loadgenPeakRssKB ?? NaN) / 1024),
      ]);
    }
  }
  return [
    '## Load generator baseline: the same all-groups change against the stub (pre-encoded responses, no per-stream work)',
    '',
    table(['N', 'mode', 'stub: ms p50 / p99 / max', 'stub CPU s', 'loadgen CPU s (stub / gcp / vsxds runs)', 'loadgen peak RSS MB'], rows),
  ].join('\n');
}

function coreTable(results: Record<string, any>[]): string {
  const rows = results.map((r) => [
    String(r['clients']),
    String(r['mode']),
    `${fmt(r['all'].buildMs)} / ${fmt(r['all'].pushMs)} / ${fmt(r['all'].ackMs)}`,
    fmt(r['all'].perResponseUs),
    fmt(r['noop'].totalMs),
    fmt(r['one'].totalMs),
    fmt(r['heapPerStreamKB'], 1),
  ]);
  return [
    '## B1 core: vsxds stream logic without gRPC (CPU ms of one thread, median; bench/fanout-core.ts)',
    '',
    table(['N', 'mode', 'all groups: build / push / ACKs', 'µs per response (push + ACK)', 'no-op re-set', 'one group', 'heap KB per stream'], rows),
  ].join('\n');
}

function callsCoreTable(results: Record<string, any>[]): string {
  const rows = results.map((r) => [
    String(r['concurrent']),
    String(r['mode']),
    fmt(r['cpuMsPerCall'], 2),
    `${fmt(r['buildAndPushMsPerCall'], 2)} / ${fmt(r['ackMsPerCall'], 2)}`,
    fmt(r['bytesPerCall'] / 1024, 1),
    `${fmt(r['heapMB'].halfway)} / ${fmt(r['heapMB'].end)}`,
    `${fmt(r['statusReportMs'].p50, 2)} / ${fmt(r['statusReportMs'].p99, 2)}`,
  ]);
  return [
    '## B5 core: one call set up and torn down in vsxds\'s own logic, warm, without API server, gRPC or Envoy (CPU ms of the process; bench/calls-core.ts)',
    '',
    table(['concurrent calls', 'mode', 'CPU ms per call', 'build + push / ACKs (main thread)', 'KB sent per call', 'heap MB halfway / at the end', 'status report ms p50 / p99'], rows),
  ].join('\n');
}

function b3Table(results: Record<string, any>[]): string {
  const rows = results.map((r) => [
    String(r['virtualServices']),
    `${r['groups']} / ${r['virtualServicesPerGroup']}`,
    `${r['resources'].listeners} / ${r['resources'].clusters} / ${r['resources'].endpoints}`,
    `${fmt(r['cold'].totalMs)} (${fmt(r['cold'].snapshotMs)})`,
    `${fmt(r['cold'].heapMB)} / ${fmt(r['cold'].rssMB)}`,
    `${fmt(r['changeOne'].medianMs, 1)} / ${fmt(r['changeOne'].p99Ms, 1)} (${fmt(r['changeOne'].snapshotMs, 1)})`,
    String(r['changeOne'].groupsRebuilt),
    `${fmt(r['churn'].cpuShareOfOneCore * 100)}%`,
    `${fmt(r['churn'].medianMs)} / ${fmt(r['churn'].p99Ms)} (${fmt(r['churn'].snapshotMs)})`,
    String(r['churn'].groupsRebuilt),
    `${fmt(r['peakRssMB'])}`,
  ]);
  return [
    '## B3: translation scale through ConfigPipeline (node groups all watched; ms, in parentheses the part in setSnapshot)',
    '',
    table(
      [
        'VirtualServices',
        'groups / VS per group',
        'listeners / clusters / endpoints',
        'cold build',
        'cold heap / RSS MB',
        'one VS changed: p50 / p99',
        'groups rebuilt',
        'pods replaced 1,000/s: CPU of one core',
        'churn build p50 / p99',
        'groups rebuilt',
        'peak RSS MB',
      ],
      rows,
    ),
  ].join('\n');
}

function b4Table(runs: Map<string, LoadgenOutput>): string {
  const rows: string[][] = [];
  for (const kind of ['vsxds', 'go-control-plane'] as const) {
    const s = stat(runs.get(`${kind}/sotw`), 'one');
    const d = stat(runs.get(`${kind}/delta`), 'one');
    const perClient = (x: Stat | undefined): number => (x ? x.bytes / x.affected : NaN);
    rows.push([
      kind,
      fmt(perClient(s)),
      fmt(perClient(d)),
      ratio(perClient(s), perClient(d)),
      `${fmt(s?.p99 ?? NaN)} / ${fmt(d?.p99 ?? NaN)}`,
      `${fmt(runs.get(`${kind}/sotw`)?.connect.bytesPerClient ?? NaN)} / ${fmt(runs.get(`${kind}/delta`)?.connect.bytesPerClient ?? NaN)}`,
    ]);
  }
  return [
    '## B4: one endpoint changes among 10,000 clusters (one group, 10 clients)',
    '',
    table(['server', 'SotW bytes per client', 'delta bytes per client', 'SotW / delta', 'p99 ms (SotW / delta)', 'initial sync bytes (SotW / delta)'], rows),
  ].join('\n');
}

function b5Tables(b5: Record<string, any>): string {
  const results = (b5['results'] ?? []) as Array<Record<string, any>>;
  const ms = (x: number): string => fmt(x);
  const rows = results.map((r) => {
    const s = r['summary'];
    const w = r['apiWritesPerCall'];
    return [
      r['mode'],
      r['name'],
      String(s.created),
      `${ms(s.setupMs.p50)} / ${ms(s.setupMs.p99)} / ${ms(s.setupMs.max)}`,
      `${ms(s.ownSetupMs.p50)} / ${ms(s.ownSetupMs.p99)} / ${ms(s.ownSetupMs.max)}`,
      String(s.neverConnected + s.createErrors),
      `${ms(s.teardownMs.p50)} (${s.teardownMs.samples})`,
      `${s.established.lost} / ${s.established.sent} (${s.established.callsWithLoss})`,
      `${s.handoverLoss.lost} (${s.handoverLoss.calls})`,
      r['udpDrops'] ? `${r['udpDrops'].total} (${r['udpDrops'].sinks} / ${r['udpDrops'].total - r['udpDrops'].sinks})` : '–',
      `${s.split} (${s.splitFreshPort} / ${s.splitViaPreviousListener})`,
      `${s.reusedPort.connected}/${s.reusedPort.calls}`,
      String(s.staleDatagrams),
      `${fmt(r['cpuMsPerCall'].vsxds, 1)} / ${fmt(r['cpuMsPerCall'].envoy, 1)} / ${fmt(r['cpuMsPerCall'].rig, 1)} / ${fmt(r['cpuMsPerCall'].kube, 1)}`,
      r['cold'] ? `${fmt(r['cold'].vsxdsMsPerCall, 1)} (${r['cold'].calls})` : '–',
      r['idleMsPerS'] !== undefined ? fmt(r['idleMsPerS'], 1) : '–',
      r['rigLoopDelayMs'] ? `${ms(r['rigLoopDelayMs'].p50)} / ${ms(r['rigLoopDelayMs'].p99)} / ${ms(r['rigLoopDelayMs'].max)}` : '–',
      fmt(r['adsBytesPerCall']),
      r['vsxdsKubeWritesPerCall'] !== null ? `${fmt(r['vsxdsKubeWritesPerCall'], 1)} (vsxds)` : `${fmt(w.status, 1)} / ${fmt(w.events, 1)} / ${fmt(w.leases + w.other, 1)}`,
      `${r['envoy'].drainingEnd} / ${r['envoy'].drainingMax}`,
      `${r['envoy'].activeEnd} / ${r['envoy'].activeMax}`,
    ];
  });
  const stages = ['api', 'queue', 'build', 'Cluster push', 'Cluster ack', 'ClusterLoadAssignment push', 'ClusterLoadAssignment ack', 'Listener push', 'Listener ack', 'envoy→datagram', 'watch→datagram'];
  const bRows = results.map((r) => [
    r['mode'],
    r['name'],
    ...(r['breakdown']
      ? [String(r['breakdown'].calls), ...stages.map((k) => (r['breakdown'].stages[k] ? `${fmt(r['breakdown'].stages[k].p50)} / ${fmt(r['breakdown'].stages[k].p99)}` : '–'))]
      : ['n/a', ...stages.map(() => 'n/a')]),
  ]);
  const flags = (b5['envoyFlags'] as string[] | undefined)?.join(' ') || 'none';
  return [
    `## B5: calls through kube-apiserver, vsxds (CLI, default flags) and one Envoy (flags: ${flags}; concurrency ${String(b5['envoyConcurrency'])})`,
    '',
    table(
      [
        'mode',
        'calls',
        'n',
        'setup ms p50 / p99 / max',
        'own-listener setup ms',
        'never connected',
        'teardown ms p50 (sampled)',
        'lost datagrams / sent (calls)',
        'handover loss (calls)',
        'kernel UDP drops, full buffers (rig sinks / elsewhere)',
        'split (fresh port / via previous listener)',
        'reused ports connected',
        'stale datagrams',
        'CPU ms per call: vsxds / Envoy / rig / apiserver+etcd',
        'vsxds CPU ms per warm-up call (calls): a fresh process',
        'vsxds idle CPU ms/s',
        'rig loop delay ms p50 / p99 / max',
        'ADS bytes per call',
        'API writes per call: status / events / other',
        'Envoy draining end / max',
        'active end / max',
      ],
      rows,
    ),
    '',
    '### B5: where a setup goes (ms p50 / p99, from vsxds /debug/changes and the rig\'s create and first-datagram times)',
    '',
    table(['mode', 'calls', 'matched', ...stages], bRows),
  ].join('\n');
}

function b6Table(b6: Record<string, any>): string {
  const ms = (x: number): string => fmt(x);
  const s1 = (x: number | null): string => (x === null ? '–' : fmt(x / 1000, 1));
  const detail = (r: Record<string, any>): string => {
    const d = r['detail'];
    switch (r['fault']) {
      case 'vsxds-restart':
        return `down ${s1(d.downMs)} s; Envoy reconnected ${ms(d.envoyReconnectMsAfterReady?.[r['mode']])} ms after ready`;
      case 'api-outage':
        return `down ${s1(d.downMs)} s (+${s1(d.apiServerReadyMs)} s to ready); listeners Envoy removed meanwhile: ${d.listenersRemovedDuringOutage}`;
      case 'silent-watch':
        return `first watch started over ${s1(d.detectedMs)} s after the silence, both ${s1(d.bothRestartedMs)} s; status writes after that: ${d.statusWritesAfterDetection}; bound ${d.boundS[0]}–${d.boundS[1]} s at --watch-timeout-s ${d.watchTimeoutS}, ${d.defaultBoundS[0]}–${d.defaultBoundS[1]} s by default`;
      case 'worker-drain':
      case 'health-port':
        return `${d.onIt} calls on ${d.worker}: ${d.moved} moved${d.moved ? ` (p50 ${ms(d.moveMsP50)}, max ${ms(d.moveMsMax)} ms)` : ''}, ${d.lostOnIt} datagrams lost, last on it ${s1(d.lastOnItMsMax)} s after; new calls on it ${d.newCallsOnIt} of ${d.newCalls} (${d.newCallsOnItAfter1s} created > 1 s after)${d.aliveWhenGone !== undefined ? `; still on it when gone: ${d.aliveWhenGone}` : ''}`;
      case 'bulk': {
        const m = d.memory;
        const at = (m.at ?? []) as Array<{ t: number; heapMB: number; rssMB: number; heapTotalMB: number }>;
        const series = (k: 'heapMB' | 'rssMB') => [m.before[k], m.peak[k], ...at.map((s) => s[k])].map((x: number) => fmt(x)).join(' → ');
        return `${d.virtualServices} VS: created in ${s1(d.createMs)} s, all seen ${s1(d.seenMs)} s, deleted in ${s1(d.deleteMs)} s, gone ${s1(d.goneMs)} s later; /readyz not OK ${d.readyzNotOk}/${d.readyzSamples}; heap MB ${series('heapMB')}, RSS MB ${series('rssMB')} (before → peak → ${at.map((s) => fmt(s.t)).join(' / ')} s after the last was gone); heap committed MB ${fmt(m.before.heapTotalMB)} → ${fmt(m.last.heapTotalMB)}`;
      }
      case 'replica-kill':
        return `Envoy on the other replica after ${ms(d.ingressReconnectMs?.[r['mode']])} ms; status written again after ${s1(d.statusResumedMs)} s (lease ${d.leaseDurationS} s)`;
      default:
        return JSON.stringify(d);
    }
  };
  const rows = ((b6['rows'] ?? []) as Array<Record<string, any>>).map((r) => [
    r['fault'],
    r['mode'],
    String(r['calls']),
    `${r['established'].lost} / ${r['established'].sent} (${r['established'].callsWithLoss} of ${r['established'].calls})`,
    String(r['failedToConnect']),
    r['during'].calls ? `${r['during'].connected}/${r['during'].calls}: ${ms(r['during'].fromRecoveryMs.p50)} / ${ms(r['during'].fromRecoveryMs.p99)} / ${ms(r['during'].fromRecoveryMs.max)}` : '–',
    `${ms(r['after'].setupMs.p50)} / ${ms(r['after'].setupMs.p99)}`,
    `${r['bystanderResent']}${Object.keys(r['bystanderChurn']).length ? ` (${Object.keys(r['bystanderChurn']).join(', ')})` : ''}`,
    String(r['spuriousDeletes']),
    detail(r),
  ]);
  return [
    `## B6: faults under ${String(b6['rate'])} calls/s per mode, each living ${String(b6['lifetimeS'])} s (bench/faults.ts; both modes at once, one ingress Envoy each)`,
    '',
    table(
      [
        'fault',
        'mode',
        'calls',
        'established calls: lost / sent (calls with loss of calls)',
        'failed to connect',
        'created during the fault: connected, ms from recovery p50 / p99 / max',
        'created after: setup p50 / p99',
        're-sent to unchanged proxy',
        'deletions of live calls',
        'the fault',
      ],
      rows,
    ),
  ].join('\n');
}

function soakTable(soak: Record<string, any>): string {
  const sl = soak['slopes'];
  const c = soak['calls'];
  const row = (key: string, label: string, digits: number) => [label, fmt(sl[key].mean, digits), `${fmt(sl[key].perHour, 2)} (${fmt(sl[key].percentPerHour, 1)}%)`];
  return [
    `## Soak: ${String(soak['rate'])} calls/s living ${String(soak['lifetimeS'])} s, a worker pod replaced every ${String(soak['churnS'])} s, ${String(soak['minutes'])} min (bench/soak.ts; chart: ${String(soak['svg'])})`,
    '',
    `${c.created} calls, ${c.neverConnected} never connected, ${c.lost} of ${c.sent} datagrams lost on established calls (${c.callsWithLoss} calls); ${String(soak['podsReplaced'])} pods replaced. vsxds sampled every ${String(soak['sampleS'])} s; slope by least squares after the first ${fmt(soak['warmupS'] / 60, 1)} min.`,
    '',
    table(['vsxds', 'mean after warm-up', 'slope per hour (of the mean)'], [row('rssMB', 'RSS (MB)', 0), row('heapMB', 'heap used (MB)', 0), row('fds', 'open file descriptors', 0), row('loopP99Ms', 'event loop delay p99 (ms)', 1)]),
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Runs

function machine(): Record<string, unknown> {
  const go = spawnSync('go', ['version'], { encoding: 'utf8' }).stdout.trim();
  const git = (args: string[]): string => spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() ?? '';
  return {
    commit: git(['rev-parse', '--short', 'HEAD']),
    /** Files under src/ that differ from that commit: the numbers are for the working tree. */
    srcChanges: git(['status', '--porcelain', '--', 'src']).split('\n').filter(Boolean),
    loadAverage: os.loadavg(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    go,
  };
}

async function benchmarks(): Promise<void> {
  const started = Date.now();
  const load = os.loadavg()[0] ?? 0;
  if (load > 0.5) log(`warning: load average ${load.toFixed(2)} before starting; other processes will disturb the latencies`);
  const ns = QUICK ? [1000] : [1000, 5000, 10_000];
  const repsAll = QUICK ? 3 : 5;
  const b1 = new Map<B1Key, LoadgenOutput>();
  const failures: string[] = [];
  for (const n of selected('B1') ? ns : []) {
    for (const mode of ['sotw', 'delta'] as const) {
      for (const kind of ['stub', 'go-control-plane', 'vsxds'] as const) {
        log(`B1 ${kind} ${mode} N=${n}`);
        try {
          b1.set(`${n}/${mode}/${kind}`, await session(kind, B1_SHAPE, ['--clients', String(n), '--mode', mode, '--reps-one', '9', '--reps-all', String(repsAll), '--reps-noop', '3']));
        } catch (err) {
          failures.push(`B1 ${kind} ${mode} N=${n}: ${(err as Error).message}`);
          log(failures.at(-1) as string);
        }
      }
    }
  }

  const b4 = new Map<string, LoadgenOutput>();
  for (const kind of selected('B4') ? (['go-control-plane', 'vsxds'] as const) : []) {
    for (const mode of ['sotw', 'delta'] as const) {
      log(`B4 ${kind} ${mode}`);
      try {
        b4.set(`${kind}/${mode}`, await session(kind, B4_SHAPE, ['--clients', '10', '--conns', '1', '--mode', mode, '--scenarios', 'one', '--reps-one', '3']));
      } catch (err) {
        failures.push(`B4 ${kind} ${mode}: ${(err as Error).message}`);
        log(failures.at(-1) as string);
      }
    }
  }

  const core: Record<string, any>[] = [];
  for (const mode of selected('B1core') ? (['sotw', 'delta'] as const) : []) {
    log(`B1 core ${mode} N=${ns.at(-1)}`);
    try {
      await waitForIdle();
      core.push(runFanoutCore(mode, ns.at(-1) as number));
    } catch (err) {
      failures.push((err as Error).message);
      log(failures.at(-1) as string);
    }
  }

  const b3: Record<string, any>[] = [];
  // 100 groups whose size grows with the total, then groups of 100 VirtualServices whose number
  // grows with it (10,000 in 100 groups is both).
  const b3Runs: Array<[number, number]> = !selected('B3') ? [] : QUICK ? [[1000, 10]] : [[1000, 10], [5000, 10], [10_000, 10], [1000, 1], [5000, 5]];
  for (const [vs, shards] of b3Runs) {
    log(`B3 ${vs} VirtualServices in ${10 * shards} groups`);
    try {
      await waitForIdle();
      b3.push(runTranslateScale(vs, QUICK ? 5 : 10, undefined, shards));
    } catch (err) {
      failures.push((err as Error).message);
      log(failures.at(-1) as string);
    }
  }

  const b5Core: Record<string, any>[] = [];
  for (const concurrent of selected('B5core') ? (QUICK ? [1000] : [200, 1000, 2000]) : []) {
    for (const mode of ['delta', 'sotw'] as const) {
      log(`B5 core ${mode}, ${concurrent} concurrent calls`);
      try {
        await waitForIdle();
        b5Core.push(runCallsCore(mode, concurrent, QUICK ? 1000 : 2000));
      } catch (err) {
        failures.push((err as Error).message);
        log(failures.at(-1) as string);
      }
    }
  }

  /** A rig in a process of its own, when selected: what it reports as failed, or its crash, are the run's failures. */
  const rig = async (scenario: (typeof SCENARIOS)[number], what: string, run: () => Record<string, any>): Promise<Record<string, any> | undefined> => {
    if (!selected(scenario)) return undefined;
    log(what);
    try {
      await waitForIdle();
      const result = run();
      for (const f of (result['failures'] as string[] | undefined) ?? []) failures.push(f);
      return result;
    } catch (err) {
      failures.push((err as Error).message);
      log(failures.at(-1) as string);
      return undefined;
    }
  };
  const b5 = await rig('B5', 'B5 calls', runCalls);
  const b6 = await rig('B6', 'B6 faults', runFaults);
  const soak = await rig('soak', 'soak', () => {
    mkdirSync(RESULTS, { recursive: true });
    return runSoak(path.join(RESULTS, `${new Date().toISOString().replace(/[:.]/g, '-')}-soak.svg`));
  });

  // B7 (bench/rollout.ts): two replicas, 1,000 simulated Envoys, one replica restarted.
  const b7: RolloutResult[] = [];
  for (const mode of selected('B7') ? (['sotw', 'delta'] as const) : []) {
    const runs = [
      ...(QUICK ? [] : [{ signal: 'none', seedVersions: false } as const]),
      { signal: 'SIGTERM', seedVersions: true } as const,
      ...(QUICK ? [] : [{ signal: 'SIGKILL', seedVersions: true } as const]),
    ];
    for (const run of runs) {
      log(`B7 rollout ${mode}, stop ${run.signal}${run.seedVersions ? '' : ' (control: reconnects without versions)'}`);
      try {
        await waitForIdle();
        b7.push(await runRollout({ root: ROOT, loadgen: path.join(BIN, 'loadgen'), mode, ...run, log, ...(run.signal === 'none' ? { observeS: 0 } : {}) }));
      } catch (err) {
        failures.push(`B7 ${mode} ${run.signal}: ${(err as Error).message}`);
        log(failures.at(-1) as string);
      }
    }
  }

  const report = [
    `# vsxds benchmark (${QUICK ? 'quick' : 'full'}), ${new Date().toISOString()}`,
    '',
    `vsxds at ${String(machine()['commit'])}${(machine()['srcChanges'] as string[]).length ? ' with uncommitted changes in src/' : ''}. Machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), ${Math.round(os.totalmem() / 2 ** 30)} GiB; ${process.version}. Load generator and server share these cores. Load average at the start: ${load.toFixed(2)}.`,
    '',
    ...(selected('B1') ? [b1Tables(b1, ns), '', loadgenTable(b1, ns), ''] : []),
    ...(selected('B1core') ? [coreTable(core), ''] : []),
    ...(selected('B4') ? [b4Table(b4), ''] : []),
    ...(selected('B3') ? [b3Table(b3), ''] : []),
    ...(selected('B5core') ? [callsCoreTable(b5Core), ''] : []),
    ...(b5 ? [b5Tables(b5), ''] : []),
    ...(b6 ? [b6Table(b6), ''] : []),
    ...(soak ? [soakTable(soak), ''] : []),
    ...(selected('B7') ? [rolloutTables(b7), ''] : []),
    failures.length ? `Failures:\n${failures.map((f) => `- ${f}`).join('\n')}` : '',
    `Finished in ${((Date.now() - started) / 60_000).toFixed(1)} min.`,
  ].join('\n');
  console.log(report);

  mkdirSync(RESULTS, { recursive: true });
  const file = path.join(RESULTS, `${new Date().toISOString().replace(/[:.]/g, '-')}-${QUICK ? 'quick' : 'full'}.json`);
  writeFileSync(
    file,
    JSON.stringify({ quick: QUICK, only: ONLY, machine: machine(), b1: Object.fromEntries(b1), b1Core: core, b4: Object.fromEntries(b4), b3, b5Core, b5, b6, soak, b7, failures, report }, null, 2),
  );
  log(`results: ${path.relative(ROOT, file)}`);
  if (failures.length) process.exitCode = 1;
}

async function profiles(): Promise<void> {
  const dir = path.join(RESULTS, 'profiles');
  rmSync(dir, { recursive: true, force: true });
  const summaries: Record<string, ProfileSummary> = {};
  const sections: string[] = [];
  for (const mode of ['sotw', 'delta'] as const) {
    const out = path.join(dir, `b1-${mode}`);
    log(`profiling vsxds ${mode} N=10000, all-groups change`);
    await session('vsxds', B1_SHAPE, ['--clients', '10000', '--mode', mode, '--scenarios', 'all', '--reps-all', '3'], out);
    const files = readdirSync(out).map((f) => path.join(out, f));
    summaries[`b1-${mode}`] = summarizeProfiles(files);
    sections.push(formatSummary(`B1 vsxds ${mode}, N=10,000, all-groups change`, summaries[`b1-${mode}`] as ProfileSummary));
  }
  log('profiling B3 at 10,000 VirtualServices');
  const b3dir = path.join(dir, 'b3');
  runTranslateScale(10_000, 10, b3dir);
  for (const phase of ['cold', 'change', 'churn']) {
    const files = readdirSync(b3dir)
      .filter((f) => f.includes(`-${phase}.`))
      .map((f) => path.join(b3dir, f));
    summaries[`b3-${phase}`] = summarizeProfiles(files);
    sections.push(formatSummary(`B3 10,000 VirtualServices, ${phase}`, summaries[`b3-${phase}`] as ProfileSummary));
  }
  console.log(sections.join('\n'));
  writeFileSync(path.join(RESULTS, `${new Date().toISOString().replace(/[:.]/g, '-')}-profile.json`), JSON.stringify({ machine: machine(), summaries }, null, 2));
  log(`profiles: ${path.relative(ROOT, dir)} (open in Chrome DevTools or speedscope)`);
}

if (PROFILE || selected('B1') || selected('B4') || selected('B7')) buildGo();
buildTs();
if (!PROFILE && (selected('B5') || selected('B6') || selected('soak') || selected('B7'))) buildDist();
if (PROFILE) await profiles();
else await benchmarks();
