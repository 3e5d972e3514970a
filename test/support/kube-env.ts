/**
 * kube-env: a throw-away Kubernetes control plane for integration tests (envtest style).
 *
 * A real etcd and a real kube-apiserver run on random loopback ports with a temporary data
 * directory; there is no kubelet, no scheduler and no controller-manager, so Pods stay Pending
 * unless a test writes their status itself through the `status` subresource.
 *
 * Binaries come from `test/env/install-kube.sh` (built from Go modules and cached outside git)
 * or from the directory named by the environment variable VSXDS_KUBE_BIN.
 *
 * Every failure throws; nothing is ever skipped silently. Child processes are killed by
 * stop(), by a process 'exit' hook, and (if the test process dies abruptly, e.g. SIGKILL of a
 * vitest worker) by a small detached reaper process that notices its stdin pipe closing.
 *
 * Only node: builtins are used. The serving certificate is made with the `openssl` CLI; if
 * openssl is not installed the API server generates its own self-signed certificate and the
 * kubeconfig falls back to insecure-skip-tls-verify (caCertPath/caData are then undefined).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, rmSync, constants as fsConstants } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface KubectlResult {
  stdout: string;
  stderr: string;
  /** Exit code of kubectl (non-zero is returned, not thrown). */
  code: number;
}

export interface KubeEnvOptions {
  /** Directory holding kube-apiserver, kubectl and etcd. Default: $VSXDS_KUBE_BIN, else install-kube.sh. */
  binDir?: string;
  /** Max time for install-kube.sh (a cold build takes ~5 min on 2 cores). Default 40 min. */
  installTimeoutMs?: number;
  /** Max time for etcd + kube-apiserver to become ready (each start). Default 120 s. */
  readyTimeoutMs?: number;
  /** Max time a single kubectl() call may take before it is killed and rejected. Default 120 s. */
  kubectlTimeoutMs?: number;
  /** Extra kube-apiserver flags, appended last (later flags win), e.g. ['--v=4']. */
  extraApiServerArgs?: string[];
  /** Copy etcd / kube-apiserver output to this process's stderr. Default: $VSXDS_KUBE_LOGS === '1'. */
  verbose?: boolean;
  /** If set, etcd.log and kube-apiserver.log are written here and NOT deleted on stop(). */
  logDir?: string;
}

export interface StopApiServerOptions {
  /** 'SIGTERM' (default) = graceful shutdown; 'SIGKILL' = abrupt death (watch streams just break). */
  signal?: 'SIGTERM' | 'SIGKILL';
}

export interface KubeEnv {
  /** Path of a kubeconfig (bearer token of a system:masters user, CA data when available). */
  kubeconfigPath: string;
  /** https://127.0.0.1:<port> */
  server: string;
  /** Bearer token of the admin user (group system:masters). */
  token: string;
  /** Directory holding the kube-apiserver, kubectl and etcd binaries. */
  binDir: string;
  /** PEM file of the CA that signed the serving certificate (undefined if openssl was missing). */
  caCertPath: string | undefined;
  /** PEM text of that CA. */
  caData: string | undefined;
  /** http://127.0.0.1:<port> of the etcd client endpoint. */
  etcdEndpoint: string;
  /** Runs `kubectl --kubeconfig=<kubeconfigPath> ...args`, with `input` on stdin if given. */
  kubectl(args: string[], input?: string): Promise<KubectlResult>;
  /** Like kubectl() but throws (with stdout/stderr in the message) on a non-zero exit code. */
  kubectlOk(args: string[], input?: string): Promise<string>;
  /** Stops kube-apiserver only (etcd keeps running, data is kept). */
  stopApiServer(opts?: StopApiServerOptions): Promise<void>;
  /** Starts kube-apiserver again on the same port against the same etcd, waits for /readyz. */
  startApiServer(): Promise<void>;
  /** Last lines of kube-apiserver output (for diagnostics). */
  apiServerLogTail(lines?: number): string;
  /** Drops kubectl's discovery cache: after a CRD is created, a cache taken a moment before lacks it for hours. */
  forgetDiscovery(): void;
  /** Stops everything and removes the temporary directory. Idempotent. */
  stop(): Promise<void>;
}

