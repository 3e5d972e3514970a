import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from './type-urls.js';
import { Snapshot, SnapshotConsistencyError, type ResourceInput, type SnapshotInput } from './snapshot.js';

const listener = (name: string, cluster: string) => ({
  name,
  references: [{ typeUrl: CLUSTER_TYPE, name: cluster }],
  resource: { name, address: { socket_address: { protocol: 'UDP', address: '0.0.0.0', port_value: 2000 } } },
});
const edsCluster = (name: string) => ({ name, resource: { name, type: 'EDS', eds_cluster_config: { eds_config: { ads: {} } } } });
const cla = (name: string, ip = '10.0.0.1') => ({
  name,
  resource: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: ip, port_value: 1 } } } }] }] },
});

function problemsOf(input: SnapshotInput): string[] {
  try {
    Snapshot.build(input);
    return [];
  } catch (err) {
    expect(err).toBeInstanceOf(SnapshotConsistencyError);
    return [...(err as SnapshotConsistencyError).problems];
  }
}

describe('Snapshot', () => {
  it('rejects duplicate names, naming the resource', () => {
    expect(problemsOf({ [CLUSTER_TYPE]: [edsCluster('a'), edsCluster('a')], [ENDPOINT_TYPE]: [cla('a')] })).toEqual(['duplicate CDS resource name "a"']);
  });

  it('rejects an EDS cluster without its ClusterLoadAssignment', () => {
    expect(problemsOf({ [CLUSTER_TYPE]: [edsCluster('a'), edsCluster('b')], [ENDPOINT_TYPE]: [cla('a')] })).toEqual([
      'EDS cluster "b" has no ClusterLoadAssignment "b" in the snapshot',
    ]);
  });

  it('rejects a listener that references a missing cluster', () => {
    expect(problemsOf({ [LISTENER_TYPE]: [listener('l', 'gone')] })).toEqual(['LDS "l" references CDS "gone", which is not in the snapshot']);
  });

  it('rejects a resource whose own name differs from the name it is filed under', () => {
    expect(problemsOf({ [ENDPOINT_TYPE]: [{ name: 'x', resource: { cluster_name: 'y' } }] })).toEqual([
      'EDS "x" has cluster_name "y"; the two must match',
    ]);
  });

  it('rejects unknown fields and wrong enum values instead of dropping them', () => {
    const problems = problemsOf({ [CLUSTER_TYPE]: [{ name: 'c', resource: { name: 'c', lb_polcy: 'MAGLEV' } }, { name: 'd', resource: { name: 'd', lb_policy: 'FASTEST' } }] });
    expect(problems).toHaveLength(2);
    expect(problems[0]).toContain('unknown field "lb_polcy"');
    expect(problems[1]).toContain('"FASTEST" is not a valid LbPolicy');
  });

  it('gives the same versions for the same resources, in any order', () => {
    const one = Snapshot.build({ [CLUSTER_TYPE]: [edsCluster('a'), edsCluster('b')], [ENDPOINT_TYPE]: [cla('a'), cla('b')] });
    const two = Snapshot.build({ [ENDPOINT_TYPE]: [cla('b'), cla('a')], [CLUSTER_TYPE]: [edsCluster('b'), edsCluster('a')] });
    expect(two.versions()).toEqual(one.versions());
    const changed = Snapshot.build({ [CLUSTER_TYPE]: [edsCluster('a'), edsCluster('b')], [ENDPOINT_TYPE]: [cla('a'), cla('b', '10.0.0.2')] });
    expect(changed.versions()[CLUSTER_TYPE]).toBe(one.versions()[CLUSTER_TYPE]);
    expect(changed.versions()[ENDPOINT_TYPE]).not.toBe(one.versions()[ENDPOINT_TYPE]);
    expect(changed.resources(ENDPOINT_TYPE).get('a')?.version).toBe(one.resources(ENDPOINT_TYPE).get('a')?.version);
  });

  it('gives the same versions in another process', () => {
    const script = `
      import { Snapshot } from './src/xds/snapshot.ts';
      const s = Snapshot.build(${JSON.stringify({ [CLUSTER_TYPE]: [edsCluster('a')], [ENDPOINT_TYPE]: [cla('a')] })});
      console.log(JSON.stringify(s.versions()));`;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(child.stderr).toBe('');
    const here = Snapshot.build({ [CLUSTER_TYPE]: [edsCluster('a')], [ENDPOINT_TYPE]: [cla('a')] }).versions();
    expect(JSON.parse(child.stdout)).toEqual(here);
  });

  it('encodes a resource object once and shares the bytes between snapshots', () => {
    const shared = cla('a');
    const one = Snapshot.build({ [ENDPOINT_TYPE]: [shared] });
    const two = Snapshot.build({ [ENDPOINT_TYPE]: [shared, cla('b')] });
    expect(two.resources(ENDPOINT_TYPE).get('a')).toBe(one.resources(ENDPOINT_TYPE).get('a'));
  });
});

