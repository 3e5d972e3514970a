import { isObject } from './fields.js';
import { parsePod } from './pod.js';
import { parseVirtualService } from './parse.js';
import { API_VERSION, KIND, vsKey, type Pod, type VirtualService } from './types.js';

export interface DocumentProblem {
  /** `namespace/name` of the object when it has one, else `document <n>` (1-based). */
  readonly subject: string;
  readonly message: string;
}

export interface Documents {
  /** Parsed, not validated: validation is what decides a VirtualService's Accepted condition. */
  readonly virtualServices: VirtualService[];
  readonly pods: Pod[];
  readonly problems: DocumentProblem[];
}

/**
 * YAML documents (VirtualServices and v1 Pods, or `kind: List` of them) to model objects,
 * sorted by namespace/name. A bad document is a problem, never the end of the others; a
 * second object with a name already seen is ignored, as the apiserver would refuse it.
 */
export function fromDocuments(docs: readonly unknown[], defaultNamespace: string): Documents {
  const vsByKey = new Map<string, VirtualService>();
  const podByKey = new Map<string, Pod>();
  const problems: DocumentProblem[] = [];

  const visit = (doc: unknown, subject: string): void => {
    if (doc === null || doc === undefined) return;
    if (!isObject(doc)) {
      problems.push({ subject, message: 'not a Kubernetes object' });
      return;
    }
    const { apiVersion, kind } = doc;
    if (kind === 'List' && Array.isArray(doc['items'])) {
      doc['items'].forEach((item, i) => visit(item, `${subject} item ${i + 1}`));
      return;
    }
    if (kind === KIND && apiVersion === API_VERSION) {
      const parsed = parseVirtualService(doc, defaultNamespace);
      if (!parsed.ok) {
        problems.push({ subject: parsed.key ?? subject, message: `VirtualService: ${parsed.message}` });
      } else if (vsByKey.has(vsKey(parsed.vs))) {
        problems.push({ subject: vsKey(parsed.vs), message: 'VirtualService defined more than once; the first definition is used' });
      } else vsByKey.set(vsKey(parsed.vs), parsed.vs);
      return;
    }
    if (kind === 'Pod' && apiVersion === 'v1') {
      const parsed = parsePod(doc, defaultNamespace);
      if (!parsed.ok) {
        problems.push({ subject: parsed.key ?? subject, message: parsed.message });
        return;
      }
      const key = `${parsed.pod.namespace}/${parsed.pod.name}`;
      if (podByKey.has(key)) problems.push({ subject: key, message: 'Pod defined more than once; the first definition is used' });
      else podByKey.set(key, parsed.pod);
      return;
    }
    problems.push({ subject, message: `ignored: ${String(apiVersion)}/${String(kind)} is neither ${API_VERSION} ${KIND} nor v1 Pod` });
  };

  docs.forEach((doc, i) => visit(doc, `document ${i + 1}`));
  return { virtualServices: sortedValues(vsByKey), pods: sortedValues(podByKey), problems };
}

function sortedValues<T>(byKey: ReadonlyMap<string, T>): T[] {
  return [...byKey.keys()].sort().map((k) => byKey.get(k) as T);
}