const HERE = dirname(fileURLToPath(import.meta.url));
const INSTALL_SCRIPT = resolve(HERE, '../env/install-kube.sh');
const BINARIES = ['kube-apiserver', 'kubectl', 'etcd'] as const;
const LOG_TAIL_LINES = 300;

// --------------------------------------------------------------------------------------------
// Installation
// --------------------------------------------------------------------------------------------

let installPromise: Promise<string> | undefined;

/**
 * Returns the directory with kube-apiserver, kubectl and etcd: $VSXDS_KUBE_BIN if set,
 * otherwise runs test/env/install-kube.sh (fast when cached, a long build otherwise).
 * Memoised per process. Throws on any failure.
 */
export function installKube(opts: { timeoutMs?: number } = {}): Promise<string> {
  installPromise ??= doInstall(opts.timeoutMs ?? 40 * 60_000).catch((err: unknown) => {
    installPromise = undefined;
    throw err;
  });
  return installPromise;
}

async function doInstall(timeoutMs: number): Promise<string> {
  const fromEnv = process.env['VSXDS_KUBE_BIN'];
  if (fromEnv !== undefined && fromEnv !== '') {
    await assertBinaries(fromEnv, 'VSXDS_KUBE_BIN');
    return fromEnv;
  }
  if (!existsSync(INSTALL_SCRIPT)) {
    throw new Error(`kube-env: install script not found at ${INSTALL_SCRIPT}`);
  }
  const child = spawn('bash', [INSTALL_SCRIPT], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  const stderrTail = new LineTail(80);
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderrTail.push(d);
    // Progress of a possibly very long build; visible in the vitest output.
    process.stderr.write(d);
  });
  const result = await waitForExit(child, timeoutMs);
  if (result === 'timeout') {
    child.kill('SIGKILL');
    throw new Error(
      `kube-env: ${INSTALL_SCRIPT} did not finish within ${Math.round(timeoutMs / 1000)}s; last output:\n${stderrTail.text()}`,
    );
  }
  if (result.code !== 0) {
    throw new Error(
      `kube-env: ${INSTALL_SCRIPT} failed (exit ${describeExit(result)}); last output:\n${stderrTail.text()}`,
    );
  }
  const lines = stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const binDir = lines[lines.length - 1];
  if (binDir === undefined) {
    throw new Error(`kube-env: ${INSTALL_SCRIPT} printed no bin dir; stderr:\n${stderrTail.text()}`);
  }
  await assertBinaries(binDir, INSTALL_SCRIPT);
  return binDir;
}

async function assertBinaries(binDir: string, source: string): Promise<void> {
  for (const b of BINARIES) {
    const p = join(binDir, b);
    try {
      await access(p, fsConstants.X_OK);
    } catch {
      throw new Error(`kube-env: ${p} (from ${source}) is missing or not executable`);
    }
  }
}

// --------------------------------------------------------------------------------------------
// Environment
// --------------------------------------------------------------------------------------------

export async function startKubeEnv(opts: KubeEnvOptions = {}): Promise<KubeEnv> {
  const binDir = opts.binDir ?? (await installKube({ timeoutMs: opts.installTimeoutMs ?? 40 * 60_000 }));
  if (opts.binDir !== undefined) await assertBinaries(opts.binDir, 'options.binDir');
  const env = new KubeEnvImpl(binDir, opts);
  try {
    await env.init();
  } catch (err) {
    await env.stop().catch(() => undefined);
    throw err;
  }
  return env;
}

interface ManagedProcess {
  name: string;
  child: ChildProcess;
  tail: LineTail;
  exited: Promise<ExitInfo>;
  exitInfo: ExitInfo | undefined;
}

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

class KubeEnvImpl implements KubeEnv {
  kubeconfigPath = '';
  server = '';
  token = '';
  caCertPath: string | undefined;
  caData: string | undefined;
  etcdEndpoint = '';

