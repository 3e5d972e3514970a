/** Just enough PromQL for tests: the metric names an expression (or a Grafana template query) selects. */

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan']);

/**
 * Identifiers that stand where a metric name does: not inside a string, a label matcher
 * `{...}`, a grouping `by (...)`, a range `[...]`, and not a function call or keyword.
 */
export function metricNames(expr: string): string[] {
  const cleaned = expr
    // Grafana's template query label_values(<selector>, <label>): the label is no metric.
    .replace(/\blabel_values\(([^,]+),\s*\w+\s*\)/g, '$1')
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of cleaned.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const name = m[0];
    const after = cleaned.slice((m.index ?? 0) + name.length).trimStart();
    if (after.startsWith('(') || KEYWORDS.has(name.toLowerCase()) || name.startsWith('$') || /^\d/.test(name)) continue;
    const before = cleaned.slice(0, m.index ?? 0);
    if (/\$\w*$/.test(before)) continue; // a Grafana variable such as $__rate_interval
    names.add(name);
  }
  return [...names];
}
