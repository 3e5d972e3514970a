import { encodeResource, decodeResource } from './encode.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, shortTypeName } from './type-urls.js';
import { isSorted, resourceVersion, setVersion } from './versions.js';
import { lengthDelimitedField, stringField } from './wire.js';

export interface ResourceRef {
  readonly typeUrl: string;
  readonly name: string;
}

/** A resource as the builder of a snapshot gives it: proto field names, `Any` as `{ '@type', ... }`. */
export interface ResourceInput {
  readonly name: string;
  readonly resource: object;
  /** Resources this one needs to work (a listener's clusters): kept on a proxy until this one lets go. */
  readonly references?: readonly ResourceRef[];
}

/** Resources per type URL. */
export type SnapshotInput = Readonly<Record<string, readonly ResourceInput[]>>;

/** One resource encoded once, with the framings every kind of response needs, shared by all streams. */
export interface EncodedResource {
  readonly typeUrl: string;
  readonly name: string;
  readonly version: string;
  /** The `google.protobuf.Any` wrapping the resource. */
  readonly any: Buffer;
  /** `DiscoveryResponse.resources` entry (field 2). */
  readonly sotwField: Buffer;
  /** `DeltaDiscoveryResponse.resources` entry (field 2): a `Resource` with name, version and the Any. */
  readonly deltaField: Buffer;
  readonly references: readonly ResourceRef[];
  readonly explicitReferences: readonly ResourceRef[];
  readonly source: object;
}

export class SnapshotConsistencyError extends Error {
  override name = 'SnapshotConsistencyError';
  constructor(readonly problems: readonly string[]) {
    super(`inconsistent snapshot: ${problems.join('; ')}`);
  }
}

// Encoding dominates snapshot builds; a builder that hands the same object again skips it.
const encodedByInput = new WeakMap<object, EncodedResource>();

export function encodeInput(typeUrl: string, input: ResourceInput): EncodedResource {
  const cached = encodedByInput.get(input.resource);
  if (cached && cached.typeUrl === typeUrl && cached.name === input.name && sameRefs(cached.explicitReferences, input.references ?? [])) {
    return cached;
  }
  const value = encodeResource(typeUrl, input.resource);
  const version = resourceVersion(typeUrl, value);
  const references = [...(input.references ?? []), ...implicitReferences(typeUrl, input.name, value)];
  const any = Buffer.concat([stringField(1, typeUrl), lengthDelimitedField(2, value)]);
  const deltaResource = Buffer.concat([stringField(3, input.name), stringField(1, version), lengthDelimitedField(2, any)]);
  const encoded: EncodedResource = {
    typeUrl,
    name: input.name,
    version,
    any,
    sotwField: lengthDelimitedField(2, any),
    deltaField: lengthDelimitedField(2, deltaResource),
    references,
    explicitReferences: input.references ?? [],
    source: input.resource,
  };
  encodedByInput.set(input.resource, encoded);
  return encoded;
}

/** An EDS cluster needs its ClusterLoadAssignment: recorded so it is checked and kept while the cluster is. */
function implicitReferences(typeUrl: string, name: string, value: Uint8Array): ResourceRef[] {
  if (typeUrl !== CLUSTER_TYPE) return [];
  const decoded = decodeResource(CLUSTER_TYPE, value, { enums: String, defaults: false });
  if (decoded['type'] !== 'EDS') return [];
  const edsConfig = decoded['eds_cluster_config'] as { service_name?: string } | undefined;
  return [{ typeUrl: ENDPOINT_TYPE, name: edsConfig?.service_name || name }];
}

function sameRefs(a: readonly ResourceRef[], b: readonly ResourceRef[]): boolean {
  return a.length === b.length && a.every((r, i) => r.typeUrl === b[i]?.typeUrl && r.name === b[i]?.name);
}

/** All resources of one type in a snapshot. */
export class ResourceSet {
  readonly version: string;
  readonly names: readonly string[];
  private referenced?: ReadonlySet<string>;

  constructor(
    readonly typeUrl: string,
    /** In the order of the input the set was built from. */
    readonly byName: ReadonlyMap<string, EncodedResource>,
  ) {
    const names = [...byName.keys()];
    this.names = isSorted(names) ? names : names.sort();
    this.version = setVersion(byName.values());
  }

  get(name: string): EncodedResource | undefined {
    return this.byName.get(name);
  }

  /** Type URLs this set's resources reference. */
  referencedTypes(): ReadonlySet<string> {
    if (!this.referenced) {
      const types = new Set<string>();
      for (const r of this.byName.values()) for (const ref of r.references) types.add(ref.typeUrl);
      this.referenced = types;
    }
    return this.referenced;
  }

  /**
   * The input would encode to exactly this set's resources, in the same order: the same resource
   * objects (the encode cache is keyed by them) under the same names and explicit references.
   */
  builtFrom(typeUrl: string, items: readonly ResourceInput[]): boolean {
    if (typeUrl !== this.typeUrl || items.length !== this.byName.size) return false;
    let i = 0;
    for (const r of this.byName.values()) {
      const item = items[i++] as ResourceInput;
      if (r.source !== item.resource || r.name !== item.name) return false;
      const refs = item.references ?? NO_REFS;
      if (r.explicitReferences !== refs && !sameRefs(r.explicitReferences, refs)) return false;
    }
    return true;
  }
}

const NO_REFS: readonly ResourceRef[] = [];

/** The set of a type a snapshot does not mention: empty, and one per type, so it is the same object in every snapshot. */
const absentSets = new Map<string, ResourceSet>();

