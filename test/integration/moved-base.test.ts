// A base renamed or moved away before the manifest re-points its overlay: chainform cannot check
// the new base against the old one any more, so it refuses, and says how to give the old name
// back (after which the re-point is checked) or how to re-point by hand, unchecked.
import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chainform, compareImages, imageInfo, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const ws = useWorkspace(async (dir) => {
  const base = join(dir, 'base.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', base, '8M');
  await qemuIo('qcow2', base, 'write -P 0x01 0 4M');
  return [base];
});

describe('a base moved away', () => {
  it('is named with the way back, and following it re-points the overlay, checked', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', vm);
    await qemuIo('qcow2', vm, 'write -P 0x02 1M 1M');
    const reference = join(dir, 'vm.ref.raw');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', vm, reference);
    await rename(join(dir, 'base.qcow2'), join(dir, 'golden.qcow2'));
    try {
      await writeFile(
        join(dir, 'm.yaml'),
        'version: 1\nimages:\n  vm: { path: vm.qcow2, backing: { path: golden.qcow2, format: qcow2 } }\n',
      );
      const refused = await chainform(dir, 'plan', 'm.yaml');
      expect(refused.exitCode).toBe(1);
      expect(refused.stderr).toContain(
        `hint: ${vm} names ${join(dir, 'base.qcow2')} as its backing file, and nothing is there. If that file was renamed or moved to NEW, make it readable under its old name again (ln -s /absolute/path/of/NEW ${join(dir, 'base.qcow2')})`,
      );
      expect(refused.stderr).toContain(`qemu-img rebase -u -F qcow2 -b NEW ${vm}`);
      // The way back: the old name leads to the moved file again, and the re-point is checked.
      await symlink('golden.qcow2', join(dir, 'base.qcow2'));
      const planned = await chainform(dir, 'plan', 'm.yaml');
      expect(planned.stdout).toContain('presents the same content as golden.qcow2 (same file)');
      const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
      expect(applied.exitCode, applied.stderr).toBe(0);
      await rm(join(dir, 'base.qcow2'));
      expect((await imageInfo(vm, 'qcow2'))['backing-filename']).toBe('golden.qcow2');
      expect(await compareImages(vm, 'qcow2', reference, 'raw')).toBe(0);
      expect((await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode')).exitCode).toBe(0);
    } finally {
      // The workspace checks its inputs by name after the test.
      await rm(join(dir, 'base.qcow2'), { force: true });
      await rename(join(dir, 'golden.qcow2'), join(dir, 'base.qcow2'));
    }
  });

  it('asks for the format when the overlay does not record it, and for the folder when the folder moved', async () => {
    const { dir } = ws;
    // qed records no backing format but raw; -u: the backing need not exist.
    const vm = join(dir, 'vm.qed');
    await qemuImg('create', '-q', '-f', 'qed', '-u', '-b', 'bases/base.qcow2', '-F', 'qcow2', vm, '8M');
    await writeFile(join(dir, 'm.yaml'), 'version: 1\nimages:\n  vm: { path: vm.qed, format: qed }\n');
    const refused = await chainform(dir, 'plan', 'm.yaml');
    expect(refused.exitCode).toBe(1);
    // Nothing there to detect: no "detected as raw", and no guessed format to paste.
    expect(refused.stderr).not.toContain('detected as');
    expect(refused.stderr).toContain(
      `Its folder ${join(dir, 'bases')} is gone too: if the file was moved to NEW, make it readable under its old name again, in a real folder (mkdir -p ${join(dir, 'bases')} && ln -s /absolute/path/of/NEW ${join(dir, 'bases/base.qcow2')})`,
    );
    expect(refused.stderr).toContain(
      `qemu-img rebase -u -F FORMAT -b NEW ${vm} (${vm} does not record its backing's format: give the real one)`,
    );
  });

  it('refuses a "../" backing name under a symlinked folder, where qemu would read another file', async () => {
    const { dir } = ws;
    // x/vmlink -> y/real. From x/vmlink, qemu's "../bases" is y/bases (the kernel goes up from
    // y/real); by its text it is x/bases. Both exist, with different data.
    const bases: [folder: string, pattern: string][] = [
      ['x/bases', '0xaa'],
      ['y/bases', '0xbb'],
    ];
    for (const [folder, pattern] of bases) {
      await mkdir(join(dir, folder), { recursive: true });
      await qemuImg('create', '-q', '-f', 'qcow2', join(dir, folder, 'base.qcow2'), '8M');
      await qemuIo('qcow2', join(dir, folder, 'base.qcow2'), `write -P ${pattern} 0 1M`);
    }
    await mkdir(join(dir, 'y/real'));
    const top = join(dir, 'y/real/top.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', '../bases/base.qcow2', '-F', 'qcow2', top);
    await symlink(join(dir, 'y/real'), join(dir, 'x/vmlink'));
    const manifest = (from: string) =>
      `version: 1\nimages:\n  c: { path: out/c.qcow2, from: { path: ${from}, format: qcow2 } }\n`;
    await writeFile(join(dir, 'm.yaml'), manifest('x/vmlink/top.qcow2'));
    const refused = await chainform(dir, 'plan', 'm.yaml');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(
      `${join(dir, 'x/vmlink/top.qcow2')} names its backing "../bases/base.qcow2", and a symlinked folder on the way makes qemu look for it in ${join(dir, 'y/bases')}, not in ${join(dir, 'x/bases')} [backing-name-through-link]`,
    );
    expect((await chainform(dir, 'import', 'x/vmlink/top.qcow2', '-f', 'qcow2')).exitCode).toBe(1);
    // The names chainform writes: an overlay in x/vmlink on x/bases gets the absolute name, not
    // "../bases/base.qcow2", which qemu would follow to y/bases.
    const ov = join(dir, 'y/real/ov.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', join(dir, 'x/bases/base.qcow2'), '-F', 'qcow2', ov);
    await writeFile(
      join(dir, 'ov.yaml'),
      'version: 1\nimages:\n  ov: { path: x/vmlink/ov.qcow2, backing: { path: x/bases/base.qcow2, format: qcow2 } }\n  n: { path: x/vmlink/n.qcow2, from: { path: x/bases/base.qcow2, format: qcow2 }, backing: { path: x/bases/base.qcow2, format: qcow2 } }\n',
    );
    const overlays = await chainform(dir, 'apply', 'ov.yaml', '--yes');
    expect(overlays.exitCode, overlays.stdout + overlays.stderr).toBe(0);
    for (const made of [ov, join(dir, 'y/real/n.qcow2')]) {
      expect((await imageInfo(made, 'qcow2'))['backing-filename']).toBe(join(dir, 'x/bases/base.qcow2'));
      expect(await compareImages(made, 'qcow2', join(dir, 'x/bases/base.qcow2'), 'qcow2')).toBe(0);
    }
    expect((await chainform(dir, 'plan', 'ov.yaml', '--detailed-exitcode')).exitCode).toBe(0);
    // A data file named with ".." through the link: qemu opens y/data.raw, the text says x/data.raw.
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 'y/data.raw'), '8M');
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 'x/data.raw'), '8M');
    const d = join(dir, 'y/real/d.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${dir}/x/vmlink/../data.raw`, d, '8M');
    await writeFile(
      join(dir, 'd.yaml'),
      'version: 1\nimages:\n  d: { path: y/real/d.qcow2 }\nretire: [ y/data.raw ]\n',
    );
    const data = await chainform(dir, 'plan', 'd.yaml');
    expect(data.exitCode).toBe(1);
    expect(data.stderr).toContain('[data-file-through-link]');
    // By its real path the chain is what qemu reads: the copy presents y/bases' data.
    await writeFile(join(dir, 'm.yaml'), manifest('y/real/top.qcow2'));
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);
    expect(await compareImages(join(dir, 'out/c.qcow2'), 'qcow2', top, 'qcow2')).toBe(0);
    expect(await compareImages(join(dir, 'out/c.qcow2'), 'qcow2', join(dir, 'y/bases/base.qcow2'), 'qcow2')).toBe(0);
  });

  it('writes an absolute backing name into a folder reached through a symlink that leads nowhere yet', async () => {
    const { dir } = ws;
    // dang -> real/a/b/newdir, made by a's step; from there "../../../../base.qcow2" is not the
    // workspace's base.qcow2 but real/base.qcow2, another file.
    await mkdir(join(dir, 'real/a/b'), { recursive: true });
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'real/base.qcow2'), '8M');
    await symlink('real/a/b/newdir', join(dir, 'dang'));
    const on = (path: string) =>
      `  ${path.replace(/\W/g, '')}: { path: ${path}, from: { path: base.qcow2, format: qcow2 }, backing: { path: base.qcow2, format: qcow2 } }\n`;
    await writeFile(
      join(dir, 'm.yaml'),
      `version: 1\nimages:\n${on('real/a/b/newdir/a.qcow2')}${on('dang/new/b.qcow2')}`,
    );
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    const b = join(dir, 'real/a/b/newdir/new/b.qcow2');
    expect((await imageInfo(b, 'qcow2'))['backing-filename']).toBe(join(dir, 'base.qcow2'));
    expect(await compareImages(b, 'qcow2', join(dir, 'base.qcow2'), 'qcow2')).toBe(0);
    expect((await chainform(dir, 'status', 'm.yaml')).exitCode).toBe(0);
  });
});
