// Issue 3, external data files: a qcow2 whose guest data lives in a raw file, with and without
// a backing; both files are written under temporary names and renamed only when complete.
import { copyFile, mkdir, readdir, rename, stat, symlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { chainform, checkImage, checksums, compareImages, imageInfo, MiB, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const ws = useWorkspace(async (dir) => {
  const tpl = join(dir, 'tpl.raw');
  await qemuImg('create', '-q', '-f', 'raw', tpl, '32M');
  await qemuIo('raw', tpl, 'write -P 0x05 0 16M');
  const vm = join(dir, 'vm.raw');
  await qemuImg('create', '-q', '-f', 'raw', vm, '32M');
  await qemuIo('raw', vm, 'write -P 0x05 0 16M', 'write -P 0x06 2M 1M');
  return [tpl, vm];
});

const MANIFEST = `version: 1
images:
  tpl:
    path: out/tpl.qcow2
    from: { path: tpl.raw, format: raw }
    options: { data_file: out/tpl.data, data_file_raw: true }
  vm:
    path: out/vm.qcow2
    from: { path: vm.raw, format: raw }
    backing: tpl
    options: { data_file: out/vm.data }
`;

describe('external data files', () => {
  it('builds a qcow2 with a raw data file, and an overlay with a data file of its own', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'manifest.yaml'), MANIFEST);
    const r = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    expect((await readdir(join(dir, 'out'))).sort()).toEqual(['tpl.data', 'tpl.qcow2', 'vm.data', 'vm.qcow2']);
    // What the step reports on disk includes the data file: the 16 MiB of guest data live there.
    expect(r.stdout).toMatch(/done {5}tpl:convert \([\d.]+s, 16\.\d MiB on disk\)/);
    const tpl = await imageInfo(join(dir, 'out/tpl.qcow2'), 'qcow2');
    expect((tpl['format-specific'] as { data: Record<string, unknown> }).data).toMatchObject({
      'data-file': join(dir, 'out/tpl.data'),
      'data-file-raw': true,
    });
    expect(await compareImages(join(dir, 'out/tpl.qcow2'), 'qcow2', join(dir, 'tpl.raw'), 'raw')).toBe(0);
    // data_file_raw: the data file itself is the guest disk as a raw image.
    expect(await compareImages(join(dir, 'out/tpl.data'), 'raw', join(dir, 'tpl.raw'), 'raw')).toBe(0);
    expect(await compareImages(join(dir, 'out/vm.qcow2'), 'qcow2', join(dir, 'vm.raw'), 'raw')).toBe(0);
    for (const image of ['tpl', 'vm']) expect(await checkImage(join(dir, `out/${image}.qcow2`), 'qcow2')).toBe(0);
    const vm = await imageInfo(join(dir, 'out/vm.qcow2'), 'qcow2');
    expect(vm['backing-filename']).toBe('tpl.qcow2');
    // The overlay's data file holds its 1 MiB delta, not a copy of the template.
    expect((await stat(join(dir, 'out/vm.data'))).blocks * 512).toBeLessThanOrEqual(2 * MiB);
    expect((await chainform(dir, 'plan', 'manifest.yaml', '--detailed-exitcode')).exitCode).toBe(0);
  });

  it('notices guest writes that touch only the data file, and will not replace that output', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'manifest.yaml'), MANIFEST);
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    // A guest write to allocated clusters of a raw data file changes only the data file.
    await qemuIo('qcow2', join(dir, 'out/tpl.qcow2'), 'write -P 0x77 0 1M');
    const r = await chainform(dir, 'plan', 'manifest.yaml');
    expect(r.exitCode, r.stdout).toBe(1);
    expect(r.stderr).toContain('changed since chainform built it');
  });

  it('refuses a raw data file on an image with a backing, at its line and column', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'manifest.yaml'),
      MANIFEST.replace('{ data_file: out/vm.data }', '{ data_file: out/vm.data, data_file_raw: true }'),
    );
    const r = await chainform(dir, 'validate', 'manifest.yaml');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      'manifest.yaml:11:40: error: a raw data file cannot be combined with a backing file (qemu refuses it) ("vm") [invalid-option]',
    );
  });

  it('never overwrites an existing file at the data file path', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'manifest.yaml'), MANIFEST);
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 'out-data.raw'), '1M');
    await writeFile(join(dir, 'manifest.yaml'), MANIFEST.replace('out/tpl.data', 'out-data.raw'));
    ws.inputs.push(join(dir, 'out-data.raw'));
    await ws.acceptInputChanges();
    const r = await chainform(dir, 'plan', 'manifest.yaml');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('out-data.raw already exists and is not the data file of "tpl" [data-file-exists]');
  });
});

