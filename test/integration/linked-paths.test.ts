// An image whose path is another name of its file. A rewrite of an image whose path is a
// symlink replaces the file the link names and keeps the link (before, the rename replaced the
// link with a regular file, and the file everyone else opens kept the old disk); a rewrite of a
// file with hard links says that the other names keep the old file.
import {
  chmod,
  chown,
  link,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { chainform, checkImage, checksums, compareImages, imageInfo, qemuImg, qemuIo } from '../helpers/qemu.js';
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

describe('a symlink to a file behind a bind mount of the same filesystem', () => {
  it('writes beside that file: a rename does not cross mounts, even on one device', async (context) => {
    const { dir } = ws;
    const vm = join(dir, 'vm');
    const [source, mounted] = [join(dir, 'bind-src'), join(dir, 'bind-dst')];
    await mkdir(source);
    await mkdir(mounted);
    const bound = await execa('mount', ['--bind', source, mounted], { reject: false });
    // Only root (or a user namespace) may mount: say so rather than pass.
    if (bound.exitCode !== 0) context.skip(`mount --bind is not permitted here: ${bound.stderr}`);
    try {
      await qemuImg('create', '-q', '-f', 'qcow2', join(mounted, 'bound.qcow2'), '8M');
      await qemuIo('qcow2', join(mounted, 'bound.qcow2'), 'write -P 0x66 0 1M');
      await symlink(join(mounted, 'bound.qcow2'), join(vm, 'bound.qcow2'));
      await writeFile(
        join(vm, 'm.yaml'),
        'version: 1\nimages:\n  bound: { path: bound.qcow2, options: { cluster_size: 131072 } }\n',
      );
      // Before, the temporary lay beside the link and the final rename failed with EXDEV.
      const applied = await chainform(vm, 'apply', 'm.yaml', '--yes');
      expect(applied.exitCode, applied.stderr).toBe(0);
      expect((await imageInfo(join(mounted, 'bound.qcow2'), 'qcow2'))['cluster-size']).toBe(131072);
      expect((await lstat(join(vm, 'bound.qcow2'))).isSymbolicLink()).toBe(true);
      await qemuIo('qcow2', join(vm, 'bound.qcow2'), 'read -P 0x66 0 1M');
    } finally {
      await execa('umount', [mounted], { reject: false });
    }
  });
});

describe('an image file with other hard links', () => {
  it('warns that the other names keep the old file, also from a saved plan, and leaves them so', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm');
    await writeFile(
      join(vm, 'm.yaml'),
      'version: 1\nimages:\n  solo: { path: solo.qcow2, options: { cluster_size: 131072 } }\n',
    );
    const saved = await chainform(vm, 'plan', 'm.yaml', '--out', 'p.json');
    expect(saved.exitCode, saved.stderr).toBe(0);
    const applied = await chainform(vm, 'apply', 'p.json', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);
    // Before, a saved plan's apply dropped the warnings it was made with.
    expect(applied.stderr).toContain(
      `warning: ${join(vm, 'solo.qcow2')} has 1 other name (hard links): the rewrite puts a new file under this name only, and the other names keep the old file [hard-linked]`,
    );
    expect((await imageInfo(join(vm, 'solo.qcow2'), 'qcow2'))['cluster-size']).toBe(131072);
    expect(await compareImages(join(vm, 'solo.qcow2'), 'qcow2', join(dir, 'solo-backup.qcow2'), 'qcow2')).toBe(0);
    // solo-backup.qcow2 is an input of the workspace: its checksum is checked after the test.
  });

  it('names the file a symlink leads to when that file has the other names', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm');
    await rename(join(vm, 'solo.qcow2'), join(dir, 'store', 'solo.qcow2'));
    await symlink('../store/solo.qcow2', join(vm, 'solo.qcow2'));
    await writeFile(
      join(vm, 'm.yaml'),
      'version: 1\nimages:\n  solo: { path: solo.qcow2, backing: null, options: { cluster_size: 131072 } }\n',
    );
    const plan = await chainform(vm, 'plan', 'm.yaml');
    const real = join(dir, 'store', 'solo.qcow2');
    expect(plan.stderr).toContain(
      `warning: ${real} (the file ${join(vm, 'solo.qcow2')} links to) has 1 other name (hard links): the rewrite puts a new file under this name only`,
    );
    expect(plan.stderr).toContain(`hint: to see them: find / -samefile ${real} 2>/dev/null`);
  });
});

