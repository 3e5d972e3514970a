/**
 * The pieces Envoy end-to-end tests are built from: vsxds serving a watched directory of YAML
 * (in this process, or as a process of its own that a test can kill), small builders for
 * VirtualServices and pods, the examples with their ports moved, and Envoy stat comparisons.
 */
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeEach } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { parseCommandLine } from '../../src/main/config.js';
import { serve, type Running } from '../../src/main/serve.js';
import { parseVirtualService } from '../../src/model/index.js';
import type { ListenerSpec } from '../../src/model/types.js';
import type { RawObject } from '../../src/sources/source.js';
import { envoyClusterSpec } from '../../src/translate/cluster.js';
import { adsBootstrap, ensureEnvoy, spawnTied, type AdsApiType, type Envoy } from './envoy.js';

// Stat comparisons live in envoy.ts (no vitest there, so the bench rigs use them too).
export { changedStats, CONFIG_CHURN_STATS, stat, upToDateReconnect } from './envoy.js';
import { freePorts, UdpEcho, waitUntil } from './udp.js';

/** Settings as the CLI would build them from these flags, with every default filled in. */
export function cliSettings(flags: string[]) {
  return parseCommandLine(['serve', ...flags], {}).settings;
}

/** vsxds in this process, serving VirtualServices and pods from a temporary directory it watches. */
export class FileVsxds {
  private constructor(
    readonly dir: string,
    readonly running: Running,
  ) {}

  static async start(files: Record<string, readonly object[]> = {}, extraFlags: readonly string[] = []): Promise<FileVsxds> {
    const dir = await mkdtemp(join(tmpdir(), 'vsxds-e2e-'));
    for (const [name, docs] of Object.entries(files)) await writeDocs(dir, name, docs);
    const running = await serve(
      cliSettings([
        '--source', `file:${dir}`,
        '--xds-address', '127.0.0.1:0',
        '--admin-address', '127.0.0.1:0',
        '--coalesce-ms', '20',
        '--status-interval-ms', '50',
        '--shutdown-grace-ms', '100',
        '--log-level', process.env['VSXDS_TEST_LOG'] ?? 'silent',
        ...extraFlags,
      ]),
      {},
    );
    return new FileVsxds(dir, running);
  }

  get xdsPort(): number {
    return this.running.xdsPort;
  }

  /** Replaces one file of the watched directory; vsxds picks the change up on its own. */
  write(name: string, docs: readonly object[]): Promise<void> {
    return writeDocs(this.dir, name, docs);
  }

