// The delta recipe: links between two states of one qcow2 file copy only the clusters whose
// tables differ, when inspection found those ranges for the file as it is now.
import { describe, expect, it } from 'vitest';
import type { SnapshotDelta } from '../../src/inspect/snapshot-deltas.js';
import { planLayout } from '../../src/planner/plan-layout.js';
import type { Plan } from '../../src/planner/plan-types.js';
import { deltaWriteBytes } from '../../src/planner/recipes.js';
import { file, fp, layer, layoutOf } from '../helpers/layout.js';
import { resolved } from '../helpers/manifest.js';

const SOURCE = '/work/m/in/vm.qcow2';
const MANIFEST = `version: 1
images:
  base: { path: out/base.qcow2, from: { path: in/vm.qcow2, format: qcow2, snapshot: sn0 } }
  top: { path: out/top.qcow2, from: { path: in/vm.qcow2, format: qcow2 }, backing: base }
`;
const sn0 = { id: '1', name: 'sn0', dateSec: 0, dateNsec: 0 };
const source = file('qcow2', [layer(SOURCE, 10, { snapshots: [sn0] })]);
const delta = (extra: Partial<SnapshotDelta> = {}): SnapshotDelta => ({
  path: SOURCE,
  fingerprint: fp(10),
  fromId: '1',
  toId: null,
  ranges: [
    [0, 65536],
    [1048576, 131072],
  ],
  bytes: 196608,
  clusterSize: 65536,
  zeroBytes: 0,
  ...extra,
});

function planOf(deltas: SnapshotDelta[]): Plan {
  const result = planLayout(resolved(MANIFEST), layoutOf([source], undefined, deltas));
  if (!result.ok) throw new Error(JSON.stringify(result.diagnostics, null, 2));
  return result.plan;
}

describe('planner: links between states of one qcow2 file', () => {
  it('copies only the differing ranges into an overlay on the wanted state, then links it', () => {
    const plan = planOf([delta()]);
    expect(plan.steps.map((s) => s.id)).toEqual(['base:convert', 'top:delta']);
    const step = plan.steps[1]!;
    const tmp = '/work/m/out/.top.qcow2.chainform-tmp';
    // The copies need only the source; the rebase onto base.qcow2 (command 2) needs its link.
    expect(step.dependsOn).toEqual([]);
    expect(step.finishAfter).toEqual({ steps: ['base:convert'], beforeCommand: 2 });
    expect(step.plannedFrom).toEqual([{ path: SOURCE, fingerprint: fp(10) }]);
    expect(step.expectedWriteBytes).toBe(196608);
    expect(step.reason).toContain('(2 ranges, 0.2 MiB; found from the cluster tables');
    expect(step.commands.map((c) => c.argv)).toEqual([
      ['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', SOURCE, '-F', 'qcow2', tmp],
      ['qemu-io', '-C', '-t', 'unsafe', '-f', 'qcow2', '-c', 'read -q 0 65536', '-c', 'read -q 1048576 131072', tmp],
      ['qemu-img', 'rebase', '-u', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', tmp],
    ]);
  });

  it('counts the ranges the wanted state zeroed as metadata only, and says so', () => {
    const step = planOf([delta({ zeroBytes: 131072 })]).steps[1]!;
    expect(step.expectedWriteBytes).toBe(65536);
    expect(step.reason).toContain('(2 ranges, 0.2 MiB, 0.1 MiB of them zeroed; found from the cluster tables');
  });

  it('expects zeroed ranges as data in a compat 0.10 link, and whole clusters in one with larger clusters', () => {
    const zeroed = delta({ zeroBytes: 131072 });
    expect(deltaWriteBytes(zeroed, {})).toBe(65536);
    expect(deltaWriteBytes(zeroed, { compat: '1.1' })).toBe(65536);
    expect(deltaWriteBytes(zeroed, { compat: '0.10' })).toBe(196608);
    expect(deltaWriteBytes(zeroed, { compat: 'v2' })).toBe(196608);
    expect(deltaWriteBytes(zeroed, { cluster_size: 32768 })).toBe(65536);
    // 1 MiB clusters: [0, 64K) and [1M, 1M+128K) touch two of them; two ranges in one count once.
    expect(deltaWriteBytes(zeroed, { cluster_size: 1048576 })).toBe(2 * 1048576);
    const sameCluster = delta({
      ranges: [
        [0, 65536],
        [262144, 65536],
      ],
      bytes: 131072,
    });
    expect(deltaWriteBytes(sameCluster, { cluster_size: 1048576 })).toBe(1048576);
  });

  it('needs no copy at all when no cluster differs', () => {
    const step = planOf([delta({ ranges: [], bytes: 0 })]).steps[1]!;
    expect(step.commands.map((c) => c.argv[1])).toEqual(['create', 'rebase']);
    expect(step.finishAfter).toEqual({ steps: ['base:convert'], beforeCommand: 1 });
  });

  it('falls back to a safe rebase when the tables gave no delta, and says why', () => {
    const source = layoutOf([file('qcow2', [layer(SOURCE, 10, { snapshots: [sn0] })])]);
    const unreadable = {
      path: SOURCE,
      fingerprint: fp(10),
      fromId: '1',
      toId: null,
      read: () => ({ why: 'it is encrypted' }),
    };
    const result = planLayout(resolved(MANIFEST), { ...source, snapshotDeltaPairs: [unreadable] });
    if (!result.ok) throw new Error(JSON.stringify(result.diagnostics));
    const step = result.plan.steps[1]!;
    expect(step.kind).toBe('diff');
    expect(step.reason).toBe(
      `the source is a full copy: keep only the clusters that differ from the declared backing (no delta from the cluster tables of ${SOURCE}: it is encrypted)`,
    );
  });

  it('falls back to a safe rebase when the ranges were read from another file or another state', () => {
    for (const other of [delta({ fingerprint: fp(10, 2) }), delta({ fromId: '7' }), delta({ toId: '1' })]) {
      const step = planOf([other]).steps[1]!;
      expect(step.kind).toBe('diff');
      // Only the guard every recording step has: the source as inspected (source-guards.ts).
      expect(step.plannedFrom).toEqual([{ path: SOURCE, fingerprint: fp(10) }]);
    }
  });
});
