import { createHash } from 'node:crypto';

/**
 * Versions are content hashes, so every process that holds the same resources reports the same
 * versions: an Envoy that reconnects to a restarted or different replica is not re-pushed.
 */
export function resourceVersion(typeUrl: string, encoded: Uint8Array): string {
  return createHash('sha256').update(typeUrl).update('\0').update(encoded).digest('base64url').slice(0, 16);
}

export function isSorted(items: readonly string[]): boolean {
  for (let i = 1; i < items.length; i++) if ((items[i - 1] as string) > (items[i] as string)) return false;
  return true;
}
