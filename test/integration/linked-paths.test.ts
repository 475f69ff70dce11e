// An image whose path is another name of its file. A rewrite of an image whose path is a
// symlink replaces the file the link names and keeps the link (before, the rename replaced the
// link with a regular file, and the file everyone else opens kept the old disk); a rewrite of a
// file with hard links says that the other names keep the old file.
import { link, lstat, mkdir, readdir, readlink, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chainform, checkImage, compareImages, imageInfo, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const ws = useWorkspace(async (dir) => {
  const vm = join(dir, 'vm');
  const store = join(dir, 'store');
  await mkdir(vm);
  await mkdir(store);
  await qemuImg('create', '-q', '-f', 'qcow2', join(vm, 'base.qcow2'), '8M');
  await qemuIo('qcow2', join(vm, 'base.qcow2'), 'write -P 0x11 0 4M');
  // The disk's file lives in store/, and vm/disk.qcow2 links to it. Its backing name is relative,
  // so it resolves only from vm/ (-u: qemu-img does not open it from store/ while creating).
  await qemuImg(
    'create',
    '-q',
    '-f',
    'qcow2',
    '-u',
    '-b',
    'base.qcow2',
    '-F',
    'qcow2',
    join(store, 'disk.qcow2'),
    '8M',
  );
  await symlink('../store/disk.qcow2', join(vm, 'disk.qcow2'));
  await qemuIo('qcow2', join(vm, 'disk.qcow2'), 'write -P 0x22 1M 2M');
  // What the disk presents today, to compare the result with.
  await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', join(vm, 'disk.qcow2'), join(dir, 'disk-before.raw'));
  // A standalone image with a second name (a hard link), as a backup tool might leave.
  await qemuImg('create', '-q', '-f', 'qcow2', join(vm, 'solo.qcow2'), '8M');
  await qemuIo('qcow2', join(vm, 'solo.qcow2'), 'write -P 0x33 0 1M');
  await link(join(vm, 'solo.qcow2'), join(dir, 'solo-backup.qcow2'));
  return [join(vm, 'base.qcow2'), join(dir, 'disk-before.raw'), join(dir, 'solo-backup.qcow2')];
});

async function temporariesIn(...dirs: string[]): Promise<string[]> {
  const names = (await Promise.all(dirs.map((d) => readdir(d)))).flat();
  return names.filter((name) => name.includes('chainform-tmp'));
}

describe('an image whose path is a symlink', () => {
  it('is rewritten in the file the link names; the link stays, and the content is the same', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm');
    await writeFile(
      join(vm, 'm.yaml'),
      'version: 1\nimages:\n  base: { path: base.qcow2, format: qcow2 }\n  disk: { path: disk.qcow2, format: qcow2, backing: base, options: { cluster_size: 131072 } }\n',
    );
    const plan = await chainform(vm, 'plan', 'm.yaml');
    expect(plan.exitCode, plan.stderr).toBe(0);
    expect(plan.stdout).toContain(
      'then: flush, rename .disk.qcow2.chainform-tmp -> ../store/disk.qcow2 (the file disk.qcow2 links to)',
    );
    const applied = await chainform(vm, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);

    expect((await lstat(join(vm, 'disk.qcow2'))).isSymbolicLink()).toBe(true);
    expect(await readlink(join(vm, 'disk.qcow2'))).toBe('../store/disk.qcow2');
    const info = await imageInfo(join(dir, 'store', 'disk.qcow2'), 'qcow2');
    expect(info['cluster-size']).toBe(131072);
    expect(info['backing-filename']).toBe('base.qcow2');
    expect(await compareImages(join(vm, 'disk.qcow2'), 'qcow2', join(dir, 'disk-before.raw'), 'raw')).toBe(0);
    expect(await checkImage(join(vm, 'disk.qcow2'), 'qcow2')).toBe(0);
    expect(await temporariesIn(vm, join(dir, 'store'))).toEqual([]);
    // The ledger and the next plan see the rewritten file through the link: nothing left to do.
    const again = await chainform(vm, 'plan', 'm.yaml', '--detailed-exitcode');
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
  });
});

describe('an image file with other hard links', () => {
  it('warns that the other names keep the old file, and leaves them so', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm');
    await writeFile(
      join(vm, 'm.yaml'),
      'version: 1\nimages:\n  solo: { path: solo.qcow2, options: { cluster_size: 131072 } }\n',
    );
    const applied = await chainform(vm, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);
    expect(applied.stderr).toContain(
      `warning: ${join(vm, 'solo.qcow2')} has 1 other name (hard links): the rewrite puts a new file at this path only, and the other names keep the old file [hard-linked]`,
    );
    expect((await imageInfo(join(vm, 'solo.qcow2'), 'qcow2'))['cluster-size']).toBe(131072);
    expect(await compareImages(join(vm, 'solo.qcow2'), 'qcow2', join(dir, 'solo-backup.qcow2'), 'qcow2')).toBe(0);
    // solo-backup.qcow2 is an input of the workspace: its checksum is checked after the test.
  });
});

describe('a data file named through another name', () => {
  it('is the image data file: nothing to do, and no other file is called its data file', async () => {
    const { dir } = ws;
    await mkdir(join(dir, 'data'));
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 'src.raw'), '8M');
    await qemuIo('raw', join(dir, 'src.raw'), 'write -P 0x44 0 2M');
    const manifest = (dataFile: string) =>
      `version: 1\nimages:\n  img: { path: img.qcow2, from: { path: src.raw, format: raw }, options: { data_file: ${dataFile} } }\n`;
    await writeFile(join(dir, 'm.yaml'), manifest(join(dir, 'data', 'img.data')));
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);
    await symlink('data/img.data', join(dir, 'link.data'));
    await link(join(dir, 'data', 'img.data'), join(dir, 'hard.data'));
    for (const name of ['link.data', 'hard.data']) {
      await writeFile(join(dir, 'm.yaml'), manifest(join(dir, name)));
      // Before, this planned a rewrite of the image and its data, onto a new file at the other name.
      const plan = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
      expect(plan.exitCode, `${name}: ${plan.stdout}${plan.stderr}`).toBe(0);
    }
    // A really different file is still another data file: the image is rewritten onto it.
    await writeFile(join(dir, 'm.yaml'), manifest(join(dir, 'other.data')));
    const other = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
    expect(other.exitCode, other.stderr).toBe(2);
    expect(other.stdout).toContain(`data_file ${join(dir, 'data', 'img.data')} -> ${join(dir, 'other.data')}`);
  });
});
