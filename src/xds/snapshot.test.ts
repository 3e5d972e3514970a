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
