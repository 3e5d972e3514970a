/**
 * External programs the tests drive: a child process run to completion, and the test tools that
 * scripts under test/env/ and deploy/hack/ install (each prints the binary's path as its last
 * line of stdout). A tool that cannot be installed fails the test that needs it; none is skipped.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
/** A cold build from Go modules takes minutes on 2 cores. */
export const INSTALL_TIMEOUT_MS = 40 * 60_000;

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: readonly string[], opts: { cwd?: string; timeoutMs?: number; echoStderr?: boolean; input?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      // A cold build takes minutes; its progress belongs in the test output.
      if (opts.echoStderr) process.stderr.write(d);
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} timed out after ${opts.timeoutMs} ms\n${stderr.slice(-4000)}`));
    }, opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

export async function runOk(cmd: string, args: readonly string[], opts: Parameters<typeof run>[2] = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.code})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r.stdout;
}

const installs = new Map<string, Promise<string>>();

/** Runs an install script (path from the repository root) once per process and returns the binary it printed. */
export function installedTool(script: string, what: string): Promise<string> {
  let p = installs.get(script);
  if (!p) {
    p = (async () => {
      const out = await run('bash', [path.join(ROOT, script)], { timeoutMs: INSTALL_TIMEOUT_MS, echoStderr: true });
      if (out.code !== 0) throw new Error(`${script} failed (exit ${out.code}); ${what} is required for this suite:\n${out.stderr.slice(-4000)}`);
      const bin = out.stdout.trim().split('\n').at(-1) ?? '';
      if (!existsSync(bin)) throw new Error(`${script} printed ${JSON.stringify(bin)}, which does not exist`);
      return bin;
    })();
    p.catch(() => installs.delete(script));
    installs.set(script, p);
  }
  return p;
}
