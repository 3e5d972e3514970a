/**
 * The soak: the per-call workload at a steady rate with pod churn for a long time, and whether
 * vsxds's resources stay flat. The rig of B5 (bench/calls-rig.ts): real kube-apiserver, vsxds from
 * its CLI (default flags), one ingress Envoy on delta ADS (examples/envoy/ingress.yaml), calls
 * of test/support/calls.ts created and deleted through the API; five worker sinks, three worker
 * pods that stay and two IPs whose pods churn: every --churn-s one of them is deleted and a pod of
 * a new name takes its IP (the calls on it move to the others; their loss is reported, not the
 * point).
 *
 * Every --sample-s: vsxds's RSS and open file descriptors (/proc/<pid>), heap used and the event
 * loop's delay p99 over the interval (its /metrics: prom-client's default metrics), and CPU.
 * The slope of each (least squares) after the warm-up is the figure: flat means nothing grows.
 * Writes an SVG chart of the run next to the bench results and prints one JSON object.
 *
 *   --minutes 30   --rate 10   --lifetime-s 20   --churn-s 10   --sample-s 10   --warmup-min 5
 *   --svg <file>   where the chart goes (default bench/results/<time>-soak.svg)
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { CallLoad, now, PortPool, runArrivals, summarize, WorkerSinks } from '../test/support/calls.js';
import { cpuSeconds, HEALTH_PORT, processFigures, ROOT, SINK_PORT, sleep, startVsxds, sumMetric, WORKER_LABELS, WORKERS } from './calls-rig.js';
import { ensureEnvoy, INGRESS_ENVOY_FLAGS, pointAtVsxds, startEnvoy, type Envoy } from '../test/support/envoy.js';
import { startKubeEnv } from '../test/support/kube-env.js';
import { freePorts } from '../test/support/udp.js';
import { installCrd, readyPod } from '../test/support/vsxds-kube.js';
import { EVENT_LOOP_SAMPLE_S } from '../src/admin/metrics.js';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string' },
    rate: { type: 'string' },
    'lifetime-s': { type: 'string' },
    'churn-s': { type: 'string' },
    'sample-s': { type: 'string' },
    'warmup-min': { type: 'string' },
    svg: { type: 'string' },
    quick: { type: 'boolean', default: false },
  },
});
const MINUTES = Number(args.minutes ?? (args.quick ? 3 : 30));
const RATE = Number(args.rate ?? 10);
const LIFETIME_MS = Number(args['lifetime-s'] ?? 20) * 1000;
const CHURN_MS = Number(args['churn-s'] ?? 10) * 1000;
const SAMPLE_MS = Number(args['sample-s'] ?? 10) * 1000;
const WARMUP_MS = Number(args['warmup-min'] ?? Math.min(5, MINUTES / 5)) * 60_000;
const SVG = args.svg ?? path.join(ROOT, 'bench', 'results', `${new Date().toISOString().replace(/[:.]/g, '-')}-soak.svg`);
const PROXY_LABELS = { app: 'envoy-ingress' };
const CHURN_IPS = ['127.0.0.5', '127.0.0.6'];

function log(msg: string): void {
  process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

interface Sample {
  /** Seconds since the calls started. */
  t: number;
  rssMB: number;
  heapMB: number;
  fds: number;
  /** Event loop delay, p99 over the last interval (ms). */
  loopP99Ms: number;
  /** vsxds CPU over the last interval, share of one core. */
  cpu: number;
  activeCalls: number;
}

const SERIES = [
  { key: 'rssMB', label: 'RSS (MB)' },
  { key: 'heapMB', label: 'heap used (MB)' },
  { key: 'fds', label: 'open file descriptors' },
  { key: 'loopP99Ms', label: 'event loop delay p99 (ms)' },
] as const;

/** Least-squares slope of y over x, and the line's value at x0. */
function fit(xs: readonly number[], ys: readonly number[]): { slope: number; at: (x: number) => number } {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += ((xs[i] as number) - mx) * ((ys[i] as number) - my);
    den += ((xs[i] as number) - mx) ** 2;
  }
  const slope = den > 0 ? num / den : NaN;
  return { slope, at: (x) => my + slope * (x - mx) };
}

/** Per series: the slope per hour after the warm-up, and the mean there. */
function slopes(samples: readonly Sample[], warmupS: number): Record<string, { perHour: number; mean: number; percentPerHour: number }> {
  const after = samples.filter((s) => s.t >= warmupS && SERIES.every((x) => Number.isFinite(s[x.key])));
  const out: Record<string, { perHour: number; mean: number; percentPerHour: number }> = {};
  for (const { key } of SERIES) {
    const xs = after.map((s) => s.t / 3600);
    const ys = after.map((s) => s[key]);
    const mean = ys.reduce((a, b) => a + b, 0) / Math.max(1, ys.length);
    const { slope } = after.length >= 3 ? fit(xs, ys) : { slope: NaN };
    out[key] = { perHour: slope, mean, percentPerHour: (slope / mean) * 100 };
  }
  return out;
}

