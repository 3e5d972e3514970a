/**
 * A Map that keeps what was used within roughly the last `capacity` insertions: entries live
 * in two generations, and a full young one pushes the old one out. Unlike an LRU list it costs
 * nothing extra on a hit, which is the common case here.
 */
export class BoundedCache<K, V> {
  private young = new Map<K, V>();
  private old = new Map<K, V>();

  constructor(private readonly capacity: number) {}

  get(key: K): V | undefined {
    const value = this.young.get(key);
    if (value !== undefined) return value;
    const survivor = this.old.get(key);
    if (survivor !== undefined) this.set(key, survivor);
    return survivor;
  }

  set(key: K, value: V): void {
    if (this.young.size >= this.capacity) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, value);
  }

  /** The value without counting it as a use. */
  peek(key: K): V | undefined {
    return this.young.get(key) ?? this.old.get(key);
  }

  delete(key: K): void {
    this.young.delete(key);
    this.old.delete(key);
  }

  get size(): number {
    let n = this.young.size;
    for (const k of this.old.keys()) if (!this.young.has(k)) n++;
    return n;
  }
}

/**
 * A BoundedCache whose values are held weakly: an entry answers while something else (a
 * translation, a snapshot) still holds its value. Under one VirtualService per call, every call's
 * listener, and with it its encoded bytes, would otherwise stay until the cache pushed it out,
 * tens of thousands of calls after the call ended.
 */
export class WeakValueCache<K, V extends object> {
  private readonly refs: BoundedCache<K, WeakRef<V>>;
  /** Drops the key of a value that was collected, unless the key has a newer value by now. */
  private readonly collected = new FinalizationRegistry<K>((key) => {
    if (this.refs.peek(key)?.deref() === undefined) this.refs.delete(key);
  });

  constructor(capacity: number) {
    this.refs = new BoundedCache(capacity);
  }

  get(key: K): V | undefined {
    return this.refs.get(key)?.deref();
  }

  set(key: K, value: V): void {
    this.refs.set(key, new WeakRef(value));
    this.collected.register(value, key);
  }
}

/**
 * Builds each output once per spec: first by the spec object's identity (the common case,
 * free), then by the content the output depends on, because a source that re-reads an
 * unchanged VirtualService (a status write bumps resourceVersion) hands over equal but new
 * objects, and an edit elsewhere in a spec should not rebuild this output. Either way the
 * same output object comes back, and the snapshot encoder skips re-encoding it.
 */
export class SpecMemo<S extends object, V extends object> {
  private readonly byIdentity = new WeakMap<S, V>();
  /** Weakly: an output nothing uses any more is not worth keeping (see WeakValueCache). */
  private readonly byContent: WeakValueCache<string, V>;

  constructor(
    private readonly build: (spec: S) => V,
    /** Everything `build` reads, as one string. */
    private readonly contentKey: (spec: S) => string,
    capacity: number,
  ) {
    this.byContent = new WeakValueCache(capacity);
  }

  get(spec: S): V {
    const known = this.byIdentity.get(spec);
    if (known !== undefined) return known;
    const key = this.contentKey(spec);
    let value = this.byContent.get(key);
    if (value === undefined) {
      value = this.build(spec);
      this.byContent.set(key, value);
    }
    this.byIdentity.set(spec, value);
    return value;
  }
}