  private workDir = '';
  private apiPort = 0;
  private apiArgs: string[] = [];
  private etcd: ManagedProcess | undefined;
  private api: ManagedProcess | undefined;
  private apiTail = new LineTail(LOG_TAIL_LINES);
  private stopped = false;
  private readonly verbose: boolean;
  private readonly readyTimeoutMs: number;
  private readonly kubectlTimeoutMs: number;
  private readonly exitHook = (): void => this.killSync();

  constructor(
    readonly binDir: string,
    private readonly opts: KubeEnvOptions,
  ) {
    this.verbose = opts.verbose ?? process.env['VSXDS_KUBE_LOGS'] === '1';
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 120_000;
    this.kubectlTimeoutMs = opts.kubectlTimeoutMs ?? 120_000;
  }

  async init(): Promise<void> {
    this.workDir = await mkdtemp(join(tmpdir(), 'vsxds-kube-'));
    process.on('exit', this.exitHook);
    reaper().watchDir(this.workDir);
    if (this.opts.logDir !== undefined) await mkdir(this.opts.logDir, { recursive: true });

    await this.startEtcd();
    await this.prepareApiServerFiles();
    await this.startApiServerWithPortRetry();
  }

  // ---- etcd -------------------------------------------------------------------------------

  private async startEtcd(): Promise<void> {
    let lastErr: unknown;
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [clientPort, peerPort] = await freePorts(2);
      const client = `http://127.0.0.1:${clientPort}`;
      const peer = `http://127.0.0.1:${peerPort}`;
      const dataDir = join(this.workDir, `etcd-${attempt}`);
      const proc = this.spawnManaged('etcd', join(this.binDir, 'etcd'), [
        '--name=vsxds-test',
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${client}`,
        `--advertise-client-urls=${client}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=vsxds-test=${peer}`,
        '--initial-cluster-state=new',
        '--unsafe-no-fsync=true',
        '--log-level=warn',
      ]);
      try {
        await this.waitReady(proc, `${client}/health`, (status, body) => status === 200 && body.includes('"health":"true"'));
        this.etcd = proc;
        this.etcdEndpoint = client;
        return;
      } catch (err) {
        lastErr = err;
        await stopProcess(proc, 'SIGKILL');
        if (!proc.tail.text().includes('address already in use')) break;
      }
    }
    throw lastErr;
  }

  // ---- kube-apiserver -----------------------------------------------------------------------

  private async prepareApiServerFiles(): Promise<void> {
    const pki = join(this.workDir, 'pki');
    await mkdir(pki, { recursive: true });

    // Service-account token signing key pair.
    const sa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const saKey = join(pki, 'sa.key');
    const saPub = join(pki, 'sa.pub');
    await writeFile(saKey, sa.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    await writeFile(saPub, sa.publicKey.export({ type: 'spki', format: 'pem' }));

    // Static token file: token,user,uid,"groups"
    this.token = randomBytes(24).toString('hex');
    const tokenFile = join(pki, 'tokens.csv');
    await writeFile(tokenFile, `${this.token},vsxds-admin,vsxds-admin,"system:masters"\n`, { mode: 0o600 });

    const tlsArgs: string[] = [];
    if (await hasOpenssl()) {
      const { caCert, serverCert, serverKey } = await makeServingCert(pki);
      this.caCertPath = caCert;
      this.caData = await readFile(caCert, 'utf8');
      tlsArgs.push(`--tls-cert-file=${serverCert}`, `--tls-private-key-file=${serverKey}`);
    } else {
      // The API server generates a self-signed cert into --cert-dir; clients skip verification.
      tlsArgs.push(`--cert-dir=${join(pki, 'apiserver-generated')}`);
    }

    this.apiArgs = [
      `--etcd-servers=${this.etcdEndpoint}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      ...tlsArgs,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${saPub}`,
      `--service-account-signing-key-file=${saKey}`,
      '--authorization-mode=RBAC',
      `--token-auth-file=${tokenFile}`,
      '--service-cluster-ip-range=10.0.0.0/24',
      '--disable-admission-plugins=ServiceAccount',
      '--allow-privileged=true',
      // 127.0.0.1 is not a valid Endpoints address; do not try to maintain the "kubernetes" endpoints.
      '--endpoint-reconciler-type=none',
      '--profiling=false',
      ...(this.opts.extraApiServerArgs ?? []),
    ];
  }

  private async startApiServerWithPortRetry(): Promise<void> {
    let lastErr: unknown;
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [port] = await freePorts(1);
      this.apiPort = port;
      this.server = `https://127.0.0.1:${port}`;
      try {
        await this.launchApiServer();
        await this.writeKubeconfig();
        return;
      } catch (err) {
        lastErr = err;
        if (!this.apiTail.text().includes('address already in use')) break;
      }
    }
    throw lastErr;
  }

  private async launchApiServer(): Promise<void> {
    if (this.api !== undefined && this.api.exitInfo === undefined) {
      throw new Error('kube-env: kube-apiserver is already running');
    }
    const proc = this.spawnManaged(
      'kube-apiserver',
      join(this.binDir, 'kube-apiserver'),
      [`--secure-port=${this.apiPort}`, ...this.apiArgs],
      this.apiTail,
    );
    this.api = proc;
    try {
      await this.waitReady(proc, `${this.server}/readyz`, (status, body) => status === 200 && body.trim() === 'ok');
    } catch (err) {
      await stopProcess(proc, 'SIGKILL');
      throw err;
    }
  }

  private async writeKubeconfig(): Promise<void> {
    this.kubeconfigPath = join(this.workDir, 'kubeconfig');
    const clusterTls =
      this.caData !== undefined
        ? `    certificate-authority-data: ${Buffer.from(this.caData).toString('base64')}`
        : '    insecure-skip-tls-verify: true';
    const kubeconfig = [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: vsxds-test',
      '  cluster:',
      `    server: ${this.server}`,
      clusterTls,
      'users:',
      '- name: vsxds-admin',
      '  user:',
      `    token: ${this.token}`,
      'contexts:',
      '- name: vsxds-test',
      '  context:',
      '    cluster: vsxds-test',
      '    user: vsxds-admin',
      '    namespace: default',
      'current-context: vsxds-test',
      '',
    ].join('\n');
    await writeFile(this.kubeconfigPath, kubeconfig, { mode: 0o600 });
  }

  async stopApiServer(opts: StopApiServerOptions = {}): Promise<void> {
    const proc = this.api;
    if (proc === undefined || proc.exitInfo !== undefined) return;
    await stopProcess(proc, opts.signal ?? 'SIGTERM');
  }

  async startApiServer(): Promise<void> {
    if (this.stopped) throw new Error('kube-env: startApiServer() after stop()');
    if (this.etcd === undefined || this.etcd.exitInfo !== undefined) {
      throw new Error(`kube-env: etcd is not running; cannot restart kube-apiserver\n${this.etcd?.tail.text() ?? ''}`);
    }
    await this.launchApiServer();
  }

  forgetDiscovery(): void {
    rmSync(join(this.workDir, 'kubectl-cache'), { recursive: true, force: true });
  }

  apiServerLogTail(lines = 60): string {
    return this.apiTail.text(lines);
  }

  // ---- kubectl ------------------------------------------------------------------------------

  async kubectl(args: string[], input?: string): Promise<KubectlResult> {
    if (this.kubeconfigPath === '') throw new Error('kube-env: kubectl() before the environment was started');
    const child = spawn(join(this.binDir, 'kubectl'), [`--kubeconfig=${this.kubeconfigPath}`, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: {
        ...process.env,
        KUBECONFIG: this.kubeconfigPath,
        KUBECACHEDIR: join(this.workDir, 'kubectl-cache'),
      },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.on('error', () => undefined); // EPIPE if kubectl exits before reading stdin
    child.stdin.end(input ?? '');
    const result = await waitForExit(child, this.kubectlTimeoutMs);
    if (result === 'timeout') {
      child.kill('SIGKILL');
      throw new Error(
        `kube-env: kubectl ${args.join(' ')} timed out after ${this.kubectlTimeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`,
      );
    }
    return { stdout, stderr, code: result.code ?? 128 };
  }

  async kubectlOk(args: string[], input?: string): Promise<string> {
    const r = await this.kubectl(args, input);
    if (r.code !== 0) {
      throw new Error(`kube-env: kubectl ${args.join(' ')} failed (exit ${r.code})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    }
    return r.stdout;
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.api !== undefined) await stopProcess(this.api, 'SIGTERM', 10_000);
    if (this.etcd !== undefined) await stopProcess(this.etcd, 'SIGTERM', 10_000);
    process.removeListener('exit', this.exitHook);
    if (this.workDir !== '') {
      await rm(this.workDir, { recursive: true, force: true, maxRetries: 3 });
      reaper().unwatchDir(this.workDir);
    }
  }

  /** Synchronous last-resort cleanup for process.on('exit'). */
  private killSync(): void {
    for (const p of [this.api, this.etcd]) {
      if (p !== undefined && p.exitInfo === undefined) {
        try {
          p.child.kill('SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    if (this.workDir !== '') {
      try {
        rmSync(this.workDir, { recursive: true, force: true });
      } catch {
        /* the reaper retries */
      }
    }
  }

  // ---- helpers ------------------------------------------------------------------------------

  private spawnManaged(name: string, file: string, args: string[], tail = new LineTail(LOG_TAIL_LINES)): ManagedProcess {
    if (this.stopped) throw new Error(`kube-env: cannot start ${name} after stop()`);
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const logFile = this.opts.logDir !== undefined ? join(this.opts.logDir, `${name}.log`) : undefined;
    const onData = (d: string): void => {
      tail.push(d);
      if (this.verbose) process.stderr.write(prefixLines(`[${name}] `, d));
      if (logFile !== undefined) void writeFile(logFile, d, { flag: 'a' }).catch(() => undefined);
    };
    child.stdout?.setEncoding('utf8').on('data', onData);
    child.stderr?.setEncoding('utf8').on('data', onData);
    const proc: ManagedProcess = {
      name,
      child,
      tail,
      exitInfo: undefined,
      exited: new Promise<ExitInfo>((resolveExit) => {
        child.on('error', (err) => {
          tail.push(`spawn error: ${err.message}\n`);
          proc.exitInfo ??= { code: 127, signal: null };
          resolveExit(proc.exitInfo);
        });
        child.on('exit', (code, signal) => {
          proc.exitInfo ??= { code, signal };
          if (child.pid !== undefined) reaper().unwatchPid(child.pid);
          resolveExit(proc.exitInfo);
        });
      }),
    };
    if (child.pid !== undefined) reaper().watchPid(child.pid);
    return proc;
  }

  /** Polls `url` until `ok(status, body)`; fails fast if the process exits, loudly on timeout. */
  private async waitReady(proc: ManagedProcess, url: string, ok: (status: number, body: string) => boolean): Promise<void> {
    const deadline = Date.now() + this.readyTimeoutMs;
    let last = 'no response yet';
    for (;;) {
      if (proc.exitInfo !== undefined) {
        throw new Error(
          `kube-env: ${proc.name} exited during startup (${describeExit(proc.exitInfo)}); last output:\n${proc.tail.text(60)}`,
        );
      }
      try {
        const r = await httpGet(url, this.token, this.caData, 5_000);
        if (ok(r.status, r.body)) return;
        last = `HTTP ${r.status}: ${r.body.slice(0, 2_000)}`;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      }
      if (Date.now() > deadline) {
        throw new Error(
          `kube-env: ${proc.name} not ready after ${this.readyTimeoutMs} ms at ${url}; last probe: ${last}\n` +
            `last output of ${proc.name}:\n${proc.tail.text(60)}`,
        );
      }
      await Promise.race([sleep(250), proc.exited]);
    }
  }
}

// --------------------------------------------------------------------------------------------
// Process helpers
// --------------------------------------------------------------------------------------------

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<ExitInfo | 'timeout'> {
  return new Promise((resolveWait, rejectWait) => {
    const timer = setTimeout(() => resolveWait('timeout'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      rejectWait(new Error(`kube-env: failed to run ${child.spawnfile}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolveWait({ code, signal });
    });
  });
}

async function stopProcess(proc: ManagedProcess, signal: 'SIGTERM' | 'SIGKILL', graceMs = 15_000): Promise<void> {
  if (proc.exitInfo !== undefined) return;
  proc.child.kill(signal);
  const res = await Promise.race([proc.exited, sleep(graceMs).then(() => 'timeout' as const)]);
  if (res === 'timeout') {
    proc.child.kill('SIGKILL');
    const killed = await Promise.race([proc.exited, sleep(5_000).then(() => 'timeout' as const)]);
    if (killed === 'timeout') throw new Error(`kube-env: ${proc.name} (pid ${proc.child.pid}) did not die after SIGKILL`);
  }
}

function describeExit(e: ExitInfo): string {
  return e.signal !== null ? `signal ${e.signal}` : `code ${String(e.code)}`;
}

async function freePorts(n: number): Promise<[number, ...number[]]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => {
      const srv = createServer();
      return new Promise<ReturnType<typeof createServer>>((res, rej) => {
        srv.once('error', rej);
        srv.listen(0, '127.0.0.1', () => res(srv));
      });
    }),
  );
  const ports = servers.map((s) => {
    const addr = s.address();
    if (addr === null || typeof addr === 'string') throw new Error('kube-env: could not allocate a port');
    return addr.port;
  });
  await Promise.all(servers.map((s) => new Promise<void>((res) => s.close(() => res()))));
  const [first, ...rest] = ports;
  if (first === undefined) throw new Error('kube-env: could not allocate a port');
  return [first, ...rest];
}