/** A self-contained SVG: one panel per series over the run, the warm-up shaded, the fitted line drawn. */
function chart(samples: readonly Sample[], warmupS: number, title: string): string {
  const W = 760;
  const PH = 150;
  const M = { l: 70, r: 20, t: 40, b: 30 };
  const H = M.t + SERIES.length * (PH + M.b) + 10;
  const tMax = Math.max(1, ...samples.map((s) => s.t));
  const fitted = slopes(samples, warmupS);
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${M.l}" y="20" font-size="13" font-weight="bold">${esc(title)}</text>`,
  ];
  SERIES.forEach(({ key, label }, i) => {
    const top = M.t + i * (PH + M.b);
    const ys = samples.map((s) => s[key]).filter(Number.isFinite);
    const yMax = Math.max(1e-9, ...ys) * 1.1;
    const x = (t: number) => M.l + ((W - M.l - M.r) * t) / tMax;
    const y = (v: number) => top + PH - (PH * v) / yMax;
    parts.push(`<rect x="${M.l}" y="${top}" width="${x(Math.min(warmupS, tMax)) - M.l}" height="${PH}" fill="#eee"/>`);
    parts.push(`<rect x="${M.l}" y="${top}" width="${W - M.l - M.r}" height="${PH}" fill="none" stroke="#999"/>`);
    for (const frac of [0, 0.5, 1]) parts.push(`<text x="${M.l - 5}" y="${y(yMax * frac) + 4}" text-anchor="end">${(yMax * frac).toFixed(yMax < 10 ? 1 : 0)}</text>`);
    const pts = samples.filter((s) => Number.isFinite(s[key])).map((s) => `${x(s.t).toFixed(1)},${y(s[key]).toFixed(1)}`);
    parts.push(`<polyline fill="none" stroke="#1565c0" stroke-width="1.5" points="${pts.join(' ')}"/>`);
    const after = samples.filter((s) => s.t >= warmupS && Number.isFinite(s[key]));
    if (after.length >= 3) {
      const f = fit(after.map((s) => s.t), after.map((s) => s[key]));
      parts.push(`<line x1="${x(warmupS)}" y1="${y(f.at(warmupS))}" x2="${x(tMax)}" y2="${y(f.at(tMax))}" stroke="#c62828" stroke-dasharray="4 3"/>`);
    }
    const sl = fitted[key] as { perHour: number; percentPerHour: number };
    parts.push(`<text x="${M.l + 5}" y="${top + 14}">${esc(label)}: slope after warm-up ${sl.perHour.toFixed(2)}/h (${sl.percentPerHour.toFixed(1)}%/h)</text>`);
    if (i === SERIES.length - 1) {
      for (const frac of [0, 0.25, 0.5, 0.75, 1]) parts.push(`<text x="${x(tMax * frac)}" y="${top + PH + 14}" text-anchor="middle">${((tMax * frac) / 60).toFixed(0)} min</text>`);
    }
  });
  parts.push('</svg>');
  return parts.join('\n');
}