describe('a rewritten file', () => {
  /** Rewrites vm/solo.qcow2 with 128 KiB clusters (a convert into a new file) and stats it. */
  async function rewriteSolo(vm: string) {
    await writeFile(
      join(vm, 'm.yaml'),
      'version: 1\nimages:\n  solo: { path: solo.qcow2, options: { cluster_size: 131072 } }\n',
    );
    const applied = await chainform(vm, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);
    expect((await imageInfo(join(vm, 'solo.qcow2'), 'qcow2'))['cluster-size']).toBe(131072);
    return stat(join(vm, 'solo.qcow2'));
  }

  it('keeps the permissions of the file it replaces', async () => {
    const vm = join(ws.dir, 'vm');
    await chmod(join(vm, 'solo.qcow2'), 0o640);
    // Before, the new file had the mode a new file gets (0644 here).
    expect((await rewriteSolo(vm)).mode & 0o777).toBe(0o640);
  });

  it('gives a new data file the permissions of the image it belongs to', async () => {
    const vm = join(ws.dir, 'vm');
    await chmod(join(vm, 'solo.qcow2'), 0o600);
    await writeFile(
      join(vm, 'm.yaml'),
      'version: 1\nimages:\n  solo: { path: solo.qcow2, options: { data_file: solo.data } }\n',
    );
    const applied = await chainform(vm, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);
    // Before, the guest data landed in a world-readable file of the default mode.
    expect((await stat(join(vm, 'solo.data'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(vm, 'solo.qcow2'))).mode & 0o777).toBe(0o600);
  });

  it('keeps the permissions in a script from plan --emit sh too', async () => {
    const vm = join(ws.dir, 'vm');
    await chmod(join(vm, 'solo.qcow2'), 0o640);
    await writeFile(
      join(vm, 'm.yaml'),
      'version: 1\nimages:\n  solo: { path: solo.qcow2, options: { cluster_size: 131072 } }\n',
    );
    const script = await chainform(vm, 'plan', 'm.yaml', '--emit', 'sh');
    expect(script.exitCode, script.stderr).toBe(0);
    await writeFile(join(vm, 'run.sh'), script.stdout);
    await execa('sh', [join(vm, 'run.sh')], { cwd: vm });
    expect((await imageInfo(join(vm, 'solo.qcow2'), 'qcow2'))['cluster-size']).toBe(131072);
    expect((await stat(join(vm, 'solo.qcow2'))).mode & 0o777).toBe(0o640);
  });

  it.runIf(process.getuid?.() === 0)('keeps the owner and group of the file it replaces (as root)', async () => {
    const vm = join(ws.dir, 'vm');
    // The owner a VM's qemu process might run as (here: nobody, nogroup).
    await chown(join(vm, 'solo.qcow2'), 65534, 65534);
    const after = await rewriteSolo(vm);
    expect([after.uid, after.gid]).toEqual([65534, 65534]);
  });
});

describe('a data file named through a symlink to it', () => {
  it('is that data file: a rewrite that would replace it under the image is refused', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm');
    const data = join(dir, 'store', 'd.raw');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${data}`, join(vm, 'dv.qcow2'), '8M');
    await qemuIo('qcow2', join(vm, 'dv.qcow2'), 'write -P 0x77 1M 2M');
    await symlink('../store/d.raw', join(vm, 'dlink.raw'));
    const files = [join(vm, 'dv.qcow2'), data];
    const before = await checksums(files);
    await writeFile(
      join(vm, 'm.yaml'),
      `version: 1\nimages:\n  dv: { path: dv.qcow2, options: { data_file: ${join(vm, 'dlink.raw')}, cluster_size: 131072 } }\n`,
    );
    const applied = await chainform(vm, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode).toBe(1);
    expect(applied.stderr).toContain(`and its guest data lives in the data file ${data}`);
    expect((await lstat(join(vm, 'dlink.raw'))).isSymbolicLink()).toBe(true);
    expect(await checksums(files)).toEqual(before);
  });
});

describe('an output path that is a symlink the ledger does not vouch for', () => {
  it('replaces the link itself and never writes the file it names', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm');
    await writeFile(
      join(vm, 'm.yaml'),
      'version: 1\nimages:\n  copy: { path: out/copy.qcow2, from: { path: solo.qcow2, format: qcow2 } }\n',
    );
    expect((await chainform(vm, 'apply', 'm.yaml', '--yes')).exitCode).toBe(0);
    // What a run killed between recording and renaming leaves (the entry marked in progress),
    // after which someone put a link to a file of theirs at the output path.
    const ledgerPath = join(vm, '.chainform', 'ledger.json');
    const ledger = JSON.parse(await readFile(ledgerPath, 'utf8'));
    ledger.outputs[join(vm, 'out', 'copy.qcow2')].inProgress = true;
    await writeFile(ledgerPath, JSON.stringify(ledger));
    const precious = join(dir, 'precious.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', precious, '8M');
    await qemuIo('qcow2', precious, 'write -P 0x55 0 1M');
    await chmod(precious, 0o750);
    const before = await checksums([precious]);
    await rm(join(vm, 'out', 'copy.qcow2'));
    await symlink(precious, join(vm, 'out', 'copy.qcow2'));
    const applied = await chainform(vm, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);
    expect(await checksums([precious])).toEqual(before);
    expect((await lstat(join(vm, 'out', 'copy.qcow2'))).isFile()).toBe(true);
    // Nor does the new file take that file's access: what it replaced was the link.
    expect((await stat(join(vm, 'out', 'copy.qcow2'))).mode & 0o777).not.toBe(0o750);
    expect(await compareImages(join(vm, 'out', 'copy.qcow2'), 'qcow2', join(vm, 'solo.qcow2'), 'qcow2')).toBe(0);
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

describe('a symlink to nothing at an output path', () => {
  // Renamed onto, the link was replaced by the new image: the disk did not land where it said.
  it('is refused, naming where it leads; the link stays as it was', async () => {
    const { dir } = ws;
    await mkdir(join(dir, 'out'));
    await symlink(join(dir, 'store', 'new.qcow2'), join(dir, 'out', 'new.qcow2'));
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  new: { path: out/new.qcow2, from: { path: vm/base.qcow2, format: qcow2 } }\n',
    );
    const r = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(r.exitCode, r.stdout).toBe(1);
    expect(r.stderr).toContain(
      `m.yaml:3:16: error: ${join(dir, 'out', 'new.qcow2')} is a symlink to ${join(dir, 'store', 'new.qcow2')}, which does not exist [dangling-symlink]`,
    );
    expect(await readlink(join(dir, 'out', 'new.qcow2'))).toBe(join(dir, 'store', 'new.qcow2'));
    expect(await readdir(join(dir, 'store'))).not.toContain('new.qcow2');

    // Through a symlinked folder and a second link, named where the kernel would go: a link's
    // `..` is the parent of the folder it really lies in.
    await mkdir(join(dir, 'srv', 'real'), { recursive: true });
    await symlink(join(dir, 'srv', 'real'), join(dir, 'linked'));
    await symlink('hop.qcow2', join(dir, 'linked', 'far.qcow2'));
    await symlink('../far-away.qcow2', join(dir, 'linked', 'hop.qcow2'));
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  far: { path: linked/far.qcow2, from: { path: vm/base.qcow2, format: qcow2 } }\n',
    );
    const far = await chainform(dir, 'plan', 'm.yaml');
    expect(far.stderr).toContain(
      `is a symlink to ${join(dir, 'srv', 'far-away.qcow2')}, which does not exist [dangling-symlink]`,
    );

    // `..` after a symlinked folder inside the link's text: the parent of where that folder leads.
    await mkdir(join(dir, 'other', 'deep'), { recursive: true });
    await symlink(join(dir, 'other', 'deep'), join(dir, 'out', 'sub'));
    await symlink('sub/../target.qcow2', join(dir, 'out', 'dotdot.qcow2'));
    // Through a folder link to nothing: where the kernel would look.
    await symlink(join(dir, 'gone'), join(dir, 'out', 'gonedir'));
    await symlink('gonedir/x.qcow2', join(dir, 'out', 'via.qcow2'));
    // And at a data file path: the rename would replace that link too.
    await symlink('../store/nothing.data', join(dir, 'out', 'dd.data'));
    await writeFile(
      join(dir, 'm.yaml'),
      [
        'version: 1',
        'images:',
        '  dotdot: { path: out/dotdot.qcow2, from: { path: vm/base.qcow2, format: qcow2 } }',
        '  via: { path: out/via.qcow2, from: { path: vm/base.qcow2, format: qcow2 } }',
        '  data: { path: out/data.qcow2, from: { path: vm/base.qcow2, format: qcow2 }, options: { data_file: out/dd.data } }',
        '',
      ].join('\n'),
    );
    const more = await chainform(dir, 'plan', 'm.yaml');
    expect(more.exitCode).toBe(1);
    for (const [link, target] of [
      ['dotdot.qcow2', join(dir, 'other', 'target.qcow2')],
      ['via.qcow2', join(dir, 'gone', 'x.qcow2')],
      ['dd.data', join(dir, 'store', 'nothing.data')],
    ]) {
      expect(more.stderr).toContain(`${join(dir, 'out', link!)} is a symlink to ${target}, which does not exist`);
    }

    // Through a file where a folder should be: no advice to write there (the file exists).
    await symlink(`${join(dir, 'vm', 'base.qcow2')}/`, join(dir, 'out', 'slash.qcow2'));
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  slash: { path: out/slash.qcow2, from: { path: vm/base.qcow2, format: qcow2 } }\n',
    );
    const slash = await chainform(dir, 'plan', 'm.yaml');
    expect(slash.stderr).toContain(`is a symlink to ${join(dir, 'vm', 'base.qcow2')}/, which does not exist`);
    expect(slash.stderr).toContain('hint: it leads through a file where a folder should be');
  });
});

describe('an image file that is itself a mount point', () => {
  // A file bind-mounted at its path, as a container gets a disk: nothing renames onto it (EBUSY).
  it('is refused a rewrite at plan time, and still changed in place', async (context) => {
    const { dir } = ws;
    const [stored, mountedAt] = [join(dir, 'store', 'bound.qcow2'), join(dir, 'vm', 'bound.qcow2')];
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', stored, '8M');
    await qemuIo('qcow2', stored, 'write -P 0x55 0 1M');
    await writeFile(mountedAt, '');
    const bound = await execa('mount', ['--bind', stored, mountedAt], { reject: false });
    if (bound.exitCode !== 0) context.skip(`mount --bind is not permitted here: ${bound.stderr}`);
    try {
      const before = await checksums([stored]);
      await writeFile(
        join(dir, 'm.yaml'),
        'version: 1\nimages:\n  bound: { path: vm/bound.qcow2, options: { cluster_size: 131072 } }\n',
      );
      // Before, the whole copy ran, then the rename failed.
      const refused = await chainform(dir, 'apply', 'm.yaml', '--yes');
      expect(refused.exitCode, refused.stdout).toBe(1);
      expect(refused.stderr).toContain(
        `m.yaml:3:18: error: ${mountedAt} is a mount point (a file mounted there): "bound" is written anew`,
      );
      expect(refused.stderr).toContain('[mounted-file]');
      expect(await checksums([stored])).toEqual(before);
      expect(await temporariesIn(join(dir, 'vm'), join(dir, 'store'))).toEqual([]);
      // An amend writes into the file itself: that works through the mount.
      await writeFile(
        join(dir, 'm.yaml'),
        'version: 1\nimages:\n  bound: { path: vm/bound.qcow2, options: { compat: "1.1" } }\n',
      );
      const amended = await chainform(dir, 'apply', 'm.yaml', '--yes');
      expect(amended.exitCode, amended.stderr).toBe(0);
      expect((await imageInfo(stored, 'qcow2'))['format-specific']).toMatchObject({ data: { compat: '1.1' } });
      await qemuIo('qcow2', stored, 'read -P 0x55 0 1M');
    } finally {
      await execa('umount', [mountedAt], { reject: false });
    }
  });

  it('is refused as the data file a rebuild would write anew', async (context) => {
    const { dir } = ws;
    const manifest =
      'version: 1\nimages:\n  o: { path: out/o.qcow2, from: { path: vm/base.qcow2, format: qcow2 }, options: { data_file: out/o.data } }\n';
    await writeFile(join(dir, 'm.yaml'), manifest);
    expect((await chainform(dir, 'apply', 'm.yaml', '--yes')).exitCode).toBe(0);
    // A new source: the output is rebuilt, its data file written anew and renamed onto the old.
    await writeFile(join(dir, 'm.yaml'), manifest.replace('vm/base.qcow2', 'vm/solo.qcow2'));
    const data = join(dir, 'out', 'o.data');
    const bound = await execa('mount', ['--bind', data, data], { reject: false });
    if (bound.exitCode !== 0) context.skip(`mount --bind is not permitted here: ${bound.stderr}`);
    try {
      const r = await chainform(dir, 'plan', 'm.yaml');
      expect(r.exitCode, r.stdout).toBe(1);
      expect(r.stderr).toContain(`error: ${data} is a mount point (a file mounted there)`);
      expect(r.stderr).toContain('[mounted-file]');
    } finally {
      await execa('umount', [data], { reject: false });
    }
  });
});
