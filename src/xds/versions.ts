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
  const pairs = [...entries].map((e) => `${e.name}\0${e.version}`).sort();
  const h = createHash('sha256');
  for (const p of pairs) h.update(p).update('\n');
  return h.digest('base64url').slice(0, 16);
}