async function main(): Promise<void> {
  await ensureEnvoy();
  const kube = await startKubeEnv();
  const workers = [...WORKERS, ...CHURN_IPS.map((ip, i) => ({ name: `churn-ip-${i}`, ip }))];
  const sinks = await WorkerSinks.start(workers, SINK_PORT, HEALTH_PORT);
  let envoy: Envoy | undefined;
  let vsxds: Awaited<ReturnType<typeof startVsxds>> | undefined;
  try {
    await installCrd(kube);
    for (const w of WORKERS) await readyPod(kube, w.name, WORKER_LABELS, w.ip);
    let churnN = 0;
    const current = CHURN_IPS.map((ip) => `churn-${churnN++}-${ip.replace(/\./g, '-')}`);
    for (const [i, name] of current.entries()) await readyPod(kube, name, WORKER_LABELS, CHURN_IPS[i] as string);
    vsxds = await startVsxds(kube);
    const example = parseYaml(readFileSync(path.join(ROOT, 'examples', 'envoy', 'ingress.yaml'), 'utf8'));
    const bootstrap = pointAtVsxds(example, { xdsPort: vsxds.xdsPort, apiType: 'DELTA_GRPC' });
    bootstrap.node = { id: 'default/soak-ingress', cluster: 'ingress', metadata: { namespace: 'default', labels: PROXY_LABELS } };
    envoy = await startEnvoy({ name: 'soak', bootstrap, extraArgs: INGRESS_ENVOY_FLAGS });
    const pool = await freePorts(Math.ceil(RATE * (LIFETIME_MS / 1000 + 20)) + 100);
    const load = new CallLoad(
      { kubeconfigPath: kube.kubeconfigPath, proxySelector: PROXY_LABELS, workerSelector: WORKER_LABELS, sinkPort: SINK_PORT, healthPort: HEALTH_PORT, ports: new PortPool(pool), teardownSampleEvery: 0, retryApiForMs: 30_000 },
      sinks,
    );
    const v = vsxds;
    const t0 = now();
    const samples: Sample[] = [];
    let lastCpu = cpuSeconds(v.pid);
    let lastT = t0;
    const sample = async () => {
      const text = await (await v.admin('/metrics')).text();
      const { rss, fds } = processFigures(v.pid);
      const cpu = cpuSeconds(v.pid);
      const t = now();
      samples.push({
        t: (t - t0) / 1000,
        rssMB: rss / 2 ** 20,
        heapMB: sumMetric(text, 'vsxds_nodejs_heap_size_used_bytes') / 2 ** 20,
        fds,
        // The histogram counts its own sampling interval: the delay is what exceeds it.
        loopP99Ms: Math.max(0, sumMetric(text, 'vsxds_nodejs_eventloop_lag_p99_seconds') - EVENT_LOOP_SAMPLE_S) * 1000,
        cpu: (cpu - lastCpu) / ((t - lastT) / 1000),
        activeCalls: load.activeCalls,
      });
      lastCpu = cpu;
      lastT = t;
      const s = samples.at(-1) as Sample;
      if (samples.length % 6 === 1) log(`${(s.t / 60).toFixed(1)} min: RSS ${s.rssMB.toFixed(0)} MB, heap ${s.heapMB.toFixed(0)} MB, fds ${s.fds}, loop p99 ${s.loopP99Ms.toFixed(1)} ms, CPU ${(s.cpu * 100).toFixed(0)}%, ${s.activeCalls} calls`);
    };
    const sampler = setInterval(() => void sample().catch(() => undefined), SAMPLE_MS);
    let churned = 0;
    let turn = 0;
    const churner = setInterval(() => {
      const i = turn++ % CHURN_IPS.length;
      const old = current[i] as string;
      const name = `churn-${churnN++}-${(CHURN_IPS[i] as string).replace(/\./g, '-')}`;
      current[i] = name;
      // An unscheduled pod is gone as soon as it is deleted; the new one takes its IP.
      void kube
        .kubectlOk(['delete', 'pod', old, '--wait=false'])
        .then(() => readyPod(kube, name, WORKER_LABELS, CHURN_IPS[i] as string))
        .then(() => (churned += 1), (err) => log(`churn: ${(err as Error).message.split('\n')[0]}`));
    }, CHURN_MS);
    log(`calls at ${RATE}/s for ${MINUTES} min, pod churn every ${CHURN_MS / 1000} s, samples every ${SAMPLE_MS / 1000} s`);
    try {
      await runArrivals(load, RATE, MINUTES * 60_000, { lifetimeMs: LIFETIME_MS, connectDeadlineMs: LIFETIME_MS + 30_000, minHoldMs: 2_000 });
    } finally {
      clearInterval(churner);
      clearInterval(sampler);
      load.stop();
    }
    await sample();
    const summary = summarize(load.records, load.poolExhausted);
    const result = {
      minutes: MINUTES,
      rate: RATE,
      lifetimeS: LIFETIME_MS / 1000,
      churnS: CHURN_MS / 1000,
      sampleS: SAMPLE_MS / 1000,
      warmupS: WARMUP_MS / 1000,
      podsReplaced: churned,
      calls: { created: summary.created, neverConnected: summary.neverConnected, createErrors: summary.createErrors, lost: summary.established.lost, sent: summary.established.sent, callsWithLoss: summary.established.callsWithLoss },
      slopes: slopes(samples, WARMUP_MS / 1000),
      samples,
      svg: path.relative(ROOT, SVG),
    };
    mkdirSync(path.dirname(SVG), { recursive: true });
    writeFileSync(SVG, chart(samples, WARMUP_MS / 1000, `vsxds soak: ${RATE} calls/s living ${LIFETIME_MS / 1000} s, a pod replaced every ${CHURN_MS / 1000} s, ${MINUTES} min (warm-up shaded)`));
    log(`chart: ${result.svg}; slopes ${JSON.stringify(result.slopes)}`);
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await envoy?.stop();
    await vsxds?.stop();
    await sinks.close();
    await kube.stop();
    await sleep(0);
  }
}

await main();
