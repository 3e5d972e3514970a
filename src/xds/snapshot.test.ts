import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from './type-urls.js';
import { Snapshot, SnapshotConsistencyError, type SnapshotInput } from './snapshot.js';

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