describe('an image kept in place with a data file', () => {
  it('is not rewritten over the data file it uses: the manifest must name a new one, and import names it', async () => {
    const { dir } = ws;
    for (const raw of [false, true]) {
      const name = raw ? 'r' : 'd';
      const dataFile = join(dir, `${name}.data`);
      const options = `data_file=${dataFile}${raw ? ',data_file_raw=on' : ''}`;
      await qemuImg('create', '-q', '-f', 'qcow2', '-o', options, join(dir, `${name}.qcow2`), '16M');
      await qemuIo('qcow2', join(dir, `${name}.qcow2`), 'write -P 0x22 1M 640k');
      await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', join(dir, `${name}.qcow2`), join(dir, `${name}-before.raw`));
      // import names the data file, so the manifest says what the layout is.
      const imported = await chainform(dir, 'import', '-f', 'qcow2', `${name}.qcow2`);
      expect(imported.stdout).toContain(`data_file: ${dataFile}`);
      expect(imported.stdout.includes('data_file_raw: true')).toBe(raw);
      const files = [join(dir, `${name}.qcow2`), dataFile];
      const before = await checksums(files);
      // Not naming it, or naming the one it has: refused before anything runs. Before, the first
      // moved the data into the image and left the data file behind, and the second replaced the
      // data file under the image (a run killed between the two renames lost data).
      for (const declared of ['', `, data_file: ${dataFile}`]) {
        await writeFile(
          join(dir, 'm.yaml'),
          `version: 1\nimages:\n  ${name}: { path: ${name}.qcow2, options: { cluster_size: 4096${declared} } }\n`,
        );
        const refused = await chainform(dir, 'apply', 'm.yaml', '--yes');
        expect(refused.exitCode).toBe(1);
        expect(refused.stderr).toContain(`and its guest data lives in the data file ${dataFile}`);
        expect(refused.stderr).toContain('[data-file-rewrite]');
        expect(await checksums(files)).toEqual(before);
      }
      // As the hint says: a new data file, and the old one retired once the layout is verified.
      const moved = join(dir, `${name}-new.data`);
      await writeFile(
        join(dir, 'm.yaml'),
        `version: 1\nimages:\n  ${name}: { path: ${name}.qcow2, options: { cluster_size: 4096, data_file: ${moved} } }\nretire: [${name}.data]\n`,
      );
      const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
      expect(applied.exitCode, applied.stderr).toBe(0);
      const info = await imageInfo(join(dir, `${name}.qcow2`), 'qcow2');
      const specific = (info['format-specific'] as { data: Record<string, unknown> }).data;
      expect([info['cluster-size'], specific['data-file']]).toEqual([4096, moved]);
      expect(await compareImages(join(dir, `${name}.qcow2`), 'qcow2', join(dir, `${name}-before.raw`), 'raw')).toBe(0);
      const again = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
      expect(again.exitCode, again.stdout).toBe(0);
    }
  });
});