describe('Snapshot.build from the previous snapshot', () => {
  const base = () => {
    const [la, lb, ca, cb, ea, eb] = [listener('l-a', 'a'), listener('l-b', 'b'), edsCluster('a'), edsCluster('b'), cla('a'), cla('b')];
    const input = { [LISTENER_TYPE]: [la, lb], [CLUSTER_TYPE]: [ca, cb], [ENDPOINT_TYPE]: [ea, eb] };
    return { input, snapshot: Snapshot.build(input), la, lb, ca, ea, eb };
  };

  it('keeps the ResourceSet of every type whose input is unchanged, and makes a new one for the changed type', () => {
    const { input, snapshot, ea } = base();
    const next = Snapshot.build({ ...input, [ENDPOINT_TYPE]: [ea, cla('b', '10.0.0.2')] }, snapshot);
    expect(next).not.toBe(snapshot);
    expect(next.resources(LISTENER_TYPE)).toBe(snapshot.resources(LISTENER_TYPE));
    expect(next.resources(CLUSTER_TYPE)).toBe(snapshot.resources(CLUSTER_TYPE));
    expect(next.resources(ENDPOINT_TYPE)).not.toBe(snapshot.resources(ENDPOINT_TYPE));
    expect(next.versions()[ENDPOINT_TYPE]).not.toBe(snapshot.versions()[ENDPOINT_TYPE]);
    // The same as building it afresh.
    expect(next.versions()).toEqual(Snapshot.build({ ...input, [ENDPOINT_TYPE]: [cla('a'), cla('b', '10.0.0.2')] }).versions());
  });

  it('returns the previous snapshot itself when nothing changed, also for new arrays and new ResourceInput wrappers of the same resources', () => {
    const { input, snapshot } = base();
    expect(Snapshot.build(input, snapshot)).toBe(snapshot);
    const rewrapped = Object.fromEntries(Object.entries(input).map(([t, items]) => [t, items.map((i) => ({ ...i }))]));
    expect(Snapshot.build(rewrapped, snapshot)).toBe(snapshot);
  });

  it('makes a new set when the same resources come in another order, under another name, with other references, or one more or less', () => {
    const { input, snapshot, la, lb, ea, eb } = base();
    const variants: ResourceInput[][] = [
      [lb, la],
      [la, { ...lb, references: [{ typeUrl: CLUSTER_TYPE, name: 'a' }] }],
      [la],
      [la, lb, listener('l-c', 'a')],
    ];
    for (const listeners of variants) {
      const next = Snapshot.build({ ...input, [LISTENER_TYPE]: listeners }, snapshot);
      expect(next.resources(LISTENER_TYPE)).not.toBe(snapshot.resources(LISTENER_TYPE));
      expect(next.resources(CLUSTER_TYPE)).toBe(snapshot.resources(CLUSTER_TYPE));
    }
    // The same resource object under another name is not the set that was checked before.
    expect(() => Snapshot.build({ ...input, [ENDPOINT_TYPE]: [ea, { ...eb, name: 'c' }] }, snapshot)).toThrow('EDS "c" has cluster_name "b"');
  });

  it('still checks every reference that touches a changed set, when only one side changed', () => {
    const { input, snapshot, ca, ea } = base();
    const problems = (next: SnapshotInput): string[] => {
      try {
        Snapshot.build(next, snapshot);
        return [];
      } catch (err) {
        expect(err).toBeInstanceOf(SnapshotConsistencyError);
        return [...(err as SnapshotConsistencyError).problems];
      }
    };
    // Clusters (and their assignments) lose b; the listeners are the very same objects.
    expect(problems({ ...input, [CLUSTER_TYPE]: [ca], [ENDPOINT_TYPE]: [ea] })).toEqual(['LDS "l-b" references CDS "b", which is not in the snapshot']);
    // Only the assignments change: the unchanged clusters are checked against them.
    expect(problems({ ...input, [ENDPOINT_TYPE]: [ea] })).toEqual(['EDS cluster "b" has no ClusterLoadAssignment "b" in the snapshot']);
    // Only the listeners change: checked against the unchanged clusters.
    expect(problems({ ...input, [LISTENER_TYPE]: [...input[LISTENER_TYPE], listener('l-c', 'c')] })).toEqual([
      'LDS "l-c" references CDS "c", which is not in the snapshot',
    ]);
    // A type disappears from the input: what referenced it is checked again.
    const { [CLUSTER_TYPE]: _clusters, ...withoutClusters } = input;
    expect(problems(withoutClusters)).toEqual([
      'LDS "l-a" references CDS "a", which is not in the snapshot',
      'LDS "l-b" references CDS "b", which is not in the snapshot',
    ]);
    // A changed set's own problems.
    expect(problems({ ...input, [ENDPOINT_TYPE]: [ea, { name: 'b', resource: { cluster_name: 'x' } }] })).toEqual([
      'EDS "b" has cluster_name "x"; the two must match',
    ]);
    // The failed builds left nothing behind: the unchanged input still gives the previous snapshot.
    expect(Snapshot.build(input, snapshot)).toBe(snapshot);
  });

  it('gives a type the snapshot does not mention the same empty set in every snapshot', () => {
    const one = Snapshot.build({ [ENDPOINT_TYPE]: [cla('a')] });
    const two = Snapshot.build({ [ENDPOINT_TYPE]: [cla('b')] });
    expect(one.resources(LISTENER_TYPE)).toBe(two.resources(LISTENER_TYPE));
    expect(one.resources(LISTENER_TYPE).names).toEqual([]);
  });
});

