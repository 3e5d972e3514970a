/**
 * `vsxds render` checks what `serve` would: the proxy's configuration is built into a snapshot
 * (encoded and checked for consistency), so a configuration Envoy would never get fails render.
 */
import { Writable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { render } from '../src/main/render.js';
import { LISTENER_TYPE } from '../src/xds/index.js';

// The translation of a proxy's listeners with a field no Listener has, as a translation bug would make it.
vi.mock('../src/translate/index.js', async (importOriginal) => {
  const original = await importOriginal<typeof import('../src/translate/index.js')>();
  return {
    ...original,
    translateGroup: (...args: Parameters<typeof original.translateGroup>) => {
      const t = original.translateGroup(...args);
      const listeners = (t.snapshot[LISTENER_TYPE] ?? []).map((l) => ({ ...l, resource: { ...l.resource, no_such_field: 1 } }));
      return { ...t, snapshot: { ...t.snapshot, [LISTENER_TYPE]: listeners } };
    },
  };
});

function sink(): Writable & { text: string } {
  const w = new Writable({
    write(chunk, _enc, done) {
      w.text += String(chunk);
      done();
    },
  }) as Writable & { text: string };
  w.text = '';
  return w;
}

describe('vsxds render', () => {
  it('fails for a configuration that does not encode, naming what is wrong', async () => {
    const out = sink();
    const err = sink();
    const code = await render({ source: 'file:examples', nodeNamespace: 'default', nodeLabels: 'app=ingress', format: 'json', shareClusters: 'true' }, out, err, {});
    expect(code).toBe(1);
    expect(err.text).toMatch(/^invalid: the configuration of this proxy does not build: .*no_such_field/m);
  });
});