function httpGet(
  url: string,
  token: string,
  ca: string | undefined,
  timeoutMs: number,
): Promise<{ status: number; body: string }> {
  return new Promise((resolveGet, rejectGet) => {
    const u = new URL(url);
    const headers: Record<string, string> = token !== '' && u.protocol === 'https:' ? { authorization: `Bearer ${token}` } : {};
    const req =
      u.protocol === 'https:'
        ? httpsRequest(u, { method: 'GET', headers, timeout: timeoutMs, ...(ca !== undefined ? { ca } : { rejectUnauthorized: false }) })
        : httpRequest(u, { method: 'GET', headers, timeout: timeoutMs });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', rejectGet);
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolveGet({ status: res.statusCode ?? 0, body }));
      res.on('error', rejectGet);
    });
    req.end();
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function prefixLines(prefix: string, text: string): string {
  return text.replace(/^(?=.)/gm, prefix);
}

/** Keeps the last `max` lines of a stream. */
class LineTail {
  private lines: string[] = [];
  private partial = '';
  constructor(private readonly max: number) {}
  push(chunk: string): void {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    this.lines.push(...parts);
    if (this.lines.length > this.max) this.lines.splice(0, this.lines.length - this.max);
  }
  text(n = this.max): string {
    const all = this.partial !== '' ? [...this.lines, this.partial] : this.lines;
    return all.slice(-n).join('\n');
  }
}

