// Issue 2, test (a): a qcow2 overlay (cluster_size 512, compat 0.10) on a qcow2 base, converted
// to cluster_size 65536 keeping copy-on-write on the same base; and re-pointed at a
// byte-identical copy of its base under another name.
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  chainform,
  checkImage,
  compareImages,
  imageInfo,
  qemuImg,
  qemuIo,
  topLayerDataBytes,
} from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const ws = useWorkspace(async (dir) => {
  await mkdir(join(dir, 'in'));
  const base = join(dir, 'in/base.qcow2');
  const top = join(dir, 'in/top.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', base, '64M');
  await qemuIo('qcow2', base, 'write -P 0x33 0 40M');
  await qemuImg(
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    'cluster_size=512,compat=0.10',
    '-b',
    'base.qcow2',
    '-F',
    'qcow2',
    top,
  );
  await qemuIo(
    'qcow2',
    top,
    'write -P 0x44 1M 96k',
    'write -P 0x45 33M 3k',
    'write -z 10M 64k',
    'write -P 0x46 50M 128k',
  );
  await copyFile(base, join(dir, 'in/base-renamed.qcow2'));
  return ['in/base.qcow2', 'in/top.qcow2', 'in/base-renamed.qcow2'].map((f) => join(dir, f));
});

describe('convert keeping copy-on-write', () => {
  it('changes cluster size and compat on the same base, copying only the top layer', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'manifest.yaml'),
      `version: 1
images:
  top:
    path: out/top.qcow2
    from: { path: in/top.qcow2, format: qcow2 }
    backing: { path: in/base.qcow2, format: qcow2 }
    options: { cluster_size: 65536, compat: "1.1" }
`,
    );
    const plan = await chainform(dir, 'plan', 'manifest.yaml', '--json');
    expect(plan.exitCode).toBe(0);
    expect(JSON.parse(plan.stdout).steps.map((s: { kind: string }) => s.kind)).toEqual(['convert-keep-backing']);

    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);
    const out = join(dir, 'out/top.qcow2');
    expect(await compareImages(out, 'qcow2', join(dir, 'in/top.qcow2'), 'qcow2')).toBe(0);
    expect(await checkImage(out, 'qcow2')).toBe(0);
    const info = await imageInfo(out, 'qcow2');
    expect(info['cluster-size']).toBe(65536);
    expect((info['format-specific'] as { data: { compat: string } }).data.compat).toBe('1.1');
    expect(info['backing-filename']).toBe('../in/base.qcow2');
    expect(info['backing-filename-format']).toBe('qcow2');
    // The writes touch 96k + 3k + 64k + 128k; at 64 KiB clusters that is at most 9 clusters.
    const stored = await topLayerDataBytes(out, 'qcow2');
    expect(stored).toBeGreaterThan(0);
    expect(stored).toBeLessThanOrEqual(9 * 65536);
  });

  it('re-points the overlay at a byte-identical copy of its base, storing only the delta', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'manifest.yaml'),
      `version: 1
images:
  top:
    path: out/top.qcow2
    from: { path: in/top.qcow2, format: qcow2 }
    backing: { path: in/base-renamed.qcow2, format: qcow2 }
`,
    );
    const plan = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    expect(plan.steps.map((s: { kind: string }) => s.kind)).toEqual(['verified-convert-keep-backing']);
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes', '--verbose');
    expect(applied.exitCode, applied.stderr).toBe(0);
    // The bases compared identical, so the cheap branch ran: no diff overlay was created.
    const ran = applied.stdout.slice(applied.stdout.indexOf('started  '));
    expect(ran).toContain('$ qemu-img compare');
    expect(ran).toContain('$ qemu-img convert');
    expect(ran).not.toContain('$ qemu-img create');
    const out = join(dir, 'out/top.qcow2');
    expect(await compareImages(out, 'qcow2', join(dir, 'in/top.qcow2'), 'qcow2')).toBe(0);
    expect(await checkImage(out, 'qcow2')).toBe(0);
    const info = await imageInfo(out, 'qcow2');
    expect(info['backing-filename']).toBe('../in/base-renamed.qcow2');
    expect(info['backing-filename-format']).toBe('qcow2');
    expect(await topLayerDataBytes(out, 'qcow2')).toBeLessThanOrEqual(9 * 65536);
    const again = await chainform(dir, 'plan', 'manifest.yaml', '--detailed-exitcode');
    expect(again.exitCode, again.stdout).toBe(0);
  });

  it('falls back to the diff when the new base only looks like the old one', async () => {
    const { dir } = ws;
    // A different base: same size, one changed region. The compare must catch it.
    const other = join(dir, 'other-base.qcow2');
    await copyFile(join(dir, 'in/base.qcow2'), other);
    await qemuIo('qcow2', other, 'write -P 0x99 20M 256k');
    await writeFile(
      join(dir, 'manifest.yaml'),
      `version: 1
images:
  top:
    path: out/top.qcow2
    from: { path: in/top.qcow2, format: qcow2 }
    backing: { path: other-base.qcow2, format: qcow2 }
`,
    );
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes', '--verbose');
    expect(applied.exitCode, applied.stderr).toBe(0);
    const ran = applied.stdout.slice(applied.stdout.indexOf('started  '));
    expect(ran).toContain('$ qemu-img create');
    expect(ran).not.toContain('$ qemu-img convert');
    const out = join(dir, 'out/top.qcow2');
    expect(await compareImages(out, 'qcow2', join(dir, 'in/top.qcow2'), 'qcow2')).toBe(0);
    expect(await checkImage(out, 'qcow2')).toBe(0);
    // The delta now also holds the base's changed 256 KiB, which the overlay must mask.
    expect(await topLayerDataBytes(out, 'qcow2')).toBeGreaterThanOrEqual(256 * 1024);
  });

  it('re-points an overlay in place at a byte-identical copy of its base, copying nothing', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm');
    await mkdir(vm);
    const disk = join(vm, 'disk.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', '../in/base.qcow2', '-F', 'qcow2', disk);
    await qemuIo('qcow2', disk, 'write -P 0x55 2M 64k');
    await writeFile(
      join(dir, 'manifest.yaml'),
      'version: 1\nimages:\n  disk:\n    path: vm/disk.qcow2\n    backing: { path: in/base-renamed.qcow2, format: qcow2 }\n',
    );
    const steps = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout).steps;
    expect(steps.map((s: { kind: string }) => s.kind)).toEqual(['verified-repoint']);
    const dataBefore = await topLayerDataBytes(disk, 'qcow2');
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes', '--verbose');
    expect(applied.exitCode, applied.stderr).toBe(0);
    const ran = applied.stdout.slice(applied.stdout.indexOf('started  '));
    expect(ran).toContain('$ qemu-img rebase -u');
    expect(ran).not.toContain('--image-opts');
    expect((await imageInfo(disk, 'qcow2'))['backing-filename']).toBe('../in/base-renamed.qcow2');
    expect(await topLayerDataBytes(disk, 'qcow2')).toBe(dataBefore);
    expect(await checkImage(disk, 'qcow2')).toBe(0);
    expect((await chainform(dir, 'plan', 'manifest.yaml', '--detailed-exitcode')).exitCode).toBe(0);
  });

  it('re-points an overlay in place at the same base under a new name without copying data', async () => {
    const { dir } = ws;
    // The user's own overlay is reshaped in place: the manifest asks for that (no `from`).
    const vm = join(dir, 'vm');
    await mkdir(vm);
    await qemuImg(
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      join(dir, 'in/base.qcow2'),
      '-F',
      'qcow2',
      join(vm, 'disk.qcow2'),
    );
    await qemuIo('qcow2', join(vm, 'disk.qcow2'), 'write -P 0x55 2M 64k');
    await writeFile(
      join(dir, 'manifest.yaml'),
      'version: 1\nimages:\n  disk:\n    path: vm/disk.qcow2\n    backing: { path: in/base.qcow2, format: qcow2 }\n',
    );
    const plan = await chainform(dir, 'plan', 'manifest.yaml', '--json');
    const steps = JSON.parse(plan.stdout).steps;
    expect(steps.map((s: { kind: string }) => s.kind)).toEqual(['repoint']);
    const disk = join(vm, 'disk.qcow2');
    const dataBefore = await topLayerDataBytes(disk, 'qcow2');
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    const info = await imageInfo(disk, 'qcow2');
    expect(info['backing-filename']).toBe('../in/base.qcow2');
    expect(await topLayerDataBytes(disk, 'qcow2')).toBe(dataBefore);
    expect(await checkImage(disk, 'qcow2')).toBe(0);
    expect((await chainform(dir, 'plan', 'manifest.yaml', '--detailed-exitcode')).exitCode).toBe(0);
  });
});
