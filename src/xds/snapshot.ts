import { encodeResource, decodeResource } from './encode.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, shortTypeName } from './type-urls.js';
import { createHash } from 'node:crypto';
import { isSorted, resourceVersion } from './versions.js';
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
  /** Hash of (name, version) as eight 32-bit lanes: what the set version sums (see ResourceSet). */
  readonly digest: Uint32Array;
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
  if (cached && cached.typeUrl === typeUrl && cached.name === input.name && sameRefs(cached.explicitReferences, input.references ?? NO_REFS)) {
    return cached;
  }
  const value = encodeResource(typeUrl, input.resource);
  const version = resourceVersion(typeUrl, value);
  const references = [...(input.references ?? []), ...implicitReferences(typeUrl, input.name, value)];
  const any = Buffer.concat([stringField(1, typeUrl), lengthDelimitedField(2, value)]);
  const deltaResource = Buffer.concat([stringField(3, input.name), stringField(1, version), lengthDelimitedField(2, any)]);
  const [sotwField, deltaField] = ownedCopies(lengthDelimitedField(2, any), lengthDelimitedField(2, deltaResource)) as [Buffer, Buffer];
  const encoded: EncodedResource = {
    typeUrl,
    name: input.name,
    version,
    // The Any is the end of the SotW entry: tag and length before it.
    any: sotwField.subarray(sotwField.length - any.length),
    sotwField,
    deltaField,
    references,
    explicitReferences: input.references ?? NO_REFS,
    source: input.resource,
    digest: entryDigest(input.name, version),
  };
  encodedByInput.set(input.resource, encoded);
  return encoded;
}

/**
 * The buffers in one allocation of their own. Small Buffers are slices of Node's shared 8 KB
 * pool, and one that lives keeps its whole slab: resources live as long as the snapshots that
 * hold them, so pooled bytes of a call long gone would stay behind with every slab a live one shares.
 */
function ownedCopies(...parts: Buffer[]): Buffer[] {
  const all = Buffer.allocUnsafeSlow(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  return parts.map((p) => {
    p.copy(all, at);
    const own = all.subarray(at, at + p.length);
    at += p.length;
    return own;
  });
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
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as ResourceRef;
    const y = b[i] as ResourceRef;
    if (x.typeUrl !== y.typeUrl || x.name !== y.name) return false;
  }
  return true;
}

/** Whether `encoded` is what `item` encodes to: the same resource object, name and explicit references. */
function encodes(encoded: EncodedResource, item: ResourceInput): boolean {
  return encoded.source === item.resource && encoded.name === item.name && sameRefs(encoded.explicitReferences, item.references ?? NO_REFS);
}

/** All resources of one type in a snapshot. */
export class ResourceSet {
  /**
   * A hash of the sum of the entries' (name, version) digests, lane by lane modulo 2^32, and
   * their count: the same resources give the same version in any order, in every process, and a
   * set made from the previous one by a few changes gets its version in as many steps.
   */
  readonly version: string;
  /** Sorted. */
  readonly names: readonly string[];
  /** Whether `entries` are sorted by name, as builders give them. */
  readonly sortedEntries: boolean;
  private referenced?: ReadonlySet<string>;

  /** By name; made on first use (see get). */
  private map?: Map<string, EncodedResource>;

  constructor(
    readonly typeUrl: string,
    /** In the order of the input the set was built from. */
    readonly entries: readonly EncodedResource[],
    /** Lane sums of the entries' digests (see `version`); computed from the entries when not given. */
    private readonly sum: Uint32Array = sumDigests(entries),
    /** The names of `entries`, when the caller knows them to be sorted. */
    names?: readonly string[],
    /** The set this one was made from and the sorted names that differ between the two (see `changedSince`). */
    private base?: { readonly set: ResourceSet; readonly changed: readonly string[]; readonly removed: number; readonly fresh: readonly EncodedResource[] },
  ) {
    if (names) {
      this.names = names;
      this.sortedEntries = true;
    } else {
      const all = entries.map((e) => e.name);
      this.sortedEntries = isSorted(all);
      this.names = this.sortedEntries ? all : all.sort();
    }
    this.version = sumVersion(sum, entries.length);
  }

