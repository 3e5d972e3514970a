/**
 * Summarizes V8 .cpuprofile files (from `node --cpu-prof` or the inspector) into the shares
 * that matter for optimization: self time per function, inclusive time per function, and
 * self time per source file or package.
 *
 *   node --import tsx bench/profile-summary.ts FILE.cpuprofile... [--top 20]
 *
 * Several files are summed, so repeated runs of one scenario give one picture.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface Share {
  readonly name: string;
  readonly ms: number;
  readonly share: number;
}

export interface ProfileSummary {
  readonly files: number;
  readonly totalMs: number;
  readonly self: Share[];
  readonly inclusive: Share[];
  readonly byFile: Share[];
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The file a frame is in: repository-relative, or `package/path` inside node_modules. */
function fileOf(url: string): string {
  const file = url.startsWith('file://') ? fileURLToPath(url) : url;
  const nm = file.lastIndexOf('node_modules/');
  if (nm >= 0) return file.slice(nm + 'node_modules/'.length);
  return path.isAbsolute(file) ? path.relative(ROOT, file) : file;
}

/** Where self time is grouped: a source file of this repository, a package, or Node itself. */
function where(url: string): string {
  if (!url) return '(native)';
  if (url.startsWith('node:')) return 'node:internal';
  const file = fileOf(url);
  if (!url.includes('node_modules/')) return file;
  const parts = file.split('/');
  return parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? file);
}

function functionKey(f: CallFrame): string {
  const name = f.functionName || '(anonymous)';
  if (!f.url) return name;
  if (f.url.startsWith('node:')) return `${name} [${f.url}]`;
  return `${name} ${fileOf(f.url)}:${f.lineNumber + 1}`;
}

function top(map: Map<string, number>, total: number, n: number): Share[] {
  return [...map.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, us]) => ({ name, ms: Math.round(us / 100) / 10, share: Math.round((us / total) * 1000) / 10 }));
}

export function summarizeProfiles(files: readonly string[], n = 20): ProfileSummary {
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const byFile = new Map<string, number>();
  let total = 0;
  for (const file of files) {
    const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
    const byId = new Map(profile.nodes.map((node) => [node.id, node]));
    const parent = new Map<number, number>();
    for (const node of profile.nodes) for (const c of node.children ?? []) parent.set(c, node.id);
    // Stacks repeat; compute each node's set of distinct functions once. Samples taken while
    // the inspector serializes the profile itself (native `dispatch`) are not the program's.
    const stackKeys = new Map<number, string[] | null>();
    const keysOf = (id: number): string[] | null => {
      let keys = stackKeys.get(id);
      if (keys !== undefined) return keys;
      const seen = new Set<string>();
      let inspector = false;
      for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
        const f = byId.get(cur)?.callFrame;
        if (f?.functionName === 'dispatch' && !f.url) inspector = true;
        // Node's own plumbing (event loop, streams) tops every inclusive list and says nothing.
        if (f?.url && !f.url.startsWith('node:')) seen.add(functionKey(f));
      }
      stackKeys.set(id, (keys = inspector ? null : [...seen]));
      return keys;
    };
    profile.samples.forEach((id, i) => {
      const dt = profile.timeDeltas[i] ?? 0;
      const f = byId.get(id)?.callFrame;
      const keys = keysOf(id);
      if (!f || f.functionName === '(idle)' || !keys) return;
      total += dt;
      const key = functionKey(f);
      self.set(key, (self.get(key) ?? 0) + dt);
      const file = f.url ? where(f.url) : f.functionName;
      byFile.set(file, (byFile.get(file) ?? 0) + dt);
      for (const k of keys) inclusive.set(k, (inclusive.get(k) ?? 0) + dt);
    });
  }
  return { files: files.length, totalMs: Math.round(total / 1000), self: top(self, total, n), inclusive: top(inclusive, total, n), byFile: top(byFile, total, n) };
}

export function formatSummary(title: string, s: ProfileSummary): string {
  const lines = [`### ${title} (${s.totalMs} ms of samples, ${s.files} profile${s.files === 1 ? '' : 's'})`, ''];
  const section = (name: string, rows: Share[]): void => {
    lines.push(`${name}:`, '');
    for (const r of rows) lines.push(`  ${r.share.toFixed(1).padStart(5)}%  ${String(r.ms).padStart(8)} ms  ${r.name}`);
    lines.push('');
  };
  section('Self time by function', s.self);
  section('Inclusive time by function', s.inclusive);
  section('Self time by file or package', s.byFile);
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const t = args.indexOf('--top');
  const n = t >= 0 ? Number(args[t + 1]) : 20;
  const files = args.filter((a, i) => a !== '--top' && args[i - 1] !== '--top');
  console.log(formatSummary(files.map((f) => path.basename(f)).join(', '), summarizeProfiles(files, n)));
}
