import { createHash } from 'node:crypto';
import type { ChangeView } from '../main/change-tracker.js';
import type { Condition, VirtualServiceStatus } from '../model/types.js';
import type { SourceProblem } from '../sources/source.js';
import { proxiesByGroup, type NackRecord, type ProxyInfo, type StreamError } from '../xds/status-registry.js';
import { shortTypeName } from '../xds/type-urls.js';

/** One build as the admin server saw it go by. */
export interface BuildEntry {
  /** Wall clock, ms since the epoch, when the build was seen. */
  readonly at: number;
  readonly ms: number;
  readonly groups: number;
  readonly errors: number;
}

/** Everything the status page shows, gathered at one moment. */
export interface StatusPageData {
  readonly now: number;
  /** Seconds between reloads; 0: no reload. */
  readonly refreshSeconds: number;
  readonly ready: boolean;
  readonly source: { readonly name: string; readonly watchRestarts?: number; readonly problems: readonly SourceProblem[] };
  readonly proxies: readonly ProxyInfo[];
  /** By group key. */
  readonly nacks: ReadonlyMap<string, readonly NackRecord[]>;
  /** By `namespace/name`. */
  readonly virtualServices: ReadonlyMap<string, VirtualServiceStatus>;
  readonly totalBuilds: number;
  /** Newest last. */
  readonly builds: readonly BuildEntry[];
  readonly buildErrors: readonly { readonly group: string; readonly message: string }[];
  /** Newest last; undefined when change tracking is off. */
  readonly changes?: readonly ChangeView[];
  readonly streamErrors: readonly StreamError[];
}

/** Markup that is already escaped; everything else interpolated into `html` is escaped. */
class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

type Piece = Html | string | number | boolean | undefined | null | readonly Piece[];

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** The one escaping helper: text from VirtualServices and proxies only ever reaches the page through here. */
function html(strings: TemplateStringsArray, ...values: Piece[]): Html {
  let out = strings[0] ?? '';
  values.forEach((v, i) => {
    out += piece(v) + (strings[i + 1] ?? '');
  });
  return new Html(out);
}