  async admin<T = any>(path: string): Promise<T> {
    const res = await fetch(`http://127.0.0.1:${this.running.adminPort}${path}`);
    if (!res.ok) throw new Error(`vsxds admin ${path}: ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  }

  async stop(): Promise<void> {
    await this.running.shutdown('test over');
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Written under another name and renamed, so the watcher never reads half a file. */
export async function writeDocs(dir: string, name: string, docs: readonly object[]): Promise<void> {
  const tmp = join(dir, `.${name}.tmp`);
  await writeFile(tmp, docs.map((d) => stringify(d)).join('---\n'));
  await rename(tmp, join(dir, name));
}

// --------------------------------------------------------------------------------------------
// Builders
// --------------------------------------------------------------------------------------------

export interface ClusterOptions {
  readonly name: string;
  /** Pod labels (an EDS cluster of those pods' IPs) or a fixed address (a STRICT_DNS cluster). */
  readonly to: { readonly selector: Record<string, string> } | { readonly address: string };
  readonly port: number;
  readonly hashKey?: string;
  readonly healthCheck?: { readonly intervalMs: number; readonly port: number };
}

export function listener(name: string, port: number, cluster: ClusterOptions): object {
  const eds = 'selector' in cluster.to;
  return {
    name,
    udp: {
      port,
      cluster: {
        name: cluster.name,
        service_discovery: eds ? 'eds' : 'strictdns',
        ...(cluster.hashKey ? { hash_key: cluster.hashKey } : {}),
        ...(cluster.healthCheck ? { health_check: { interval: cluster.healthCheck.intervalMs, protocol: 'TCP' } } : {}),
        endpoints: [
          {
            name: 'ep',
            host: cluster.to,
            port: cluster.port,
            ...(cluster.healthCheck ? { health_check_port: cluster.healthCheck.port } : {}),
          },
        ],
      },
    },
  };
}

/** The Envoy cluster vsxds makes of `cluster` by default (shared clusters are named by content). */
export function envoyClusterName(cluster: ClusterOptions): string {
  const vs = parseVirtualService({ ...(virtualService('x', {}, [listener('x', 1, cluster)]) as RawObject) }, 'default');
  if (!vs.ok) throw new Error(vs.message);
  return envoyClusterSpec((vs.vs.spec.listeners[0] as ListenerSpec).udp.cluster, true).name;
}

export function virtualService(name: string, selector: Record<string, string>, listeners: readonly object[], namespace = 'default'): object {
  return { apiVersion: 'servicemesh.l7mp.io/v1', kind: 'VirtualService', metadata: { name, namespace }, spec: { selector, listeners } };
}

/** A pod as the file source reads it (status written by hand, as a kubelet would). */
export function pod(name: string, labels: Record<string, string>, ip: string, namespace = 'default'): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    status: { podIP: ip, phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

// --------------------------------------------------------------------------------------------
// Stats
// --------------------------------------------------------------------------------------------

/** Waits until every named stat satisfies `ok`; the error lists the last values. */
export async function waitForStats(envoy: Envoy, names: readonly string[], ok: (value: number, name: string) => boolean, what: string, timeoutMs = 30_000): Promise<Map<string, number>> {
  let last = new Map<string, number>();
  return waitUntil(
    async () => {
      last = await envoy.stats();
      return names.every((n) => last.has(n) && ok(last.get(n) as number, n)) ? last : undefined;
    },
    () => `${what} on ${envoy.name}: ${names.slice(0, 8).map((n) => `${n}=${last.get(n)}`).join(', ')}${names.length > 8 ? ', ...' : ''}`,
    timeoutMs,
    200,
  );
}

/** When a test of the calling suite fails, prints the end of each Envoy's log under the error. */
export function printEnvoyLogsOnFailure(envoys: () => ReadonlyArray<Envoy | undefined>): void {
  beforeEach((context) => {
    context.onTestFailed(() => {
      for (const envoy of envoys()) {
        if (envoy) console.error(`--- last lines of envoy ${envoy.name} (${envoy.exit ? `exited ${JSON.stringify(envoy.exit)}` : 'running'}) ---\n${envoy.logTail(60)}`);
      }
    });
  });
}

// --------------------------------------------------------------------------------------------
// The examples
// --------------------------------------------------------------------------------------------

export const EXAMPLES_DIR = fileURLToPath(new URL('../../examples', import.meta.url));

/** Every port number examples/ uses: the ingress and worker listeners, the app and its health check. */
/**
 * The Envoy clusters of the examples' ingress: shared clusters are named by content, so these are
 * the same in every process and every release that keeps the translation (a change would move
 * every proxy's listeners to new clusters on upgrade).
 */
export const EXAMPLE_ENVOY_CLUSTERS = { 'worker-rtp': 'vsxds-eds-2001-5642117eafda', 'worker-rtcp': 'vsxds-eds-2003-54375c6cc3c3' } as const;
export const [RTP_CLUSTER, RTCP_CLUSTER] = [EXAMPLE_ENVOY_CLUSTERS['worker-rtp'], EXAMPLE_ENVOY_CLUSTERS['worker-rtcp']];

export const EXAMPLE_PORTS = [2000, 2001, 2002, 2003, 1233, 1234, 1235] as const;

export interface Examples {
  /** examples/virtualservices/*.yaml, by file name. */
  readonly files: Record<string, object[]>;
  /** examples/envoy/*.yaml, by proxy. */
  readonly bootstraps: { readonly ingress: any; readonly worker: any };
  /** The ingress's clusters as Envoy names them, by their names in ingress.yaml. */
  readonly clusters: Readonly<Record<string, string>>;
}

/**
 * The examples as shipped, with their port numbers replaced through `ports` so tests that run
 * side by side do not fight over them (an unmapped port stays as it is).
 */
export async function loadExamples(ports: ReadonlyMap<number, number> = new Map()): Promise<Examples> {
  const read = async (file: string) =>
    parseAllDocuments(await readFile(join(EXAMPLES_DIR, file), 'utf8')).map((d) => remapPorts(d.toJS(), ports) as object);
  const files: Record<string, object[]> = {};
  for (const name of ['ingress.yaml', 'worker.yaml', 'pods.yaml']) files[name] = await read(join('virtualservices', name));
  const [ingress] = await read(join('envoy', 'ingress.yaml'));
  const [worker] = await read(join('envoy', 'worker.yaml'));
  const clusters: Record<string, string> = {};
  for (const doc of files['ingress.yaml'] ?? []) {
    const parsed = parseVirtualService(doc as RawObject, 'default');
    if (!parsed.ok) throw new Error(parsed.message);
    for (const l of parsed.vs.spec.listeners) clusters[l.udp.cluster.name] = envoyClusterSpec(l.udp.cluster, true).name;
  }
  return { files, bootstraps: { ingress, worker }, clusters };
}

function remapPorts(value: unknown, ports: ReadonlyMap<number, number>): unknown {
  if (Array.isArray(value)) return value.map((v) => remapPorts(v, ports));
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = typeof v === 'number' && /^(port|health_check_port|port_value)$/.test(k) ? (ports.get(v) ?? v) : remapPorts(v, ports);
  }
  return out;
}

// --------------------------------------------------------------------------------------------
// vsxds as a separate process
// --------------------------------------------------------------------------------------------

const REPO = fileURLToPath(new URL('../..', import.meta.url));

export interface VsxdsProcess {
  readonly pid: number;
  /** What it logged (JSON lines) and printed on stderr. */
  output(): string;
  /** SIGKILL: no shutdown, streams just break, as when a node dies. */
  kill(): Promise<void>;
  admin<T = any>(path: string): Promise<T>;
}

/**
 * Runs `vsxds serve` from the sources in a process of its own, and waits for its startup log line.
 * It serves the directory `dir`, or `source` (`kubernetes`, with `--kubeconfig` in `extraArgs`),
 * or what `sourceArgs` name (`--source kubernetes --kubeconfig ...`).
 */
export async function startVsxdsProcess(options: {
  readonly dir?: string;
  readonly source?: string;
  readonly sourceArgs?: readonly string[];
  readonly xdsPort: number;
  readonly adminPort: number;
  readonly extraArgs?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
}): Promise<VsxdsProcess> {
  await ensureEnvoy();
  // tsx as a loader, not its CLI: the CLI runs the program in a child process that a SIGKILL
  // of the CLI would leave running.
  const child = spawnTied(process.execPath, [
    '--import', 'tsx',
    join(REPO, 'src', 'main', 'cli.ts'),
    'serve',
    ...(options.sourceArgs ?? ['--source', options.source ?? `file:${options.dir}`]),
    '--xds-address', `127.0.0.1:${options.xdsPort}`,
    '--admin-address', `127.0.0.1:${options.adminPort}`,
    '--coalesce-ms', '20',
    '--log-level', 'info',
    ...(options.extraArgs ?? []),
  ], { cwd: REPO, env: { PATH: process.env['PATH'] ?? '', HOME: tmpdir(), ...options.env } });
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<void>((resolve) => {
    child.on('exit', () => resolve());
    child.on('error', (err) => {
      out += `cannot run vsxds: ${err.message}\n`;
      resolve();
    });
  });
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + 60_000;
  while (!out.includes('"msg":"vsxds started"')) {
    if (gone) throw new Error(`vsxds exited during startup:\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`vsxds did not start within 60 s:\n${out}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    pid: child.pid as number,
    output: () => out,
    kill: async () => {
      if (!gone) child.kill('SIGKILL');
      await exited;
    },
    admin: async (path) => {
      const res = await fetch(`http://127.0.0.1:${options.adminPort}${path}`);
      if (!res.ok) throw new Error(`vsxds admin ${path}: ${res.status} ${await res.text()}`);
      return res.json();
    },
  };
}

