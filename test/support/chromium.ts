/**
 * Headless Chromium (Debian's package, installed by test/env/install-chromium.sh) driven by its
 * command-line flags: load a page and read the DOM it rendered, or keep a screenshot of it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { installedTool, run, runOk } from './tools.js';

/** Where tests keep what a person would look at (gitignored). */
export const ARTIFACTS = path.join(import.meta.dirname, '..', '..', 'test-artifacts');

export interface Loaded {
  /** The DOM after load, serialized. */
  readonly dom: string;
  /** Chromium's log: console messages and Content-Security-Policy violations land here. */
  readonly log: string;
}

async function chromium(args: readonly string[], url: string): Promise<{ stdout: string; stderr: string }> {
  const bin = await installedTool('test/env/install-chromium.sh', 'Chromium');
  const profile = await mkdtemp(path.join(tmpdir(), 'vsxds-chromium-'));
  try {
    // --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
    const common = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-extensions', '--disable-background-networking', `--user-data-dir=${profile}`, '--enable-logging=stderr', '--v=0'];
    const r = await run(bin, [...common, ...args, url], { timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`chromium ${args.join(' ')} ${url} exited ${r.code}:\n${r.stderr.slice(-3000)}`);
    return r;
  } finally {
    await rm(profile, { recursive: true, force: true });
  }
}

export async function loadPage(url: string): Promise<Loaded> {
  const { stdout, stderr } = await chromium(['--dump-dom'], url);
  return { dom: stdout, log: stderr };
}

export async function screenshot(url: string, file: string, width: number, height: number): Promise<string> {
  await runOk('mkdir', ['-p', path.dirname(file)]);
  await chromium([`--screenshot=${file}`, `--window-size=${width},${height}`, '--hide-scrollbars'], url);
  return file;
}
