/** A problem found in a VirtualService, at a path such as `spec.listeners[1].udp.port`. */
export interface Problem {
  readonly path: string;
  readonly message: string;
}

/** Condition reasons, from the most specific part of the object a problem is in. */
export const REASONS = {
  object: 'InvalidObject',
  spec: 'InvalidSpec',
  selector: 'InvalidSelector',
  listener: 'InvalidListener',
  cluster: 'InvalidCluster',
  healthCheck: 'InvalidHealthCheck',
  endpoint: 'InvalidEndpoint',
} as const;

export function reasonFor(fullPath: string): string {
  // Label keys follow `.selector.` and may contain anything; only the structure decides.
  const at = fullPath.indexOf('.selector.');
  const path = at >= 0 ? fullPath.slice(0, at + '.selector'.length) : fullPath;
  if (path.includes('.endpoints[')) return REASONS.endpoint;
  if (path.includes('.health_check')) return REASONS.healthCheck;
  if (path.includes('.cluster')) return REASONS.cluster;
  if (path.startsWith('spec.listeners')) return REASONS.listener;
  if (path.startsWith('spec.selector')) return REASONS.selector;
  if (path.startsWith('spec')) return REASONS.spec;
  return REASONS.object;
}

// A condition message is read in `kubectl describe`; past a handful, more problems are noise.
const MAX_REPORTED = 5;

/** One reason (the first problem's) and one message naming every problem, for a condition. */
export function summarize(problems: readonly Problem[]): { reason: string; message: string } {
  const first = problems[0];
  if (!first) throw new Error('summarize needs at least one problem');
  const shown = problems.slice(0, MAX_REPORTED).map((p) => (p.path ? `${p.path}: ${p.message}` : p.message));
  const more = problems.length - shown.length;
  return { reason: reasonFor(first.path), message: shown.join('; ') + (more > 0 ? `; and ${more} more` : '') };
}
