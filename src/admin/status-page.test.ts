import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { ProxyInfo } from '../xds/status-registry.js';
import { LISTENER_TYPE } from '../xds/type-urls.js';
import { renderStatusPage, STATUS_PAGE_CSP, type StatusPageData } from './status-page.js';

const EVIL = `<script>alert(1)</script><img src=x onerror=alert(2)>"'&`;

function proxy(nodeId: string, groupKey: string): ProxyInfo {
  return {
    streamId: 1,
    nodeId,
    mode: 'sotw',
    peer: `ipv4:127.0.0.1:1${EVIL}`,
    group: { key: groupKey } as ProxyInfo['group'],
    types: new Map([[LISTENER_TYPE, { sent: `v2${EVIL}`, acked: 'v1', responses: 2, nack: { version: `v2${EVIL}`, message: `bad ${EVIL}` } }]]),
    synced: false,
  };
}

function data(overrides: Partial<StatusPageData> = {}): StatusPageData {
  const group = `default/app=${EVIL}`;
  return {
    now: Date.UTC(2026, 0, 1),
    refreshSeconds: 5,
    ready: true,
    source: { name: `file:/tmp/${EVIL}`, watchRestarts: 0, problems: [{ subject: `a${EVIL}.yaml`, message: `cannot parse ${EVIL}` }] },
    proxies: [proxy(`default/${EVIL}`, group)],
    nacks: new Map([[group, [{ typeUrl: LISTENER_TYPE, version: `v2${EVIL}`, message: `bad ${EVIL}`, nodeIds: new Set([`default/${EVIL}`]) }]]]),
    virtualServices: new Map([
      [`default/${EVIL}`, { conditions: [{ type: 'Accepted', status: 'False', reason: `Invalid${EVIL}`, message: `spec ${EVIL}` }], nackMessage: `bad ${EVIL}`, proxies: { matched: 1, synced: 0, nacked: 1 } }],
    ]),
    totalBuilds: 3,
    builds: [{ at: Date.UTC(2026, 0, 1), ms: 2.5, groups: 1, errors: 1 }],
    buildErrors: [{ group, message: `cannot build ${EVIL}` }],
    changes: [{ key: `default/${EVIL}`, kind: 'upsert', receivedAt: 1, buildStartedAt: 2, builtAt: 3, build: 1, groups: 1, proxies: 1, types: {}, completedAt: null }],
    streamErrors: [{ at: '2026-01-01T00:00:00Z', nodeId: EVIL, peer: EVIL, code: 'INVALID_ARGUMENT', details: EVIL }],
    ...overrides,
  };
}

describe('status page rendering', () => {
  it('escapes everything that comes from VirtualServices, proxies and sources, in text and in attributes', () => {
    const page = renderStatusPage(data());
    expect(page).not.toContain('<script');
    expect(page).not.toContain('<img');
    // Every interpolation of EVIL is escaped whole: the raw quote characters never reach an attribute.
    expect(page).not.toContain(`"'&<`);
    expect(page).toContain('&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&quot;&#39;&amp;');
    expect(page).toContain(`data-node="default/&lt;script&gt;`);
    // Each place shows it: group, proxy, NACK, VirtualService, source problem, build error, change, stream error.
    expect(page.split('&lt;script&gt;alert(1)').length - 1).toBeGreaterThanOrEqual(12);
  });

  it('allows its own style by hash and nothing else; reloads itself unless told not to', () => {
    const page = renderStatusPage(data());
    const style = /<style>([\s\S]*?)<\/style>/.exec(page)?.[1] ?? '';
    expect(STATUS_PAGE_CSP).toContain(`'sha256-${createHash('sha256').update(style).digest('base64')}'`);
    expect(STATUS_PAGE_CSP).toMatch(/^default-src 'none';/);
    expect(page.match(/<style>/g)).toHaveLength(1);
    expect(page).not.toMatch(/ style=|<script|<link|https?:\/\//);
    expect(page).toContain('<meta http-equiv="refresh" content="5">');
    expect(renderStatusPage(data({ refreshSeconds: 0 }))).not.toContain('http-equiv="refresh"');
  });

  it('says plainly when vsxds is not ready and nothing is connected', () => {
    const page = renderStatusPage(data({ ready: false, proxies: [], nacks: new Map(), virtualServices: new Map(), builds: [], buildErrors: [], changes: undefined, streamErrors: [] }));
    expect(page).toContain('not ready');
    expect(page).toContain('waiting for the initial sync, nothing served yet');
    expect(page).toContain('No proxy is connected.');
    expect(page).toContain('No proxy rejects its configuration.');
    expect(page).not.toContain('Last changes');
  });
});