/**
 * Two vsxds replicas, processes serving one directory: one listener `rtp` for proxies labelled
 * app=ingress, forwarding to a UDP echo ("app"), for tests of Envoys moving between replicas.
 */
export class TwoReplicas {
  private constructor(
    readonly dir: string,
    readonly echo: UdpEcho,
    readonly ports: { readonly a: number; readonly b: number; readonly adminA: number; readonly adminB: number; readonly rtp: number; readonly echo: number },
    readonly replicas: readonly VsxdsProcess[],
  ) {}

  /** `extraArgs` per replica, by its name (a, b). */
  static async start(prefix: string, extraArgs: (replica: 'a' | 'b') => readonly string[] = () => []): Promise<TwoReplicas> {
    const [a, b, adminA, adminB, rtp, echoPort] = (await freePorts(6)) as [number, number, number, number, number, number];
    const ports = { a, b, adminA, adminB, rtp, echo: echoPort };
    const dir = await mkdtemp(join(tmpdir(), prefix));
    await writeDocs(dir, 'media.yaml', [virtualService('media', { app: 'ingress' }, [listener('rtp', rtp, { name: 'app', to: { address: '127.0.0.1' }, port: echoPort })])]);
    const echo = await UdpEcho.start('app', '127.0.0.1', echoPort);
    const replicas: VsxdsProcess[] = [];
    try {
      replicas.push(await startVsxdsProcess({ dir, xdsPort: a, adminPort: adminA, extraArgs: extraArgs('a') }));
      replicas.push(await startVsxdsProcess({ dir, xdsPort: b, adminPort: adminB, extraArgs: extraArgs('b') }));
    } catch (err) {
      for (const r of replicas) await r.kill();
      await echo.close();
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    return new TwoReplicas(dir, echo, ports, replicas);
  }

  /** An Envoy bootstrap with both replicas behind its one xDS cluster, as behind a Kubernetes Service. */
  bootstrap(nodeId: string, apiType: AdsApiType): any {
    const bootstrap = adsBootstrap({ nodeId, metadata: { namespace: 'default', labels: { app: 'ingress' } }, xdsPort: this.ports.a, apiType });
    bootstrap.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints.push({ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: this.ports.b } } } });
    return bootstrap;
  }

  async stop(): Promise<void> {
    for (const r of this.replicas) await r.kill();
    await this.echo.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}
