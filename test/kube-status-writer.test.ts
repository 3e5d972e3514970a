/**
 * KubernetesStatusWriter's retries across a leadership pause and its bound on writes in flight, with a stand-in for the API
 * client (the writer against a real API server is in test/kubernetes.test.ts and, through
 * connections that go silent, test/envoy/faults.test.ts).
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { KubernetesStatusWriter } from '../src/sources/kube-status-writer.js';
import type { VirtualServiceStatus } from '../src/model/types.js';

const status = (n: number): VirtualServiceStatus => ({ observedGeneration: n, conditions: [], listeners: 1, proxies: { matched: 0, synced: 0, nacked: 0, summary: '0/0' } }) as unknown as VirtualServiceStatus;

describe('status writer', () => {
  it('a write that failed while this replica stopped leading is written when it leads again', async () => {
    const calls: Array<{ name: string; body: unknown }> = [];
    let fail = true;
    const patch = async (_namespace: string, name: string, body: unknown) => {
      calls.push({ name, body });
      if (fail) throw Object.assign(new Error('The user aborted a request.'), { code: undefined });
      return '';
    };
    const writer = new KubernetesStatusWriter(patch, pino({ level: 'silent' }), () => 20);
    writer.write('default/a', 1, status(1));
    await new Promise((r) => setTimeout(r, 5));
    expect(calls).toHaveLength(1);
    // Leadership lost before the retry: the retry finds writing off.
    writer.enabled = false;
    await new Promise((r) => setTimeout(r, 50));
    fail = false;
    writer.write('default/a', 1, status(2));
    writer.enabled = true;
    await new Promise((r) => setTimeout(r, 50));
    expect(calls.length).toBeGreaterThanOrEqual(2);
    expect((calls.at(-1)?.body as { status: { observedGeneration: number } }).status.observedGeneration).toBe(2);
    writer.stop();
  });

  it('a burst of statuses is written a few at a time, each once, however many wait (not all queued in the HTTP agent, where their timeouts run)', async () => {
    let inFlight = 0;
    let most = 0;
    const written: string[] = [];
    const patch = async (_namespace: string, name: string) => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, 1));
      inFlight -= 1;
      written.push(name);
      return '';
    };
    const writer = new KubernetesStatusWriter(patch, pino({ level: 'silent' }));
    const names = Array.from({ length: 200 }, (_, i) => `vs-${i}`);
    for (const name of names) writer.write(`default/${name}`, 1, status(1));
    // Deleted while waiting: never written.
    writer.forget('default/vs-199');
    for (let i = 0; i < 500 && written.length < 199; i++) await new Promise((r) => setTimeout(r, 5));
    expect(written.sort()).toEqual(names.slice(0, 199).sort());
    // A backlog: more than two at once, but never more than eight.
    expect(most).toBeGreaterThan(2);
    expect(most).toBeLessThanOrEqual(8);
    writer.stop();
  });

  it('a report-sized burst goes two at a time, not all at once (they would hold up the API server for everyone)', async () => {
    let inFlight = 0;
    let most = 0;
    const written: string[] = [];
    const patch = async (_namespace: string, name: string) => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, 2));
      inFlight -= 1;
      written.push(name);
      return '';
    };
    const writer = new KubernetesStatusWriter(patch, pino({ level: 'silent' }));
    const names = Array.from({ length: 12 }, (_, i) => `vs-${i}`);
    for (const name of names) writer.write(`default/${name}`, 1, status(1));
    for (let i = 0; i < 200 && written.length < 12; i++) await new Promise((r) => setTimeout(r, 5));
    expect(written.sort()).toEqual([...names].sort());
    expect(most).toBe(2);
    writer.stop();
  });
});
