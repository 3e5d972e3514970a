/**
 * The alert rules of deploy/monitoring/, checked by Prometheus's own promtool (built from Go
 * modules by test/env/install-promtool.sh on first use and cached; if that fails the suite
 * fails, it is never skipped): they parse, their unit tests pass, every alert has a case that
 * fires and one that does not (a rule that never fires, or always does, fails them), and the
 * PrometheusRule wrappers hold the very same groups. The dashboard's and rules' metrics are
 * checked against a live /metrics in test/envoy/status-page.test.ts.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { metricNames } from './support/promql.js';
import { INSTALL_TIMEOUT_MS, installedTool, ROOT, run, runOk } from './support/tools.js';

const MONITORING = path.join(ROOT, 'deploy', 'monitoring');
const RULES = 'vsxds-alerts.rules.yaml';
const TESTS = 'vsxds-alerts.test.yaml';

type Obj = Record<string, any>;

describe('alert rules (promtool)', { timeout: 120_000 }, () => {
  let promtool: string;
  let rules: Obj;
  let work: string;

  beforeAll(async () => {
    promtool = await installedTool('test/env/install-promtool.sh', 'promtool');
    rules = parse(await readFile(path.join(MONITORING, RULES), 'utf8'));
    work = await mkdtemp(path.join(tmpdir(), 'vsxds-rules-'));
  }, INSTALL_TIMEOUT_MS + 60_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  const alerts = () => (rules.groups as Obj[]).flatMap((g) => g.rules as Obj[]);

  it('parse and pass promtool check rules, every alert with a severity, a summary and a description', async () => {
    const out = await runOk(promtool, ['check', 'rules', RULES], { cwd: MONITORING });
    expect(out).toContain(`SUCCESS: ${alerts().length} rules found`);
    expect(alerts().map((a) => a.alert).sort()).toEqual(['VsxdsBuildTimeHigh', 'VsxdsNacksRising', 'VsxdsNotReady', 'VsxdsProxiesNotSynced', 'VsxdsSnapshotBuildFailing', 'VsxdsWatchRestarting']);
    for (const a of alerts()) {
      expect(['warning', 'critical'], a.alert).toContain(a.labels?.severity);
      expect(a.annotations?.summary, a.alert).toBeTruthy();
      expect(a.annotations?.description, a.alert).toBeTruthy();
      expect(metricNames(a.expr).every((m) => m.startsWith('vsxds_')), `${a.alert} queries vsxds metrics only`).toBe(true);
    }
  });

  it('pass their unit tests (promtool test rules)', async () => {
    const r = await run(promtool, ['test', 'rules', TESTS], { cwd: MONITORING });
    expect(r.stdout + r.stderr).toContain('SUCCESS');
    expect(r.code).toBe(0);
  });

  // The unit tests fire each alert and keep it quiet: with its expression replaced by one that
  // never fires, or by one that always does, they must fail.
  it.each([
    ['never fires', 'vector(0) > 1'],
    ['always fires', 'vector(1)'],
  ])('fail for each alert whose rule %s', async (_what, expr) => {
    const tests = parse(await readFile(path.join(MONITORING, TESTS), 'utf8'));
    const passed: string[] = [];
    for (const alert of alerts().map((a) => a.alert as string)) {
      const dir = await mkdtemp(path.join(work, `${alert}-`));
      const mutated = { groups: (rules.groups as Obj[]).map((g) => ({ ...g, rules: (g.rules as Obj[]).map((r) => (r.alert === alert ? { ...r, expr } : r)) })) };
      await writeFile(path.join(dir, RULES), stringify(mutated));
      await writeFile(path.join(dir, TESTS), stringify(tests));
      const r = await run(promtool, ['test', 'rules', TESTS], { cwd: dir });
      if (r.code === 0) passed.push(alert);
    }
    expect(passed, 'alerts whose unit tests did not notice').toEqual([]);
  });

  it('are the same groups in the PrometheusRule of deploy/monitoring/ (and the chart ships the very file)', async () => {
    const [rule] = parseAllDocuments(await readFile(path.join(MONITORING, 'prometheusrule.yaml'), 'utf8')).map((d) => d.toJS() as Obj);
    expect(rule).toMatchObject({ apiVersion: 'monitoring.coreos.com/v1', kind: 'PrometheusRule', metadata: { name: 'vsxds' } });
    expect(rule!.spec).toEqual(rules);
    // What the operator runs is what promtool checked: the spec, written out as a rule file, checks too.
    await writeFile(path.join(work, 'from-prometheusrule.yaml'), stringify(rule!.spec));
    await runOk(promtool, ['check', 'rules', 'from-prometheusrule.yaml'], { cwd: work });
    const chartCopy = await readFile(path.join(ROOT, 'charts', 'vsxds', 'files', RULES), 'utf8');
    expect(chartCopy).toBe(await readFile(path.join(MONITORING, RULES), 'utf8'));
  });
});

describe('Grafana dashboard', () => {
  it('is valid JSON with a Prometheus data source variable, and every panel queries through it', async () => {
    const dashboard = JSON.parse(await readFile(path.join(MONITORING, 'vsxds-dashboard.json'), 'utf8'));
    expect(dashboard).toMatchObject({ uid: 'vsxds', title: 'vsxds' });
    expect(dashboard.templating.list.find((v: Obj) => v.name === 'datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    const panels = (dashboard.panels as Obj[]).filter((p) => p.type !== 'row');
    expect(panels.length).toBeGreaterThan(10);
    const ids = (dashboard.panels as Obj[]).map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets) expect(metricNames(t.expr).length, `${p.title}: ${t.expr}`).toBeGreaterThan(0);
    }
    const chartCopy = await readFile(path.join(ROOT, 'charts', 'vsxds', 'files', 'vsxds-dashboard.json'), 'utf8');
    expect(chartCopy).toBe(await readFile(path.join(MONITORING, 'vsxds-dashboard.json'), 'utf8'));
  });
});
