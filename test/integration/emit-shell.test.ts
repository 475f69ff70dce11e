// `plan --emit sh`: the script, run with /bin/sh on real images, reaches the same layout as
// apply: a diff against a base, snapshot links served by qemu-nbd helpers, and a compare-guarded
// repoint; it quotes awkward names and leaves no temporary file or helper behind.
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { chainform, checkImage, compareImages, imageInfo, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

describe('plan --emit sh', () => {
  const ws = useWorkspace(async (dir) => {
    const disk = join(dir, "it's disk.qcow2");
    await qemuImg('create', '-q', '-f', 'qcow2', disk, '16M');
    await qemuIo('qcow2', disk, 'write -P 0x01 0 8M');
    await qemuImg('snapshot', '-c', 'sn0', '--image-opts', `driver=qcow2,file.filename=${disk}`);
    await qemuIo('qcow2', disk, 'write -P 0x02 1M 256k');
    await qemuImg('snapshot', '-c', 'sn1', '--image-opts', `driver=qcow2,file.filename=${disk}`);
    await qemuIo('qcow2', disk, 'write -P 0x03 2M 256k');
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'a.qcow2'), '16M');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', join(dir, 'a.qcow2'), join(dir, 'a-copy.qcow2'));
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', join(dir, 'top.qcow2'));
    return [disk, join(dir, 'a.qcow2'), join(dir, 'a-copy.qcow2')];
  });

  it('refuses to run when a file the plan was made from changed since', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  top: { path: top.qcow2, backing: { path: a-copy.qcow2, format: qcow2 } }\n',
    );
    const emitted = await chainform(dir, 'plan', 'm.yaml', '--emit', 'sh');
    await writeFile(join(dir, 'reshape.sh'), emitted.stdout);
    // The base it would re-point at is replaced by another image: the compare-guarded step was
    // planned on facts that no longer hold.
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'other.qcow2'), '16M');
    await qemuIo('qcow2', join(dir, 'other.qcow2'), 'write -P 0x44 0 64k');
    const before = (await imageInfo(join(dir, 'top.qcow2'), 'qcow2'))['backing-filename'];
    await execa('cp', [join(dir, 'other.qcow2'), join(dir, 'a-copy.qcow2')]);
    await ws.acceptInputChanges(); // changed on purpose, as a user would
    const run = await execa('sh', [join(dir, 'reshape.sh')], { cwd: '/', reject: false });
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain(
      `chainform script: ${join(dir, 'a-copy.qcow2')} changed since the plan was made; stopped before anything that reads it ran`,
    );
    expect((await imageInfo(join(dir, 'top.qcow2'), 'qcow2'))['backing-filename']).toBe(before);
  });

  it('runs with sh and reaches the layout', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'm.yaml'),
      [
        'version: 1',
        'images:',
        `  sn0: { path: "out dir/sn0.qcow2", from: { path: "it's disk.qcow2", format: qcow2, snapshot: sn0 } }`,
        `  sn1: { path: "out dir/sn1.qcow2", from: { path: "it's disk.qcow2", format: qcow2, snapshot: sn1 }, backing: sn0 }`,
        `  now: { path: "out dir/now.qcow2", from: { path: "it's disk.qcow2", format: qcow2 }, backing: sn1 }`,
        '  top: { path: top.qcow2, backing: { path: a-copy.qcow2, format: qcow2 } }',
        '',
      ].join('\n'),
    );
    const emitted = await chainform(dir, 'plan', 'm.yaml', '--emit', 'sh');
    expect(emitted.exitCode, emitted.stderr).toBe(0);
    expect(emitted.stdout).toMatch(/^#!\/bin\/sh\n/);
    expect(emitted.stdout).toContain('set -eu');
    // sn1's delta is read from a read-only qemu-nbd export of the snapshot, in a private folder.
    expect(emitted.stdout).toContain('--socket "$runtime"/source.sock');
    // The repoint is guarded by a compare: identical content only.
    expect(emitted.stdout).toMatch(/qemu-img compare .* \|\| rc=\$\?/);
    await writeFile(join(dir, 'reshape.sh'), emitted.stdout);
    const run = await execa('sh', [join(dir, 'reshape.sh')], { cwd: '/', reject: false });
    expect(run.exitCode, run.stderr).toBe(0);

    const disk = join(dir, "it's disk.qcow2");
    await qemuImg('convert', '-f', 'qcow2', '-l', 'snapshot.name=sn0', '-O', 'raw', disk, join(dir, 'sn0.raw'));
    expect(await compareImages(join(dir, 'out dir/sn0.qcow2'), 'qcow2', join(dir, 'sn0.raw'), 'raw')).toBe(0);
    await qemuImg('convert', '-f', 'qcow2', '-l', 'snapshot.name=sn1', '-O', 'raw', disk, join(dir, 'sn1.raw'));
    expect(await compareImages(join(dir, 'out dir/sn1.qcow2'), 'qcow2', join(dir, 'sn1.raw'), 'raw')).toBe(0);
    expect(await compareImages(join(dir, 'out dir/now.qcow2'), 'qcow2', disk, 'qcow2')).toBe(0);
    expect((await imageInfo(join(dir, 'out dir/sn1.qcow2'), 'qcow2'))['backing-filename']).toBe('sn0.qcow2');
    expect((await imageInfo(join(dir, 'out dir/now.qcow2'), 'qcow2'))['backing-filename']).toBe('sn1.qcow2');
    expect((await imageInfo(join(dir, 'top.qcow2'), 'qcow2'))['backing-filename']).toBe('a-copy.qcow2');
    for (const out of ['out dir/sn0.qcow2', 'out dir/sn1.qcow2', 'out dir/now.qcow2', 'top.qcow2']) {
      expect(await checkImage(join(dir, out), 'qcow2'), out).toBe(0);
    }
    expect((await readdir(join(dir, 'out dir'))).sort()).toEqual(['now.qcow2', 'sn0.qcow2', 'sn1.qcow2']);
    expect((await execa('pgrep', ['-af', `qemu-nbd.*${dir}`], { reject: false })).stdout).toBe('');
  });
});
