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

  /** Writes `count` statuses at once (forgetting `forget` of them meanwhile); resolves with the names written and the most in flight at once. */
  async function burst(count: number, forget: readonly string[] = []): Promise<{ written: string[]; most: number }> {
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
    for (let i = 0; i < count; i++) writer.write(`default/vs-${i}`, 1, status(1));
    for (const name of forget) writer.forget(`default/${name}`);
    for (let i = 0; i < 500 && written.length < count - forget.length; i++) await new Promise((r) => setTimeout(r, 5));
    writer.stop();
    return { written: written.sort(), most };
  }

  const names = (count: number) => Array.from({ length: count }, (_, i) => `vs-${i}`).sort();

  it('a burst of statuses is written a few at a time, each once, however many wait (not all queued in the HTTP agent, where their timeouts run)', async () => {
    // Deleted while waiting: never written.
    const { written, most } = await burst(200, ['vs-199']);
    expect(written).toEqual(names(199));
    // A backlog: more than two at once, but never more than eight.
    expect(most).toBeGreaterThan(2);
    expect(most).toBeLessThanOrEqual(8);
  });

  it('a report-sized burst goes two at a time, not all at once (they would hold up the API server for everyone)', async () => {
    const { written, most } = await burst(12);
    expect(written).toEqual(names(12));
    expect(most).toBe(2);
  });
});