// --------------------------------------------------------------------------------------------
// TLS material via the openssl CLI
// --------------------------------------------------------------------------------------------

let opensslAvailable: Promise<boolean> | undefined;
function hasOpenssl(): Promise<boolean> {
  opensslAvailable ??= new Promise((res) => {
    const c = spawn('openssl', ['version'], { stdio: 'ignore' });
    c.on('error', () => res(false));
    c.on('exit', (code) => res(code === 0));
  });
  return opensslAvailable;
}

async function runOpenssl(args: string[], cwd: string): Promise<void> {
  const child = spawn('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const r = await waitForExit(child, 60_000);
  if (r === 'timeout' || r.code !== 0) {
    throw new Error(`kube-env: openssl ${args.join(' ')} failed: ${r === 'timeout' ? 'timeout' : describeExit(r)}\n${out}`);
  }
}

async function makeServingCert(dir: string): Promise<{ caCert: string; serverCert: string; serverKey: string }> {
  const cnf = join(dir, 'openssl.cnf');
  await writeFile(
    cnf,
    [
      '[req]',
      'distinguished_name = dn',
      'prompt = no',
      '[dn]',
      'CN = vsxds-test',
      '[v3_ca]',
      'basicConstraints = critical,CA:TRUE',
      'keyUsage = critical,keyCertSign,cRLSign,digitalSignature',
      'subjectKeyIdentifier = hash',
      '[v3_server]',
      'basicConstraints = critical,CA:FALSE',
      'keyUsage = critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage = serverAuth',
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid',
      'subjectAltName = IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1',
      '',
    ].join('\n'),
  );
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await runOpenssl(
    ['req', '-config', cnf, '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '3650',
      '-subj', '/CN=vsxds-test-ca', '-extensions', 'v3_ca'],
    dir,
  );
  await runOpenssl(['req', '-config', cnf, '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=kube-apiserver'], dir);
  await runOpenssl(
    ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', `0x${randomBytes(8).toString('hex')}`,
      '-days', '3650', '-out', 'server.crt', '-extfile', cnf, '-extensions', 'v3_server'],
    dir,
  );
  return { caCert: join(dir, 'ca.crt'), serverCert: join(dir, 'server.crt'), serverKey: join(dir, 'server.key') };
}