describe('the free-space check of an image with a data file', () => {
  it('counts the bytes of an in-place step on the data file the image keeps, which the manifest need not name', async () => {
    const { dir } = ws;
    await mkdir(join(dir, 'data'));
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'b0.qcow2'), '16M');
    await qemuIo('qcow2', join(dir, 'b0.qcow2'), 'write -P 0x22 0 4M');
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'b1.qcow2'), '16M');
    await qemuIo('qcow2', join(dir, 'b1.qcow2'), 'write -P 0x55 0 4M');
    const options = `data_file=${join(dir, 'data', 'o.data')}`;
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', options, '-b', 'b0.qcow2', '-F', 'qcow2', join(dir, 'o.qcow2'));
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  o: { path: o.qcow2, backing: { path: b1.qcow2, format: qcow2 } }\n',
    );
    const plan = await chainform(dir, 'plan', 'm.yaml', '--json');
    expect(plan.exitCode, plan.stderr).toBe(0);
    const planned = JSON.parse(plan.stdout);
    // Unless b0 and b1 compare identical, a safe rebase writes what differs into the data file.
    expect(planned.steps.map((step: { kind: string }) => step.kind)).toEqual(['verified-repoint']);
    // Before, the step was charged to no filesystem at all: "space" was empty.
    expect(planned.space).toHaveLength(1);
    expect(planned.space[0].expectedWriteBytes).toBeGreaterThan(0);
  });
});

describe('a run killed between the renames of a move to a new data file', () => {
  it('leaves the image on its old data file; the next apply removes the new one and converges', async () => {
    const { dir } = ws;
    const image = join(dir, 'big.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'big.data')}`, image, '8M');
    await qemuIo('qcow2', image, 'write -P 0x22 1M 2M');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', image, join(dir, 'big-before.raw'));
    await writeFile(
      join(dir, 'm.yaml'),
      `version: 1\nimages:\n  big: { path: big.qcow2, options: { cluster_size: 131072, data_file: ${join(dir, 'big2.data')} } }\n`,
    );
    const planned = JSON.parse((await chainform(dir, 'plan', 'm.yaml', '--json')).stdout);
    const step = planned.steps[0];
    const [data, own] = [step.extraTemporaries[0], { temporaryPath: step.temporaryPath, onto: image }];
    // What a SIGKILL between the step's two renames leaves (made by hand: the moment is too short
    // to hit reliably): the new data file renamed into place, the new header still temporary and
    // naming it (the step's last command).
    await copyFile(join(dir, 'big.data'), data.path);
    await copyFile(image, own.temporaryPath);
    await qemuImg('amend', '-f', 'qcow2', '-o', `data_file=${data.path}`, own.temporaryPath);
    const gone = execa('true');
    await gone;
    const journal = {
      version: 1,
      pid: gone.pid,
      host: hostname(),
      startedAt: new Date().toISOString(),
      steps: [
        {
          id: step.id,
          image: 'big',
          path: image,
          status: 'running',
          temporaries: [own.temporaryPath, data.temporaryPath],
          renames: [{ temporaryPath: data.temporaryPath, onto: data.path }, own],
          targetsBefore: { [data.path]: null },
          commands: [],
        },
      ],
    };
    await mkdir(join(dir, '.chainform'), { recursive: true });
    await writeFile(join(dir, '.chainform', 'journal.json'), JSON.stringify(journal));
    // Before, the next plan refused big2.data as data-file-exists until it was removed by hand.
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect(applied.stdout).toContain(`removed 1 file renamed into place before its image was (${data.path})`);
    const info = await imageInfo(image, 'qcow2');
    expect((info['format-specific'] as { data: Record<string, unknown> }).data['data-file']).toBe(data.path);
    expect(await compareImages(image, 'qcow2', join(dir, 'big-before.raw'), 'raw')).toBe(0);
    const again = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
    expect(again.exitCode, again.stdout).toBe(0);
  });
});

describe('an image whose header names its data file by a relative name', () => {
  // qemu opens such a name from its working directory, not from the image's folder (unlike a
  // backing name): chainform's qemu-img, run from elsewhere, would read another file.
  it('is refused where chainform would read another data file, and read where it reads the right one', async () => {
    const { dir } = ws;
    const sub = join(dir, 'sub');
    await mkdir(sub);
    // Made from its own folder, as a user would: the header stores "data.raw" as typed.
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=data.raw', 'img.qcow2', '8M'], {
      cwd: sub,
    });
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 0 1M', 'img.qcow2'], { cwd: sub });
    // Another disk's data file of that name where chainform runs from: what qemu-img would read.
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 'data.raw'), '8M');
    await qemuIo('raw', join(dir, 'data.raw'), 'write -P 0x77 0 1M');
    ws.inputs.push(...['sub/img.qcow2', 'sub/data.raw', 'data.raw'].map((f) => join(dir, f)));
    await ws.acceptInputChanges();
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  copy: { path: out/copy.qcow2, from: { path: sub/img.qcow2, format: qcow2 } }\n',
    );

    const refused = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(refused.exitCode, refused.stdout).toBe(1);
    expect(refused.stderr).toContain(
      `m.yaml:3:47: error: ${join(sub, 'img.qcow2')} keeps its guest data in the file named "data.raw", a relative name, which qemu opens from the working directory of the program that opens the image, not from the image's folder: chainform's qemu-img, run from ${dir}, would read ${join(dir, 'data.raw')}, not ${join(sub, 'data.raw')} [relative-data-file]`,
    );
    // The hint's amend runs in the image's folder, where qemu finds the data file to open it.
    const amend = `cd ${sub} && qemu-img amend -f qcow2 -o data_file=${join(sub, 'data.raw')} ${join(sub, 'img.qcow2')}`;
    expect(refused.stderr).toContain(amend);
    await expect(stat(join(dir, 'out'))).rejects.toThrow();

    // From the image's folder both names lead to one file: a warning, and the copy holds its data.
    const applied = await chainform(sub, 'apply', '../m.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect(applied.stderr).toContain('warning: ');
    expect(applied.stderr).toContain(
      `from ${sub}, where chainform runs, that is ${join(sub, 'data.raw')}, but a program started elsewhere reads another file [relative-data-file]`,
    );
    const read = await execa('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0x33 0 1M', join(dir, 'out/copy.qcow2')]);
    expect(read.stdout).not.toContain('Pattern verification failed');
    const same = await execa(
      'qemu-img',
      ['compare', '-f', 'qcow2', '-F', 'qcow2', join(dir, 'out/copy.qcow2'), 'img.qcow2'],
      {
        cwd: sub,
        reject: false,
      },
    );
    expect(same.exitCode).toBe(0);

    // Through a symlinked folder, and a link to the data file where chainform runs: one file.
    await symlink(sub, join(dir, 'linked'));
    await writeFile(
      join(dir, 'linked.yaml'),
      'version: 1\nimages:\n  copy: { path: out/linked.qcow2, from: { path: linked/img.qcow2, format: qcow2 } }\n',
    );
    const linked = await chainform(join(dir, 'linked'), 'plan', '../linked.yaml');
    expect(linked.exitCode, linked.stderr).toBe(0);
    expect(linked.stderr).toContain('[relative-data-file]');
    expect(linked.stderr).not.toContain('error');
  });
});