function absentSet(typeUrl: string): ResourceSet {
  let set = absentSets.get(typeUrl);
  if (!set) {
    // Only types a stream asked for and is served land here; bound it all the same.
    if (absentSets.size >= 64) absentSets.clear();
    absentSets.set(typeUrl, (set = new ResourceSet(typeUrl, new Map())));
  }
  return set;
}

const EMPTY_SETS = new Map<string, ResourceSet>();

/** An immutable, consistency-checked set of resources for one node group. */
export class Snapshot {
  private constructor(private readonly sets: ReadonlyMap<string, ResourceSet>) {}

  static empty(): Snapshot {
    return new Snapshot(EMPTY_SETS);
  }

  /**
   * Encodes and checks the input. Throws SnapshotConsistencyError naming every problem found.
   *
   * With `previous` (the snapshot this one replaces), a type whose input is the previous one's
   * (ResourceSet.builtFrom) keeps the previous ResourceSet object: nothing is encoded, sorted or
   * hashed for it, and streams that settled against that object skip the type. Checks that only
   * involve kept sets passed when `previous` was built and are not run again; every check that
   * touches a new set is. When every set is kept, `previous` itself is returned.
   */
  static build(input: SnapshotInput, previous?: Snapshot): Snapshot {
    const problems: string[] = [];
    const sets = new Map<string, ResourceSet>();
    const before = previous?.sets ?? EMPTY_SETS;
    for (const typeUrl of Object.keys(input).sort()) {
      const items = input[typeUrl] ?? [];
      const kept = before.get(typeUrl);
      if (kept?.builtFrom(typeUrl, items)) {
        sets.set(typeUrl, kept);
        continue;
      }
      const byName = new Map<string, EncodedResource>();
      for (const item of items) {
        if (!item.name) {
          problems.push(`a ${shortTypeName(typeUrl)} resource has an empty name`);
          continue;
        }
        if (byName.has(item.name)) {
          problems.push(`duplicate ${shortTypeName(typeUrl)} resource name "${item.name}"`);
          continue;
        }
        try {
          byName.set(item.name, encodeInput(typeUrl, item));
        } catch (err) {
          problems.push(`${shortTypeName(typeUrl)} "${item.name}": ${(err as Error).message}`);
        }
      }
      sets.set(typeUrl, new ResourceSet(typeUrl, byName));
    }
    const changed = (typeUrl: string): boolean => sets.get(typeUrl) !== before.get(typeUrl);
    if (previous && sets.size === before.size && [...sets.keys()].every((t) => !changed(t))) return previous;
    problems.push(...checkNames(sets, changed), ...checkEdsClusters(sets, changed), ...checkReferences(sets, changed));
    if (problems.length > 0) throw new SnapshotConsistencyError(problems);
    return new Snapshot(sets);
  }

  /** The resources of a type; an empty set for a type the snapshot does not mention. */
  resources(typeUrl: string): ResourceSet {
    return this.sets.get(typeUrl) ?? absentSet(typeUrl);
  }

  typeUrls(): string[] {
    return [...this.sets.keys()];
  }

  /** Type URL → version, for status and debugging. */
  versions(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [t, s] of this.sets) out[t] = s.version;
    return out;
  }
}

const NAME_FIELD: Readonly<Record<string, string>> = {
  [LISTENER_TYPE]: 'name',
  [CLUSTER_TYPE]: 'name',
  [ENDPOINT_TYPE]: 'cluster_name',
};

/** Whether a type's set differs from the previous snapshot's (every type does without one). */
type Changed = (typeUrl: string) => boolean;

function checkNames(sets: ReadonlyMap<string, ResourceSet>, changed: Changed): string[] {
  const problems: string[] = [];
  for (const [typeUrl, set] of sets) {
    const field = NAME_FIELD[typeUrl];
    if (!field || !changed(typeUrl)) continue;
    for (const r of set.byName.values()) {
      const own = (r.source as Record<string, unknown>)[field];
      if (own !== r.name) {
        problems.push(`${shortTypeName(typeUrl)} "${r.name}" has ${field} "${String(own ?? '')}"; the two must match`);
      }
    }
  }
  return problems;
}

function checkEdsClusters(sets: ReadonlyMap<string, ResourceSet>, changed: Changed): string[] {
  const clusters = sets.get(CLUSTER_TYPE);
  if (!clusters || !(changed(CLUSTER_TYPE) || changed(ENDPOINT_TYPE))) return [];
  const assignments = sets.get(ENDPOINT_TYPE);
  const problems: string[] = [];
  for (const c of clusters.byName.values()) {
    const serviceName = c.references.find((r) => r.typeUrl === ENDPOINT_TYPE)?.name;
    if (serviceName === undefined) continue;
    if (!assignments?.get(serviceName)) {
      problems.push(`EDS cluster "${c.name}" has no ClusterLoadAssignment "${serviceName}" in the snapshot`);
    }
  }
  return problems;
}

function checkReferences(sets: ReadonlyMap<string, ResourceSet>, changed: Changed): string[] {
  const problems: string[] = [];
  for (const set of sets.values()) {
    // A kept set whose referenced types are all kept too had its references checked before.
    if (!changed(set.typeUrl) && ![...set.referencedTypes()].some(changed)) continue;
    for (const r of set.byName.values()) {
      for (const ref of r.references) {
        // An EDS cluster's own assignment has its own message (checkEdsClusters).
        if (set.typeUrl === CLUSTER_TYPE && ref.typeUrl === ENDPOINT_TYPE) continue;
        if (!sets.get(ref.typeUrl)?.get(ref.name)) {
          problems.push(
            `${shortTypeName(set.typeUrl)} "${r.name}" references ${shortTypeName(ref.typeUrl)} "${ref.name}", which is not in the snapshot`,
          );
        }
      }
    }
  }
  return problems;
}
