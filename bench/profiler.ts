import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { findSourceMap } from 'node:module';
import path from 'node:path';

interface ProfileNode {
  callFrame: { url: string; lineNumber: number; columnNumber: number };
}

/**
 * A CPU profile of a stretch of this process, written as a .cpuprofile. Positions are mapped
 * back to the TypeScript sources (tsx puts its output on one line; tsc's output is in another
 * directory), which needs `node --enable-source-maps`; without it they stay as V8 saw them.
 */
export class CpuProfiler {
  private session?: Session;

  async start(samplingIntervalUs = 200): Promise<void> {
    const session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: samplingIntervalUs });
    await session.post('Profiler.start');
    this.session = session;
  }

  get running(): boolean {
    return this.session !== undefined;
  }

  async stop(file: string): Promise<void> {
    const session = this.session;
    if (!session) return;
    this.session = undefined;
    const { profile } = await session.post('Profiler.stop');
    session.disconnect();
    for (const node of profile.nodes as ProfileNode[]) {
      const cf = node.callFrame;
      if (!cf.url.startsWith('file:')) continue;
      const entry = findSourceMap(cf.url)?.findEntry(cf.lineNumber, cf.columnNumber) as
        | { originalSource?: string; originalLine?: number; originalColumn?: number }
        | undefined;
      if (entry?.originalLine === undefined) continue;
      if (entry.originalSource) cf.url = entry.originalSource;
      cf.lineNumber = entry.originalLine;
      cf.columnNumber = entry.originalColumn ?? 0;
    }
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, JSON.stringify(profile));
  }
}