function piece(v: Piece): string {
  if (v instanceof Html) return v.text;
  if (Array.isArray(v)) return v.map(piece).join('');
  if (v === undefined || v === null || v === false) return '';
  return String(v).replace(/[&<>"']/g, (c) => ESCAPES[c] as string);
}

const CSS = `
:root{color-scheme:light dark;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--mute:#6e7781;--line:#d0d7de}
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;padding:.5rem 1rem 2rem;max-width:80rem}
h1{font-size:1.3rem;margin:.5rem 0}h2{font-size:1.1rem;margin:1.5rem 0 .4rem;border-bottom:1px solid var(--line)}
h3{font-size:1rem;margin:1rem 0 .3rem;word-break:break-all}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;white-space:nowrap}td.msg{white-space:pre-wrap;overflow-wrap:anywhere;font:12px ui-monospace,monospace}tr.detail td{border-top:0}tr:has(+tr.detail) td{border-bottom:0}
code{font:12px ui-monospace,monospace}.mute{color:var(--mute)}
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad);font-weight:600}
.badge{display:inline-block;padding:0 .5rem;border-radius:1rem;border:1px solid currentColor;margin-right:.5rem}
@media (max-width:40rem){.scroll table,.scroll tbody,.scroll tr,.scroll td{display:block}.scroll thead{display:none}
.scroll tr{border-bottom:1px solid var(--line);padding:.3rem 0}.scroll td{border:0;padding:.05rem .25rem}
.scroll td[data-label]::before{content:attr(data-label) ": ";color:var(--mute);font:14px system-ui,sans-serif}}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;margin:.3rem 0}dt{color:var(--mute)}dd{margin:0}
`;

/** The page's one inline style, allowed by hash: the policy lets nothing else load or run. */
export const STATUS_PAGE_CSP = `default-src 'none'; style-src 'sha256-${createHash('sha256').update(CSS).digest('base64')}'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;

const TYPE_ORDER = ['CDS', 'EDS', 'LDS'];

/** The admin port's `/`: what an operator looks at first. A pure function of the data. */
export function renderStatusPage(d: StatusPageData): string {
  const groups = groupProxies(d.proxies);
  const nackCount = [...d.nacks.values()].reduce((n, list) => n + list.length, 0);
  const rejected = [...d.virtualServices.values()].filter((s) => condition(s, 'Accepted')?.status === 'False').length;
  const page = html`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${d.refreshSeconds > 0 ? html`<meta http-equiv="refresh" content="${d.refreshSeconds}">` : ''}
<title>vsxds status</title><style>${new Html(CSS)}</style></head>
<body>
<h1>vsxds ${d.ready ? html`<span class="badge ok" id="ready">ready</span>` : html`<span class="badge bad" id="ready">not ready</span>`}</h1>
<dl id="summary">
<dt>source</dt><dd>${d.source.name}: ${d.ready ? 'synced, configuration served' : 'waiting for the initial sync, nothing served yet'}${d.source.watchRestarts ? html` <span class="warn">(${d.source.watchRestarts} watch restarts)</span>` : ''}</dd>
<dt>proxies</dt><dd>${d.proxies.length} connected in ${groups.size} groups, ${d.proxies.filter((p) => p.synced).length} in step</dd>
<dt>VirtualServices</dt><dd>${d.virtualServices.size}${rejected ? html`, <span class="bad">${rejected} not accepted</span>` : ''}</dd>
<dt>NACKs</dt><dd>${nackCount ? html`<span class="bad">${nackCount}</span>` : html`<span class="ok">none</span>`}</dd>
<dt>builds</dt><dd>${d.totalBuilds}${d.builds.length ? html`, last took ${ms(d.builds[d.builds.length - 1]?.ms ?? 0)}` : ''}</dd>
<dt>as of</dt><dd>${new Date(d.now).toISOString()}${d.refreshSeconds > 0 ? html` <span class="mute">(reloads every ${d.refreshSeconds} s)</span>` : ''}</dd>
</dl>
${nackSection(d.nacks)}
${proxySection(groups)}
${virtualServiceSection(d.virtualServices)}
${d.source.problems.length ? html`<h2>Source problems</h2>${table(['subject', 'problem'], d.source.problems.map((p) => ({ cells: [code(p.subject), cell(p.message, 'msg')] })))}` : ''}
${buildSection(d)}
${d.changes ? changeSection(d.changes) : ''}
${d.streamErrors.length ? html`<h2>Streams ended with an error</h2>${table(['at', 'node', 'peer', 'code'], d.streamErrors.slice(-10).reverse().map((e) => ({ cells: [e.at, code(e.nodeId), e.peer, e.code], detail: { text: e.details } })))}` : ''}
<p class="mute">JSON: <a href="/debug/syncz">/debug/syncz</a> <a href="/debug/virtualservices">/debug/virtualservices</a> <a href="/debug/changes">/debug/changes</a> <a href="/debug/stream_errors">/debug/stream_errors</a> <a href="/metrics">/metrics</a></p>
</body></html>
`;
  return page.text;
}

/** A table cell with a class of its own. */
class Cell {
  constructor(
    readonly content: Piece,
    readonly cls: string,
  ) {}
}

const cell = (content: Piece, cls: string) => new Cell(content, cls);
const code = (text: string) => html`<code>${text}</code>`;

interface Row {
  readonly cells: readonly (Piece | Cell)[];
  /** Attributes of the row, e.g. ` class="proxy" data-node="..."`. */
  readonly attrs?: Html;
  /** A message under the row, across the whole table: long text stays readable on a phone. */
  readonly detail?: { readonly text: string; readonly cls?: string };
}

/** On a narrow screen each row becomes a block and each cell says which column it is (data-label). */
function table(headers: readonly string[], rows: readonly Row[], id?: string): Html {
  const body = rows.map((r) => {
    const cells = r.cells.map((c, i) => (c instanceof Cell ? html`<td data-label="${headers[i]}" class="${c.cls}">${c.content}</td>` : html`<td data-label="${headers[i]}">${c}</td>`));
    const detail = r.detail?.text ? html`<tr class="detail"><td colspan="${headers.length}" class="msg ${r.detail.cls ?? ''}">${r.detail.text}</td></tr>` : '';
    return html`<tr${r.attrs}>${cells}</tr>${detail}`;
  });
  return html`<div class="scroll"><table${id ? html` id="${id}"` : ''}><thead><tr>${headers.map((h) => html`<th>${h}</th>`)}</tr></thead><tbody>${body}</tbody></table></div>`;
}

function nackSection(nacks: ReadonlyMap<string, readonly NackRecord[]>): Html {
  const rows = [...nacks].flatMap(([group, list]) =>
    list.map((n): Row => ({ attrs: html` class="nack"`, cells: [code(group), shortTypeName(n.typeUrl), version(n.version), [...n.nodeIds].sort().join(', ')], detail: { text: n.message, cls: 'bad' } })),
  );
  return html`<h2>NACKs</h2>${rows.length ? table(['group', 'type', 'version', 'proxies'], rows, 'nacks') : html`<p class="ok" id="nacks">No proxy rejects its configuration.</p>`}`;
}

function groupProxies(proxies: readonly ProxyInfo[]): Map<string, readonly ProxyInfo[]> {
  const groups = proxiesByGroup([...proxies].sort((a, b) => a.nodeId.localeCompare(b.nodeId) || a.streamId - b.streamId));
  return new Map([...groups].sort(([a], [b]) => a.localeCompare(b)));
}

function proxySection(groups: ReadonlyMap<string, readonly ProxyInfo[]>): Html {
  if (groups.size === 0) return html`<h2>Proxies</h2><p class="mute">No proxy is connected.</p>`;
  const sections = [...groups].map(([group, proxies]) => {
    const types = [...new Set(proxies.flatMap((p) => [...p.types.keys()].map(shortTypeName)))].sort((a, b) => typeRank(a) - typeRank(b) || a.localeCompare(b));
    const rows = proxies.map((p): Row => {
      const cells = types.map((t) => {
        const st = [...p.types].find(([url]) => shortTypeName(url) === t)?.[1];
        if (!st) return cell('–', 'mute');
        const cls = st.nack ? 'bad' : st.sent !== undefined && st.sent !== st.acked ? 'warn' : 'ok';
        return cell(html`sent ${version(st.sent)}<br>acked ${version(st.acked)}${st.nack ? html`<br>NACK ${version(st.nack.version)}` : ''}`, cls);
      });
      return { attrs: html` class="proxy" data-node="${p.nodeId}"`, cells: [code(p.nodeId || '(no node yet)'), p.mode, p.peer, p.synced ? cell('yes', 'ok') : cell('no', 'warn'), ...cells] };
    });
    return html`<h3>${group} <span class="mute">(${proxies.length})</span></h3>${table(['node', 'mode', 'peer', 'in step', ...types], rows)}`;
  });
  return html`<h2>Proxies by group</h2><div id="proxies">${sections}</div>`;
}

function virtualServiceSection(statuses: ReadonlyMap<string, VirtualServiceStatus>): Html {
  if (statuses.size === 0) return html`<h2>VirtualServices</h2><p class="mute">None.</p>`;
  const rows = [...statuses].sort(([a], [b]) => a.localeCompare(b)).map(([key, s]): Row => {
    const problems = (s.conditions ?? []).filter((c) => conditionClass(c) === 'bad' && c.message).map((c) => `${c.type}: ${c.message}`);
    if (s.nackMessage && !problems.some((p) => p.includes(s.nackMessage as string))) problems.push(`NACK: ${s.nackMessage}`);
    const proxies = s.proxies ? html`${s.proxies.synced}/${s.proxies.matched} synced${s.proxies.nacked ? html`, <span class="bad">${s.proxies.nacked} NACKed</span>` : ''}` : html`<span class="mute">–</span>`;
    return { attrs: html` class="vs" data-key="${key}"`, cells: [code(key), ...['Accepted', 'Conflicted', 'Synced'].map((t) => conditionCell(condition(s, t))), proxies, s.listeners], detail: { text: problems.join('\n') } };
  });
  return html`<h2>VirtualServices</h2>${table(['name', 'accepted', 'conflicted', 'synced', 'proxies', 'listeners'], rows, 'virtualservices')}`;
}

/** Conflicted is the one condition whose True is bad news; Pending is on its way. */
function conditionClass(c: Condition): 'ok' | 'bad' | 'warn' {
  if ((c.status !== 'True' && c.status !== 'False') || c.reason === 'Pending') return 'warn';
  return (c.status === 'True') === (c.type !== 'Conflicted') ? 'ok' : 'bad';
}

function conditionCell(c: Condition | undefined): Cell {
  return c ? cell(html`${c.status} <span class="mute">${c.reason}</span>`, conditionClass(c)) : cell('–', 'mute');
}

function buildSection(d: StatusPageData): Html {
  const rows = [...d.builds].reverse().map((b): Row => ({ cells: [new Date(b.at).toISOString(), ms(b.ms), b.groups, b.errors ? cell(b.errors, 'bad') : 0] }));
  return html`<h2>Last builds</h2>${rows.length ? table(['at', 'took', 'groups translated', 'groups failed'], rows, 'builds') : html`<p class="mute">No build yet.</p>`}
${d.buildErrors.length ? table(['group failing to build (keeps its previous snapshot)', 'error'], d.buildErrors.map((e) => ({ cells: [code(e.group), cell(e.message, 'msg bad')] }))) : ''}`;
}

function changeSection(changes: readonly ChangeView[]): Html {
  const rows = changes.slice(-15).reverse().map((c): Row => {
    const state = c.completedAt !== null ? html`<span class="ok">done in ${ms(c.completedAt - c.receivedAt)}</span>` : c.expired ? html`<span class="bad">not ACKed in time</span>` : html`<span class="warn">on its way</span>`;
    return { cells: [new Date(c.receivedAt).toISOString(), code(c.key), c.kind, c.proxies, state] };
  });
  return html`<h2>Last changes</h2>${rows.length ? table(['received', 'VirtualService', 'kind', 'proxies', 'state'], rows, 'changes') : html`<p class="mute">None yet.</p>`}`;
}

function condition(s: VirtualServiceStatus, type: string) {
  return s.conditions?.find((c) => c.type === type);
}

function typeRank(t: string): number {
  const i = TYPE_ORDER.indexOf(t);
  return i < 0 ? TYPE_ORDER.length : i;
}

/** Versions are content hashes: the first 12 characters tell them apart, the title has all. */
function version(v: string | undefined): Html {
  if (v === undefined) return html`<span class="mute">–</span>`;
  return v.length > 12 ? html`<code title="${v}">${v.slice(0, 12)}…</code>` : html`<code>${v}</code>`;
}

function ms(n: number): string {
  return n < 10 ? `${n.toFixed(1)} ms` : n < 10_000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(1)} s`;
}
