/**
 * A Kubernetes timestamp as RFC 3339 text. client-node turns typed objects' timestamps into
 * Date objects while raw JSON keeps strings; both reach the model.
 */
export function timestampText(value: unknown): string | undefined {
  if (typeof value === 'string') return value === '' ? undefined : value;
  if (value instanceof Date && !Number.isNaN(value.getTime())) return value.toISOString().replace(/\.000Z$/, 'Z');
  return undefined;
}
