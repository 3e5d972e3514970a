import type { Observable } from 'rxjs';
import type { PodLookup } from '../xds/node-identity.js';
import type { Pod, VirtualServiceStatus } from '../model/types.js';

/** A Kubernetes-style object as received: at least metadata.name and metadata.namespace. */
export interface RawObject {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata: { readonly name: string; readonly namespace: string; readonly [k: string]: unknown };
  readonly [k: string]: unknown;
}

/** A problem with an input (a file, an object) that does not stop the rest from being served. */
export interface SourceProblem {
  /** What it is about: a file path, or `namespace/name` of an object. */
  readonly subject: string;
  readonly message: string;
  /** The namespace of the object it is about; none for a problem with a file. */
  readonly namespace?: string;
}

/**
 * Everything a source knows at one moment. Arrays are sorted by namespace/name. VirtualServices
 * are the objects as received (API JSON or a YAML document, namespace filled in): parsing and
 * validation happen downstream so an invalid one still gets a status. An object that did not
 * change keeps its identity from one state to the next, so downstream memoization works.
 */
export interface SourceState {
  readonly virtualServices: readonly RawObject[];
  readonly pods: readonly Pod[];
  /** False until the initial list is complete: nothing is served before it is true. */
  readonly synced: boolean;
  readonly problems: readonly SourceProblem[];
  /**
   * What differs from the previous state this source emitted, when the source knows; absent
   * means anything may have changed and consumers compare the arrays.
   */
  readonly changes?: SourceChanges;
}

/** Objects added, changed or removed, by `namespace/name`: the new object, or undefined when removed. */
export interface SourceChanges {
  readonly virtualServices: ReadonlyMap<string, RawObject | undefined>;
  readonly pods: ReadonlyMap<string, Pod | undefined>;
}

/** Writes a VirtualService's status; implemented by the Kubernetes source only. */
export interface StatusWriter {
  /** Writes when the status differs from what was last written; errors are retried inside. */
  write(key: string, generation: number | undefined, status: VirtualServiceStatus): void;
  /** Forget a VirtualService that is gone. */
  forget(key: string): void;
  /** Status writes made to the API server so far. */
  readonly writes: number;
}

/** Kubernetes Events on VirtualServices; implemented by the Kubernetes source only. */
export interface EventSink {
  record(key: string, uid: string | undefined, type: 'Normal' | 'Warning', reason: string, message: string): void;
  /** Event writes (creates and count updates) made to the API server so far. */
  readonly writes: number;
}

/**
 * How replicas add up what their own proxies ACKed and NACKed without reaching each other: each
 * publishes its contribution, an opaque string, and the leader reads the others' (Kubernetes only).
 */
export interface ReplicaExchange {
  /** This replica's contribution: `build` is called at most once per write interval, after a publish. */
  publish(build: () => string): void;
  /** The contributions of the other live replicas, by object name (empty while not reading). */
  peers(): ReadonlyMap<string, string>;
  /** Emits when `peers()` changed. */
  readonly peers$: Observable<void>;
  /** Writes of this replica's contribution (and renewals) made so far. */
  readonly writes: number;
}

export interface Source {
  readonly name: string;
  readonly state$: Observable<SourceState>;
  /** Resolves proxies that identify by pod name or UID; absent when the source has no pods of its own. */
  readonly podLookup?: PodLookup;
  readonly statusWriter?: StatusWriter;
  readonly events?: EventSink;
  /** Exchange of proxy counts with the other replicas, when there can be others. */
  readonly replicas?: ReplicaExchange;
  /** Times a failed list/watch was restarted (liveness of the watches, for metrics). */
  readonly watchRestarts?: number;
  start(): Promise<void>;
  stop(): Promise<void>;
}
