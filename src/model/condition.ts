import type { Condition } from './types.js';

export const ACCEPTED = 'Accepted';

/**
 * The `Accepted` condition for a validation (or parse) outcome. Kubernetes conventions keep
 * lastTransitionTime when the status does not change: that needs the previous condition, so
 * it is the status writer's to preserve; `now` lets it (and tests) pick the time.
 */
export function acceptedCondition(
  result: { readonly accepted: true } | { readonly accepted: false; readonly reason: string; readonly message: string },
  generation?: number,
  now: Date = new Date(),
): Condition {
  return {
    type: ACCEPTED,
    status: result.accepted ? 'True' : 'False',
    reason: result.accepted ? ACCEPTED : result.reason,
    message: result.accepted ? 'the VirtualService is valid' : result.message,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    lastTransitionTime: now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
  };
}