  /** The entries by name (iteration order is not the input's: see `entries`). */
  get byName(): ReadonlyMap<string, EncodedResource> {
    this.map ??= new Map(this.entries.map((e) => [e.name, e]));
    return this.map;
  }

  /**
   * The entry of that name. Sorted entries are searched, so a set made from the previous one by
   * a few changes needs no map of its own: what a build costs follows the change, not the set.
   */
  get(name: string): EncodedResource | undefined {
    if (this.map || !this.sortedEntries) return this.byName.get(name);
    const entries = this.entries;
    let lo = 0;
    let hi = entries.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const e = entries[mid] as EncodedResource;
      if (e.name === name) return e;
      if (e.name < name) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  /**
   * The sorted names whose resource differs between `from` and this set (or is in one only),
   * when this set was made from `from`; undefined otherwise. What a build changed, without
   * comparing every resource.
   */
  changedSince(from: ResourceSet): readonly string[] | undefined {
    return this.base?.set === from ? this.base.changed : undefined;
  }

  /** Whether every name of `from` is in this set, when this set was made from `from`; undefined otherwise. */
  keepsAllOf(from: ResourceSet): boolean | undefined {
    return this.base?.set === from ? this.base.removed === 0 : undefined;
  }

  /**
   * Forgets the set this one was made from, once a newer set is made from this one: sets would
   * otherwise hold every set before them. What it answered from that link is kept or answered
   * the slow way (changedSince, keepsAllOf give undefined).
   */
  releaseBase(): void {
    this.referencedTypes();
    this.base = undefined;
  }

  /** The lane sums, for the next set made from this one. */
  digestSum(): Uint32Array {
    return this.sum;
  }

  /**
   * Type URLs this set's resources reference (for a set made from another, possibly also some
   * that only the other's resources referenced: a superset, which only costs checks).
   */
  referencedTypes(): ReadonlySet<string> {
    if (!this.referenced && this.base) {
      const inherited = this.base.set.referencedTypes();
      let types: Set<string> | undefined;
      for (const r of this.base.fresh) for (const ref of r.references) if (!inherited.has(ref.typeUrl)) (types ??= new Set(inherited)).add(ref.typeUrl);
      this.referenced = types ?? inherited;
    }
    if (!this.referenced) {
      const types = new Set<string>();
      for (const r of this.entries) for (const ref of r.references) types.add(ref.typeUrl);
      this.referenced = types;
    }
    return this.referenced;
  }

  /**
   * The input would encode to exactly this set's resources, in the same order: the same resource
   * objects (the encode cache is keyed by them) under the same names and explicit references.
   */
  builtFrom(typeUrl: string, items: readonly ResourceInput[]): boolean {
    if (typeUrl !== this.typeUrl || items.length !== this.entries.length) return false;
    for (let i = 0; i < items.length; i++) if (!encodes(this.entries[i] as EncodedResource, items[i] as ResourceInput)) return false;
    return true;
  }
}

const LANES = 8;

function entryDigest(name: string, version: string): Uint32Array {
  const d = createHash('sha256').update(name).update('\0').update(version).digest();
  const lanes = new Uint32Array(LANES);
  for (let i = 0; i < LANES; i++) lanes[i] = d.readUInt32LE(i * 4);
  return lanes;
}

function sumDigests(entries: readonly EncodedResource[]): Uint32Array {
  const sum = new Uint32Array(LANES);
  for (const e of entries) addDigest(sum, e.digest, 1);
  return sum;
}

/** sum += sign × digest, lane by lane modulo 2^32 (Uint32Array stores wrap). */
function addDigest(sum: Uint32Array, digest: Uint32Array, sign: 1 | -1): void {
  for (let i = 0; i < LANES; i++) sum[i] = (sum[i] as number) + sign * (digest[i] as number);
}

/** The version a set of exactly these resources has (ResourceSet.version), for any subset a response carries. */
export function resourcesVersion(resources: readonly EncodedResource[]): string {
  return sumVersion(sumDigests(resources), resources.length);
}

function sumVersion(sum: Uint32Array, count: number): string {
  const h = createHash('sha256').update(Buffer.from(sum.buffer, sum.byteOffset, sum.byteLength));
  return h.update(String(count)).digest('base64url').slice(0, 16);
}

const NO_REFS: readonly ResourceRef[] = [];

/** The set of a type a snapshot does not mention: empty, and one per type, so it is the same object in every snapshot. */
const absentSets = new Map<string, ResourceSet>();

function absentSet(typeUrl: string): ResourceSet {
  let set = absentSets.get(typeUrl);
  if (!set) {
    // Only types a stream asked for and is served land here; bound it all the same.
    if (absentSets.size >= 64) absentSets.clear();
    absentSets.set(typeUrl, (set = new ResourceSet(typeUrl, [])));
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
    /** Per type whose set is new: its entries that are not in the previous set (to check), and the names it lost. */
    const made = new Map<string, MadeSet>();
    for (const typeUrl of Object.keys(input).sort()) {
      const items = input[typeUrl] ?? [];
      const kept = before.get(typeUrl);
      if (kept?.builtFrom(typeUrl, items)) {
        sets.set(typeUrl, kept);
        continue;
      }
      const m = makeSet(typeUrl, items, kept, problems);
      sets.set(typeUrl, m.set);
      made.set(typeUrl, m);
    }
    for (const [typeUrl, kept] of before) if (!sets.has(typeUrl)) made.set(typeUrl, { set: EMPTY_SET, fresh: [], lost: new Set(kept.names) });
    if (previous && made.size === 0) return previous;
    problems.push(...checkNames(made), ...checkEdsClusters(sets, made), ...checkReferences(sets, made));
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

/** A type's new set, what in it is new since the previous snapshot's set of the type, and the names it lost. */
interface MadeSet {
  readonly set: ResourceSet;
  /** In input order; every entry when there was no previous set. */
  readonly fresh: readonly EncodedResource[];
  readonly lost: ReadonlySet<string>;
}

const EMPTY_SET = new ResourceSet('', []);

/**
 * The set of `items`, made from `kept` (the previous snapshot's set of the type) when there is
 * one. Builders hand resources sorted by name: then the input and `kept` are walked side by side,
 * an item that is `kept`'s resource (the same object, name and references) is taken as it is,
 * and the version, the lookup map and what changed follow from the difference alone. Unsorted
 * input is looked up by name instead.
 */
function makeSet(typeUrl: string, items: readonly ResourceInput[], kept: ResourceSet | undefined, problems: string[]): MadeSet {
  const entries: EncodedResource[] = [];
  const fresh: EncodedResource[] = [];
  /** Entries of `kept` this input replaced with another resource of the same name. */
  const replaced: EncodedResource[] = [];
  const lostEntries: EncodedResource[] = [];
  const seen = new Set<string>();
  const prev = kept?.entries ?? [];
  // The walk side by side needs both sorted; an unsorted `kept` is looked up by name.
  let sorted = kept?.sortedEntries ?? true;
  let last: string | undefined;
  let j = 0;
  /** Index in `prev` of the entry last taken as it was: the next one is in order after it without comparing names. */
  let lastTaken = -2;
  for (const item of items) {
    const name = item.name;
    // The common case, first: the previous set's next entry, taken as it is.
    const next = prev[j];
    if (sorted && next !== undefined && encodes(next, item) && (lastTaken === j - 1 || last === undefined || last < name)) {
      entries.push(next);
      lastTaken = j++;
      last = name;
      continue;
    }
    if (!name) {
      problems.push(`a ${shortTypeName(typeUrl)} resource has an empty name`);
      continue;
    }
    if (sorted && last !== undefined && !(last < name)) {
      // Out of order, or a duplicate: from here on names are tracked one by one.
      sorted = false;
      for (const e of entries) seen.add(e.name);
    }
    if (!sorted) {
      if (seen.has(name)) {
        problems.push(`duplicate ${shortTypeName(typeUrl)} resource name "${name}"`);
        continue;
      }
      seen.add(name);
    }
    last = name;
    let p: EncodedResource | undefined;
    if (sorted) {
      while (j < prev.length && (prev[j] as EncodedResource).name < name) lostEntries.push(prev[j++] as EncodedResource);
      if (j < prev.length && (prev[j] as EncodedResource).name === name) p = prev[j++];
    } else {
      p = kept?.get(name);
    }
    if (p && encodes(p, item)) {
      entries.push(p);
      continue;
    }
    let encoded: EncodedResource;
    try {
      encoded = encodeInput(typeUrl, item);
    } catch (err) {
      problems.push(`${shortTypeName(typeUrl)} "${name}": ${(err as Error).message}`);
      if (p) lostEntries.push(p);
      continue;
    }
    if (p) replaced.push(p);
    entries.push(encoded);
    fresh.push(encoded);
  }
  if (!kept) return { set: new ResourceSet(typeUrl, entries), fresh, lost: new Set() };
  if (!sorted) {
    const set = new ResourceSet(typeUrl, entries);
    const lost = new Set<string>();
    for (const name of kept.names) if (!set.get(name)) lost.add(name);
    return { set, fresh, lost };
  }
  while (j < prev.length) lostEntries.push(prev[j++] as EncodedResource);
  const sum = Uint32Array.from(kept.digestSum());
  for (const e of lostEntries) addDigest(sum, e.digest, -1);
  for (const e of replaced) addDigest(sum, e.digest, -1);
  for (const e of fresh) addDigest(sum, e.digest, 1);
  const changed = [...fresh.map((e) => e.name), ...lostEntries.map((e) => e.name)].sort();
  kept.releaseBase();
  const set = new ResourceSet(typeUrl, entries, sum, entries.map((e) => e.name), { set: kept, changed, removed: lostEntries.length, fresh });
  return { set, fresh, lost: new Set(lostEntries.map((e) => e.name)) };
}

const NAME_FIELD: Readonly<Record<string, string>> = {
  [LISTENER_TYPE]: 'name',
  [CLUSTER_TYPE]: 'name',
  [ENDPOINT_TYPE]: 'cluster_name',
};

function checkNames(made: ReadonlyMap<string, MadeSet>): string[] {
  const problems: string[] = [];
  for (const [typeUrl, m] of made) {
    const field = NAME_FIELD[typeUrl];
    if (!field) continue;
    for (const r of m.fresh) {
      const own = (r.source as Record<string, unknown>)[field];
      if (own !== r.name) {
        problems.push(`${shortTypeName(typeUrl)} "${r.name}" has ${field} "${String(own ?? '')}"; the two must match`);
      }
    }
  }
  return problems;
}

function edsServiceName(cluster: EncodedResource): string | undefined {
  return cluster.references.find((r) => r.typeUrl === ENDPOINT_TYPE)?.name;
}

/** New EDS clusters, and every one whose assignment went, need their ClusterLoadAssignment. */
function checkEdsClusters(sets: ReadonlyMap<string, ResourceSet>, made: ReadonlyMap<string, MadeSet>): string[] {
  const clusters = sets.get(CLUSTER_TYPE);
  if (!clusters) return [];
  const lostAssignments = made.get(ENDPOINT_TYPE)?.lost;
  const candidates = lostAssignments && lostAssignments.size > 0 ? clusters.entries : (made.get(CLUSTER_TYPE)?.fresh ?? []);
  const assignments = sets.get(ENDPOINT_TYPE);
  const problems: string[] = [];
  for (const c of candidates) {
    const serviceName = edsServiceName(c);
    if (serviceName === undefined) continue;
    if (!assignments?.get(serviceName)) {
      problems.push(`EDS cluster "${c.name}" has no ClusterLoadAssignment "${serviceName}" in the snapshot`);
    }
  }
  return problems;
}

/**
 * Every reference resolves: those of new entries, and those of any entry into a type that lost
 * names. An entry that was in the previous snapshot, referencing only types that lost nothing,
 * resolved then and still does.
 */
function checkReferences(sets: ReadonlyMap<string, ResourceSet>, made: ReadonlyMap<string, MadeSet>): string[] {
  const problems: string[] = [];
  const lostTypes = new Set([...made].filter(([, m]) => m.lost.size > 0).map(([t]) => t));
  for (const set of sets.values()) {
    const rechecks = [...set.referencedTypes()].some((t) => lostTypes.has(t));
    const candidates = rechecks ? set.entries : made.get(set.typeUrl)?.fresh;
    if (!candidates) continue;
    for (const r of candidates) {
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