describe('an image whose external data file is missing', () => {
  // qemu-img info reads the header only: without a check, the plan passed and its convert failed.
  it('is refused at plan time, with the amend that points it at a moved data file', async () => {
    const { dir } = ws;
    const image = join(dir, 'img.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'img.data')}`, image, '8M');
    await qemuIo('qcow2', image, 'write -P 0x21 0 1M');
    await rename(join(dir, 'img.data'), join(dir, 'moved.data'));
    ws.inputs.push(image, join(dir, 'moved.data'));
    await ws.acceptInputChanges();
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  copy: { path: out/copy.qcow2, from: { path: img.qcow2, format: qcow2 } }\n',
    );
    const r = await chainform(dir, 'plan', 'm.yaml');
    expect(r.exitCode, r.stdout).toBe(1);
    expect(r.stderr).toContain(
      `m.yaml:3:47: error: ${image} keeps its guest data in the external data file ${join(dir, 'img.data')}, which does not exist [data-file-missing]`,
    );
    // The hint's amend works on a copy: the image then reads its data from the moved file.
    const hint = /`(qemu-img amend [^`]+)`/.exec(r.stderr)?.[1];
    expect(hint).toContain('--image-opts');
    const copy = join(dir, 'copy-of-img.qcow2');
    await copyFile(image, copy);
    const amend = hint!.replaceAll('NEW-PATH', join(dir, 'moved.data')).replace(image, copy);
    await execa('sh', ['-c', amend]);
    const read = await execa('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0x21 0 1M', copy]);
    expect(read.stdout).not.toContain('Pattern verification failed');
  });
});