describe('Snapshot.build from the previous snapshot, against a build from scratch', () => {
  it('gives the same sets (versions, names, lookups) after any sequence of additions, removals, replacements and reorderings, and says what changed', () => {
    let seed = 7;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const pool = new Map<string, ResourceInput>();
    const clusterOf = (i: number) => `c${i % 5}`;
    let listeners = new Map<string, ResourceInput>();
    const clusters = [0, 1, 2, 3, 4].map((i) => edsCluster(`c${i}`));
    const assignments = [0, 1, 2, 3, 4].map((i) => cla(`c${i}`));
    let previous: Snapshot | undefined;
    for (let round = 0; round < 300; round++) {
      const next = new Map(listeners);
      for (let k = random(4); k >= 0; k--) {
        const i = random(60);
        const name = `l${String(i).padStart(2, '0')}`;
        const op = random(3);
        if (op === 0) next.delete(name);
        else if (op === 1) next.set(name, pool.get(name) ?? listener(name, clusterOf(i)));
        else next.set(name, listener(name, clusterOf(i + random(2))));
        pool.set(name, next.get(name) ?? listener(name, clusterOf(i)));
      }
      const sorted = [...next.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
      // Now and then unsorted, and now and then the same resources in new wrappers.
      const items = random(5) === 0 ? [...sorted].reverse() : random(5) === 0 ? sorted.map((i) => ({ ...i })) : sorted;
      const input = { [LISTENER_TYPE]: items, [CLUSTER_TYPE]: clusters, [ENDPOINT_TYPE]: assignments };
      const built = Snapshot.build(input, previous);
      const scratch = Snapshot.build(input);
      expect(built.versions()).toEqual(scratch.versions());
      const [a, b] = [built.resources(LISTENER_TYPE), scratch.resources(LISTENER_TYPE)];
      expect(a.names).toEqual(b.names);
      expect(a.entries.map((e) => [e.name, e.version])).toEqual(b.entries.map((e) => [e.name, e.version]));
      expect([...a.byName.keys()].sort()).toEqual(b.names);
      for (const name of b.names) expect(a.get(name)?.version).toBe(b.get(name)?.version);
      if (previous) {
        const before = previous.resources(LISTENER_TYPE);
        const diff = [...new Set([...before.names, ...a.names])].filter((n) => before.get(n)?.version !== a.get(n)?.version || !before.get(n) !== !a.get(n)).sort();
        const said = a.changedSince(before);
        if (said) {
          // Everything that changed is named; a name may be named for a new wrapper of equal content.
          for (const n of diff) expect(said).toContain(n);
          expect(a.keepsAllOf(before)).toBe(before.names.every((n) => a.get(n)));
        }
      }
      previous = built;
      listeners = next;
    }
  });

  it('keeps only the link from a set to the one it was made from, not the whole line of sets before it', () => {
    const cluster = [edsCluster('c')];
    const assignment = [cla('c')];
    const build = (names: string[], previous?: Snapshot) =>
      Snapshot.build({ [LISTENER_TYPE]: names.map((n) => listener(n, 'c')), [CLUSTER_TYPE]: cluster, [ENDPOINT_TYPE]: assignment }, previous);
    const one = build(['a']);
    const two = build(['a', 'b'], one);
    const [s1, s2] = [one.resources(LISTENER_TYPE), two.resources(LISTENER_TYPE)];
    expect(s2.changedSince(s1)).toEqual(['a', 'b']);
    const three = build(['a', 'b', 'c'], two);
    const s3 = three.resources(LISTENER_TYPE);
    expect(s3.keepsAllOf(s2)).toBe(true);
    // Made from two: two let go of one, and three never knew it.
    expect(s2.changedSince(s1)).toBeUndefined();
    expect(s3.changedSince(s1)).toBeUndefined();
    expect(s3.referencedTypes()).toEqual(new Set([CLUSTER_TYPE]));
  });

  it('version depends on the resources only: an empty set, one resource, and the same resources built by another path', () => {
    const empty = Snapshot.build({ [LISTENER_TYPE]: [] });
    const grown = Snapshot.build({ [LISTENER_TYPE]: [listener('l', 'c')], [CLUSTER_TYPE]: [edsCluster('c')], [ENDPOINT_TYPE]: [cla('c')] }, empty);
    const shrunk = Snapshot.build({ [LISTENER_TYPE]: [], [CLUSTER_TYPE]: [edsCluster('c')], [ENDPOINT_TYPE]: [cla('c')] }, grown);
    expect(shrunk.versions()[LISTENER_TYPE]).toBe(empty.versions()[LISTENER_TYPE]);
    expect(grown.versions()[LISTENER_TYPE]).not.toBe(empty.versions()[LISTENER_TYPE]);
  });
});
