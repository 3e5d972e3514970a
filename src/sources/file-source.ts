import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { BehaviorSubject, Subject, type Observable } from 'rxjs';
import { parseAllDocuments } from 'yaml';
import type { PodLookup } from '../xds/node-identity.js';
import type { Pod } from '../model/types.js';
import { parsePod } from '../model/pod.js';
import { compareByNamespacedName } from './sort-order.js';
import type { RawObject, Source, SourceProblem, SourceState } from './source.js';

interface FileContent {
  readonly hash: string;
  readonly virtualServices: RawObject[];
  readonly pods: Pod[];
}

const YAML_FILE = /\.(ya?ml|json)$/i;

/**
 * A directory tree of YAML files (VirtualServices, and Pods standing in for a cluster), watched.
 * Documents of other kinds (Envoy bootstraps, say) are ignored.
 * A file that fails to parse is reported and its last good content is kept, so a typo being
 * saved does not take configuration away from running proxies.
 */
export class FileSource implements Source {
  readonly name: string;
  private readonly subject = new BehaviorSubject<SourceState>({ virtualServices: [], pods: [], synced: false, problems: [] });
  readonly state$: Observable<SourceState> = this.subject.asObservable();
  readonly podLookup: PodLookup;
  private readonly files = new Map<string, FileContent>();
  private readonly podChanges = new Subject<void>();
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  private reloading = Promise.resolve();

  constructor(
    readonly directory: string,
    private readonly log: Logger,
    private readonly options: { readonly defaultNamespace?: string; readonly debounceMs?: number } = {},
  ) {
    this.name = `file:${directory}`;
    const source = this;
    this.podLookup = {
      byName: (namespace, name) => source.subject.value.pods.find((p) => p.namespace === namespace && p.name === name),
      byUid: (uid) => source.subject.value.pods.find((p) => p.uid === uid),
      changes$: this.podChanges.asObservable(),
    };
  }

  get state(): SourceState {
    return this.subject.value;
  }

  async start(): Promise<void> {
    const info = await stat(this.directory).catch(() => undefined);
    if (!info?.isDirectory()) throw new Error(`file source: ${this.directory} is not a directory`);
    await this.reload();
    this.watcher = watch(this.directory, { persistent: false, recursive: true }, () => this.schedule());
    this.watcher.on('error', (err) => this.log.error({ err }, 'file source: watch failed'));
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    clearTimeout(this.timer);
    await this.reloading;
  }

  /** Re-reads the directory now (tests and the watcher use it). */
  reload(): Promise<void> {
    this.reloading = this.reloading.then(() => this.readAll()).catch((err) => this.log.error({ err }, 'file source: reload failed'));
    return this.reloading;
  }

  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.reload(), this.options.debounceMs ?? 50);
  }

  private async readAll(): Promise<void> {
    const problems: SourceProblem[] = [];
    const names = (await readdir(this.directory, { recursive: true })).filter((n) => YAML_FILE.test(n)).sort();
    for (const gone of [...this.files.keys()].filter((f) => !names.includes(f))) this.files.delete(gone);
    for (const name of names) {
      const file = path.join(this.directory, name);
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (err) {
        // Removed between readdir and read: the next event reloads.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          this.files.delete(name);
          continue;
        }
        throw err;
      }
      const hash = createHash('sha256').update(text).digest('hex');
      if (this.files.get(name)?.hash === hash) continue;
      const parsed = this.parse(file, text, hash);
      if ('problem' in parsed) {
        problems.push(parsed.problem);
        if (this.files.has(name)) problems.push({ subject: file, message: 'serving the last version of this file that parsed' });
        continue;
      }
      this.files.set(name, parsed);
    }
    for (const p of problems) this.log.warn({ file: p.subject }, `file source: ${p.message}`);
    // Stable sort: of two files defining one VirtualService, the first by file name comes first.
    const all = [...this.files.values()].flatMap((f) => f.virtualServices).sort(compareByNamespacedName);
    const virtualServices = all.filter((vs, i) => i === 0 || compareByNamespacedName(all[i - 1] as RawObject, vs) !== 0);
    const pods = [...this.files.values()].flatMap((f) => f.pods).sort(compareByNamespacedName);
    const previousPods = this.subject.value.pods;
    this.subject.next({ virtualServices, pods, synced: true, problems: [...problems, ...duplicates(all)] });
    if (JSON.stringify(previousPods) !== JSON.stringify(pods)) this.podChanges.next();
  }

  private parse(file: string, text: string, hash: string): FileContent | { problem: SourceProblem } {
    const ns = this.options.defaultNamespace ?? 'default';
    const docs = parseAllDocuments(text);
    const virtualServices: RawObject[] = [];
    const pods: Pod[] = [];
    for (const [i, doc] of docs.entries()) {
      if (doc.errors.length > 0) return { problem: { subject: file, message: `YAML document ${i + 1}: ${doc.errors[0]?.message}` } };
      const obj = doc.toJS() as Record<string, any> | null;
      if (obj === null || obj === undefined) continue;
      if (typeof obj !== 'object' || Array.isArray(obj)) {
        return { problem: { subject: file, message: `document ${i + 1} is not an object` } };
      }
      if (obj['kind'] === 'VirtualService') {
        const meta = obj['metadata'] ?? {};
        virtualServices.push({ ...obj, metadata: { ...meta, namespace: meta.namespace || ns, name: String(meta.name ?? '') } } as RawObject);
      } else if (obj['kind'] === 'Pod') {
        const parsed = parsePod(obj, ns);
        if (!parsed.ok) return { problem: { subject: file, message: `document ${i + 1}: ${parsed.message}` } };
        pods.push(parsed.pod);
      } else {
        this.log.debug({ file, kind: obj['kind'] }, 'file source: ignoring a document of another kind');
      }
    }
    return { hash, virtualServices, pods };
  }
}


/** Two files defining the same VirtualService: the first wins, the clash is reported. */
function duplicates(vss: readonly RawObject[]): SourceProblem[] {
  const out: SourceProblem[] = [];
  for (let i = 1; i < vss.length; i++) {
    const a = vss[i - 1] as RawObject;
    const b = vss[i] as RawObject;
    if (a.metadata.namespace === b.metadata.namespace && a.metadata.name === b.metadata.name) {
      out.push({ subject: `${b.metadata.namespace}/${b.metadata.name}`, namespace: b.metadata.namespace, message: 'defined more than once in the directory; the first file (by name) wins' });
    }
  }
  return out;
}

