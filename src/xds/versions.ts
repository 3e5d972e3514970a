import { createHash } from 'node:crypto';

/**
 * Versions are content hashes, so every process that holds the same resources reports the same
 * versions: an Envoy that reconnects to a restarted or different replica is not re-pushed.
 */
export function resourceVersion(typeUrl: string, encoded: Uint8Array): string {
  return createHash('sha256').update(typeUrl).update('\0').update(encoded).digest('base64url').slice(0, 16);
}

/** Version of a set of resources: a hash over their sorted (name, version) pairs. */
export function setVersion(entries: Iterable<{ name: string; version: string }>): string {
  const pairs = [...entries].map((e) => `${e.name}\0${e.version}`);
  // Translations hand resources over sorted by name, which sorts the pairs too: check, not sort.
  if (!isSorted(pairs)) pairs.sort();
  return createHash('sha256').update(pairs.length > 0 ? `${pairs.join('\n')}\n` : '').digest('base64url').slice(0, 16);
}

export function isSorted(items: readonly string[]): boolean {
  for (let i = 1; i < items.length; i++) if ((items[i - 1] as string) > (items[i] as string)) return false;
  return true;
}
