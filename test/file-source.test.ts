import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { filter, firstValueFrom, timeout } from 'rxjs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileSource } from '../src/sources/file-source.js';
import type { SourceState } from '../src/sources/source.js';

const vsYaml = (name: string, port: number) => `
apiVersion: servicemesh.l7mp.io/v1
kind: VirtualService
metadata:
  name: ${name}
spec:
  selector: {app: worker}
  listeners:
    - name: ${name}-l
      udp:
        port: ${port}
        cluster:
          name: ${name}-c
          service_discovery: strictdns
          endpoints:
            - host: {address: 127.0.0.1}
              port: 1234
`;

const podYaml = `
apiVersion: v1
kind: Pod
metadata: {name: worker-1, labels: {app: worker}}
status:
  podIP: 127.0.0.2
  conditions: [{type: Ready, status: "True"}]
`;

describe('file source', () => {
  let dir: string;
  let source: FileSource;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vsxds-files-'));
  });
  afterEach(async () => {
    await source?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const next = (pred: (s: SourceState) => boolean) => firstValueFrom(source.state$.pipe(filter(pred), timeout(5_000)));

  it('reads VirtualServices and Pods from every YAML file below the directory, defaulting the namespace', async () => {
    await writeFile(path.join(dir, 'a.yaml'), vsYaml('a', 2000) + '---\n' + podYaml);
    await writeFile(path.join(dir, 'bootstrap.yaml'), 'node: {id: x}\nadmin: {}\n');
    source = new FileSource(dir, pino({ level: 'silent' }));
    await source.start();
    const state = source.state;
    expect(state.synced).toBe(true);
    expect(state.virtualServices.map((v) => `${v.metadata.namespace}/${v.metadata.name}`)).toEqual(['default/a']);
    expect(state.pods).toEqual([{ namespace: 'default', name: 'worker-1', uid: undefined, labels: { app: 'worker' }, ip: '127.0.0.2', ready: true, terminating: false }]);
    expect(source.podLookup.byName('default', 'worker-1')?.labels).toEqual({ app: 'worker' });
    expect(state.problems).toEqual([]);
  });

  it('reports a broken file and keeps serving the rest, and the last good version of the broken file', async () => {
    await writeFile(path.join(dir, 'a.yaml'), vsYaml('a', 2000));
    await writeFile(path.join(dir, 'b.yaml'), vsYaml('b', 2002));
    source = new FileSource(dir, pino({ level: 'silent' }), { debounceMs: 10 });
    await source.start();
    expect(source.state.virtualServices).toHaveLength(2);

    await writeFile(path.join(dir, 'b.yaml'), 'kind: VirtualService\n  bad: [indent');
    await writeFile(path.join(dir, 'c.yaml'), '{{{ not yaml');
    const broken = await next((s) => s.problems.length > 0 && s.problems.some((p) => p.subject.endsWith('c.yaml')));
    expect(broken.virtualServices.map((v) => v.metadata.name)).toEqual(['a', 'b']);
    expect(broken.problems.find((p) => p.subject.endsWith('b.yaml'))?.message).toMatch(/YAML document 1/);
    expect(broken.problems.map((p) => p.message)).toContain('serving the last version of this file that parsed');

    await writeFile(path.join(dir, 'b.yaml'), vsYaml('b2', 2004));
    await rm(path.join(dir, 'c.yaml'));
    const fixed = await next((s) => s.virtualServices.some((v) => v.metadata.name === 'b2'));
    expect(fixed.virtualServices.map((v) => v.metadata.name)).toEqual(['a', 'b2']);
    expect(fixed.problems).toEqual([]);
  });

  it('keeps the identity of objects from files that did not change', async () => {
    await writeFile(path.join(dir, 'a.yaml'), vsYaml('a', 2000));
    await writeFile(path.join(dir, 'b.yaml'), vsYaml('b', 2002));
    source = new FileSource(dir, pino({ level: 'silent' }), { debounceMs: 10 });
    await source.start();
    const before = source.state.virtualServices[0];
    await writeFile(path.join(dir, 'b.yaml'), vsYaml('b', 2010));
    const after = await next((s) => JSON.stringify(s.virtualServices[1]).includes('2010'));
    expect(after.virtualServices[0]).toBe(before);
  });

  it('refuses a directory that does not exist', async () => {
    source = new FileSource(path.join(dir, 'nope'), pino({ level: 'silent' }));
    await expect(source.start()).rejects.toThrow(/is not a directory/);
  });
});
