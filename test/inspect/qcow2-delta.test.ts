// The cluster delta between two states of a real qcow2 file (made with qemu-img and qemu-io):
// exactly the clusters written between them, whatever kind of write, and no answer where the
// tables cannot tell.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { clusterDelta, recordedSnapshotSizes } from '../../src/inspect/qcow2-delta.js';
import { fingerprintOfStats } from '../../src/state/fingerprint.js';
import { MiB, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const K64 = 65536;

async function snapshot(file: string, name: string): Promise<void> {
  await qemuImg('snapshot', '-c', name, '--image-opts', `driver=qcow2,file.filename=${file}`);
}

/** sn0 (id 1): 8 MiB of data. sn1 (id 2): two clusters rewritten. Active: a zeroed cluster, a partial write. */
async function makeImage(dir: string): Promise<string[]> {
  const image = join(dir, 'vm.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', image, '16M');
  await qemuIo('qcow2', image, 'write -P 0x11 0 8M');
  await snapshot(image, 'sn0');
  await qemuIo('qcow2', image, `write -P 0x22 ${2 * K64} ${K64}`, `write -P 0x22 ${3 * K64} ${K64}`);
  await snapshot(image, 'sn1');
  await qemuIo('qcow2', image, `write -z ${20 * K64} ${K64}`, `write -P 0x33 ${10 * MiB + 4096} 4096`);
  return [image];
}

const ws = useWorkspace(makeImage);

describe('clusterDelta', () => {
  it('answers only for the file it was inspected as, when given its fingerprint', async () => {
    const image = join(ws.dir, 'vm.qcow2');
    const inspected = fingerprintOfStats(statSync(image, { bigint: true }));
    expect(clusterDelta(image, '1', '2', inspected)).toMatchObject({ ok: true, bytes: 2 * K64 });
    await qemuIo('qcow2', image, `write -P 0x44 ${4 * K64} ${K64}`);
    await ws.acceptInputChanges();
    expect(clusterDelta(image, '1', null, inspected)).toEqual({ ok: false, why: 'it changed since it was inspected' });
    // Without a fingerprint the file is read as it is now.
    expect(clusterDelta(image, '1', null)).toMatchObject({ ok: true });
  });

  it('finds the clusters written between two snapshots, adjacent ones merged', () => {
    expect(clusterDelta(join(ws.dir, 'vm.qcow2'), '1', '2')).toEqual({
      ok: true,
      ranges: [[2 * K64, 2 * K64]],
      bytes: 2 * K64,
      clusterSize: K64,
      zeroBytes: 0,
    });
  });

  it('between a snapshot and the active layer: zeroed clusters and partial writes count too', () => {
    expect(clusterDelta(join(ws.dir, 'vm.qcow2'), '2', null)).toEqual({
      ok: true,
      ranges: [
        [20 * K64, K64],
        [10 * MiB, K64],
      ],
      bytes: 2 * K64,
      // The zeroed cluster is a zero cluster: copying it writes only metadata.
      clusterSize: K64,
      zeroBytes: K64,
    });
    const across = clusterDelta(join(ws.dir, 'vm.qcow2'), '1', null);
    expect(across.ok && across.ranges.length).toBe(3);
  });

  it('reads compressed and extended-L2 images', async () => {
    const compressed = join(ws.dir, 'c.qcow2');
    await qemuImg('convert', '-c', '-f', 'qcow2', '-O', 'qcow2', join(ws.dir, 'vm.qcow2'), compressed);
    await snapshot(compressed, 'a');
    await qemuIo('qcow2', compressed, `write -P 0x44 ${5 * K64} 512`);
    expect(clusterDelta(compressed, '1', null)).toEqual({
      ok: true,
      ranges: [[5 * K64, K64]],
      bytes: K64,
      clusterSize: K64,
      zeroBytes: 0,
    });

    const extended = join(ws.dir, 'x.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=128k', extended, '4M');
    await qemuIo('qcow2', extended, 'write -P 0x55 0 1M');
    await snapshot(extended, 'a');
    // Within one 128 KiB cluster: only its subcluster bitmap or entry changes.
    await qemuIo('qcow2', extended, `write -P 0x66 ${3 * 131072 + 4096} 4096`);
    expect(clusterDelta(extended, '1', null)).toEqual({
      ok: true,
      ranges: [[3 * 131072, 131072]],
      bytes: 131072,
      clusterSize: 131072,
      zeroBytes: 0,
    });
  });

  it('reads every state at the disk size of the header, as qemu presents snapshots', async () => {
    const grown = join(ws.dir, 'g.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', grown, '1M');
    await qemuIo('qcow2', grown, 'write -P 0x01 0 512k');
    await snapshot(grown, 'a');
    await qemuImg('resize', '-f', 'qcow2', grown, '2M');
    await qemuIo('qcow2', grown, `write -P 0x02 ${24 * K64} 4096`);
    expect(clusterDelta(grown, '1', null)).toEqual({
      ok: true,
      ranges: [[24 * K64, K64]],
      bytes: K64,
      clusterSize: K64,
      zeroBytes: 0,
    });
  });

  it('splits a long run of changed clusters into reads of at most 16 MiB', async () => {
    const big = join(ws.dir, 'big.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', big, '64M');
    await snapshot(big, 'a');
    await qemuIo('qcow2', big, 'write -P 0x07 0 40M');
    expect(clusterDelta(big, '1', null)).toEqual({
      ok: true,
      ranges: [
        [0, 16 * MiB],
        [16 * MiB, 16 * MiB],
        [32 * MiB, 8 * MiB],
      ],
      bytes: 40 * MiB,
      clusterSize: K64,
      zeroBytes: 0,
    });
  });

  it('gives no answer for unknown snapshots or files that are not qcow2', async () => {
    expect(clusterDelta(join(ws.dir, 'vm.qcow2'), '9', null)).toMatchObject({ ok: false });
    const raw = join(ws.dir, 'r.raw');
    await qemuImg('create', '-q', '-f', 'raw', raw, '1M');
    expect(clusterDelta(raw, null, null)).toEqual({ ok: false, why: 'it is not a qcow2 file' });
    expect(clusterDelta(join(ws.dir, 'missing.qcow2'), null, null)).toMatchObject({ ok: false });
  });
});

describe('recordedSnapshotSizes', () => {
  it('gives the disk size each snapshot was taken at, whatever the image was resized to since', async () => {
    const image = join(ws.dir, 's.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', image, '4M');
    await snapshot(image, 'at4');
    await qemuImg('resize', '-q', '--shrink', '-f', 'qcow2', image, '2M');
    await snapshot(image, 'at2');
    await qemuImg('resize', '-q', '-f', 'qcow2', image, '8M');
    expect(recordedSnapshotSizes(image)).toEqual(
      new Map([
        ['1', 4 * MiB],
        ['2', 2 * MiB],
      ]),
    );
    expect(recordedSnapshotSizes(join(ws.dir, 'missing.qcow2'))).toMatch(/ENOENT/);
  });
});