// --------------------------------------------------------------------------------------------
// Reaper: a detached helper that kills our children and removes temp dirs if this process dies
// without running its 'exit' hooks (SIGKILL, crash of a vitest worker, ...). It reads commands
// from its stdin; EOF on stdin means "the parent is gone".
// --------------------------------------------------------------------------------------------

const REAPER_SOURCE = `
const fs = require('node:fs');
const pids = new Set(); const dirs = new Set();
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d; let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const line = buf.slice(0, i); buf = buf.slice(i + 1);
    const sp = line.indexOf(' '); const cmd = line.slice(0, sp); const arg = line.slice(sp + 1);
    if (cmd === 'pid') pids.add(Number(arg)); else if (cmd === 'unpid') pids.delete(Number(arg));
    else if (cmd === 'dir') dirs.add(arg); else if (cmd === 'undir') dirs.delete(arg);
  }
});
process.stdin.on('end', () => {
  for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch {} }
  const until = Date.now() + 3000;
  const alive = () => [...pids].some((p) => { try { process.kill(p, 0); return true; } catch { return false; } });
  const finish = () => {
    if (alive() && Date.now() < until) { setTimeout(finish, 100); return; }
    for (const d of dirs) { try { fs.rmSync(d, { recursive: true, force: true }); } catch {} }
    process.exit(0);
  };
  finish();
});
`;

interface Reaper {
  watchPid(pid: number): void;
  unwatchPid(pid: number): void;
  watchDir(dir: string): void;
  unwatchDir(dir: string): void;
}

let reaperInstance: Reaper | undefined;
function reaper(): Reaper {
  if (reaperInstance !== undefined) return reaperInstance;
  const child = spawn(process.execPath, ['-e', REAPER_SOURCE], {
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
    // Plain node: no loaders/flags inherited from the test runner.
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  child.on('error', () => undefined);
  child.unref();
  const stdin = child.stdin;
  stdin?.on('error', () => undefined);
  // Do not keep this process alive just because the reaper's pipe is open.
  (stdin as unknown as { unref?: () => void } | null)?.unref?.();
  const send = (line: string): void => {
    if (stdin !== null && !stdin.destroyed) stdin.write(`${line}\n`);
  };
  reaperInstance = {
    watchPid: (pid) => send(`pid ${pid}`),
    unwatchPid: (pid) => send(`unpid ${pid}`),
    watchDir: (dir) => send(`dir ${dir}`),
    unwatchDir: (dir) => send(`undir ${dir}`),
  };
  return reaperInstance;
}
