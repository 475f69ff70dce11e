// `retire:` and `apply --verify`: full copies turned into overlays are deleted only after every
// step succeeded and every output was compared with its source and checked; a file still read
// by the new layout is kept; a silently changed output stops the run before anything is deleted.
import { link, mkdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { chainform, checksums, compareImages, imageInfo, MiB, qcow2Chain, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

/**
 * Changes `file` where the ledger cannot see it: `change` runs, then the mtime is put back
 * (touch -r keeps nanoseconds; the ledger compares mtime to the nanosecond), and the file size
 * must be unchanged too.
 */
async function behindTheLedger(file: string, change: () => Promise<unknown>): Promise<void> {
  const before = await stat(file, { bigint: true });
  const times = `${file}.times`;
  await execa('touch', ['-r', file, times]);
  await change();
  await execa('touch', ['-r', times, file]);
  const after = await stat(file, { bigint: true });
  expect([after.size, after.mtimeNs]).toEqual([before.size, before.mtimeNs]);
}

describe('retire and verify', () => {
  const ws = useWorkspace(async (dir) => {
    const template = join(dir, 'template.raw');
    await qemuImg('create', '-q', '-f', 'raw', template, '32M');
    await qemuIo('raw', template, 'write -P 0x11 0 16M');
    await qemuImg('convert', '-f', 'raw', '-O', 'raw', template, join(dir, 'vm1-full.raw'));
    await qemuIo('raw', join(dir, 'vm1-full.raw'), 'write -P 0x22 1M 1M');
    // A reference copy to compare the overlay with once the full copy is gone.
    await qemuImg('convert', '-f', 'raw', '-O', 'raw', join(dir, 'vm1-full.raw'), join(dir, 'vm1-reference.raw'));
    return [template, join(dir, 'vm1-reference.raw')];
  });

  const manifest = (retire: string[]) =>
    [
      'version: 1',
      'images:',
      '  base: { path: base.qcow2, from: { path: template.raw, format: raw } }',
      '  vm1: { path: vm1.qcow2, from: { path: vm1-full.raw, format: raw }, backing: base }',
      `retire: [${retire.join(', ')}]`,
      '',
    ].join('\n');

  it('deletes a retired full copy only after verifying, and the next plan is empty', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'm.yaml'), manifest(['vm1-full.raw']));
    const planned = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
    expect(planned.exitCode).toBe(2);
    expect(planned.stdout).toContain('Files to retire (deleted once the new layout is verified):\n  - vm1-full.raw');
    expect(planned.stdout).toContain('2 steps writing about');
    expect(planned.stdout).toContain('1 file to retire');

    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode).toBe(0);
    expect(applied.stdout).toContain('verified base: matches its source; check clean');
    expect(applied.stdout).toContain('verified vm1: matches its source; check clean');
    expect(applied.stdout).toContain(`retired (deleted) ${join(dir, 'vm1-full.raw')}`);
    expect(await exists(join(dir, 'vm1-full.raw'))).toBe(false);
    expect(await compareImages(join(dir, 'vm1.qcow2'), 'qcow2', join(dir, 'vm1-reference.raw'), 'raw')).toBe(0);

    const again = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toContain('No changes');
    // Gone now, and said so: a mistyped name would read the same, not pass for a deleted file.
    expect(again.stdout).toContain('Listed under retire, not there (nothing to delete): vm1-full.raw');
    // From the root folder, paths are shown whole ("tmp/..." would read as a relative name).
    const fromRoot = await chainform('/', 'plan', join(dir, 'm.yaml'));
    expect(fromRoot.stdout).toContain(
      `Listed under retire, not there (nothing to delete): ${join(dir, 'vm1-full.raw')}`,
    );
    expect(fromRoot.stdout).toContain(`= base  ${join(dir, 'base.qcow2')}  (unchanged)`);
    // apply says it too, with --quiet (no plan shown) and in JSON.
    const quiet = await chainform(dir, 'apply', 'm.yaml', '--yes', '--quiet');
    expect(quiet.stdout).toBe(
      `  not retired ${join(dir, 'vm1-full.raw')}: not there (deleted already, or a mistyped name)`,
    );
    const json = await chainform(dir, 'apply', 'm.yaml', '--yes', '--output', 'json');
    expect(JSON.parse(json.stdout.split('\n')[0] ?? '')).toMatchObject({
      type: 'plan',
      retireNotThere: [join(dir, 'vm1-full.raw')],
    });
    // And `show` of a plan saved now.
    expect((await chainform(dir, 'plan', 'm.yaml', '--out', 'plan.json')).exitCode).toBe(0);
    const shown = await chainform(dir, 'show', 'plan.json');
    expect(shown.stdout).toContain('Listed under retire, not there (nothing to delete): vm1-full.raw');
    expect(shown.stdout).toContain('It still applies');
    const verified = await chainform(dir, 'apply', 'm.yaml', '--yes', '--verify');
    expect(verified.exitCode).toBe(0);
    expect(verified.stdout).toContain('verified vm1: its source is retired, so not compared; check clean');
  });

  it('retires a file named twice once, and refuses a symlink to nothing, which apply would never delete', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'm.yaml'), manifest(['vm1-full.raw', './vm1-full.raw']));
    const twice = await chainform(dir, 'plan', 'm.yaml');
    expect(twice.stdout).toContain('Files to retire (deleted once the new layout is verified):\n  - vm1-full.raw\n');
    expect(twice.stdout).toContain('; 1 file to retire.');

    await symlink('nowhere.raw', join(dir, 'dangling.raw'));
    await writeFile(join(dir, 'm.yaml'), manifest(['dangling.raw']));
    const dangling = await chainform(dir, 'plan', 'm.yaml');
    expect(dangling.exitCode).toBe(1);
    expect(dangling.stderr).toContain(
      `error: ${join(dir, 'dangling.raw')} is a symlink to ${join(dir, 'nowhere.raw')}, which does not exist [not-a-file]`,
    );
    expect(dangling.stdout).not.toContain('not there');
  });

  it('retires a file named directly and through a symlinked folder once, and both names of a hard link', async () => {
    const { dir } = ws;
    await symlink('.', join(dir, 'here'));
    await link(join(dir, 'vm1-full.raw'), join(dir, 'vm1-hard.raw'));
    await writeFile(join(dir, 'm.yaml'), manifest(['vm1-full.raw', 'here/vm1-full.raw', 'vm1-hard.raw']));
    const planned = await chainform(dir, 'plan', 'm.yaml');
    expect(planned.stdout).toContain(
      'Files to retire (deleted once the new layout is verified):\n  - vm1-full.raw\n  - vm1-hard.raw\n',
    );
    expect(planned.stdout).toContain('; 2 files to retire.');
    expect(planned.stdout).not.toContain('not there');
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);
    expect(applied.stdout.match(/retired \(deleted\)/g)).toHaveLength(2);
    expect(applied.stdout).not.toContain('not there');
    expect(await exists(join(dir, 'vm1-full.raw'))).toBe(false);
    expect(await exists(join(dir, 'vm1-hard.raw'))).toBe(false);
  });

  it('refuses at validate to retire a file the new layout keeps', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'm.yaml'), manifest(['base.qcow2']));
    const result = await chainform(dir, 'validate', 'm.yaml');
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain(
      `m.yaml:5:10: error: ${join(dir, 'base.qcow2')} is listed under retire but is the path of image "base" [retire-in-use]`,
    );
  });

  it('refuses at plan to retire a file the new layout still reads under another name, before any step', async () => {
    const { dir } = ws;
    // vm.qcow2 is an image of the manifest, on mid.qcow2 on low.qcow2; a source stays too.
    await qcow2Chain(dir, ['low', 'mid', 'vm'], '8M');
    await link(join(dir, 'vm.qcow2'), join(dir, 'vm-old.qcow2'));
    await link(join(dir, 'low.qcow2'), join(dir, 'low-old.qcow2'));
    await link(join(dir, 'template.raw'), join(dir, 'template-old.raw'));
    const kept = ['vm.qcow2', 'mid.qcow2', 'low.qcow2'].map((name) => join(dir, name));
    const before = await checksums(kept);
    const cases: [string, string][] = [
      ['vm-old.qcow2', 'image "vm" still reads it (another name of vm.qcow2)'],
      // A file deep in the chain of a backing named by path.
      ['low-old.qcow2', 'image "vm" still reads it (another name of low.qcow2)'],
      ['low.qcow2', 'image "vm" still reads it'],
      // A source that is not retired itself stays, and so does its chain.
      ['template-old.raw', 'the source of "copy" still reads it (another name of template.raw)'],
    ];
    for (const [retired, why] of cases) {
      await writeFile(
        join(dir, 'm.yaml'),
        [
          'version: 1',
          'images:',
          '  vm: { path: vm.qcow2, backing: { path: mid.qcow2, format: qcow2 }, options: { lazy_refcounts: true } }',
          '  copy: { path: out/copy.qcow2, from: { path: template.raw, format: raw } }',
          `retire: [${retired}]`,
          '',
        ].join('\n'),
      );
      // Before, apply amended vm.qcow2 and made the copy, then kept the file and reported the retire failed.
      const result = await chainform(dir, 'apply', 'm.yaml', '--yes');
      expect(result.exitCode).toBe(1);
      const named = (text: string) => text.replace(/([\w.-]+\.(qcow2|raw))/g, (name) => join(dir, name));
      expect(result.stderr).toContain(
        `m.yaml:5:10: error: ${join(dir, retired)} is listed under retire, but ${named(why)} [retire-in-use]`,
      );
      expect(await exists(join(dir, retired))).toBe(true);
      expect(await exists(join(dir, 'out', 'copy.qcow2'))).toBe(false);
    }
    expect(await checksums(kept)).toEqual(before);
  });

  it('refuses at plan to retire a symlink, also one the manifest reads from: apply deletes only image files', async () => {
    const { dir } = ws;
    await symlink('template.raw', join(dir, 'template-link.raw'));
    for (const text of [
      manifest(['template-link.raw']),
      // Before, a symlink that is also a source got past plan, and apply failed after its steps.
      'version: 1\nimages:\n  base: { path: base.qcow2, from: { path: template-link.raw, format: raw } }\nretire: [template-link.raw]\n',
    ]) {
      await writeFile(join(dir, 'm.yaml'), text);
      const result = await chainform(dir, 'plan', 'm.yaml');
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toMatch(
        new RegExp(
          `m\\.yaml:\\d+:10: error: ${join(dir, 'template-link.raw')} is a symlink to ${join(dir, 'template.raw')}, not an image file \\[not-a-file\\]`,
        ),
      );
    }
  });

  it('retires the old base of a source the plan repoints: the source reads what the plan leaves of it', async () => {
    const { dir } = ws;
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'old.qcow2'), '8M');
    await qemuIo('qcow2', join(dir, 'old.qcow2'), 'write -P 0x31 0 2M');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', join(dir, 'old.qcow2'), join(dir, 'new.qcow2'));
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'old.qcow2', '-F', 'qcow2', join(dir, 'vm.qcow2'));
    await qemuIo('qcow2', join(dir, 'vm.qcow2'), 'write -P 0x32 1M 1M');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', join(dir, 'vm.qcow2'), join(dir, 'vm-before.raw'));
    await writeFile(
      join(dir, 'm.yaml'),
      [
        'version: 1',
        'images:',
        '  vm: { path: vm.qcow2, backing: { path: new.qcow2, format: qcow2 } }',
        '  copy: { path: out/copy.qcow2, from: { path: vm.qcow2, format: qcow2 } }',
        'retire: [old.qcow2]',
        '',
      ].join('\n'),
    );
    // Before, plan refused: the source's chain was taken as it is, on old.qcow2.
    const result = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(result.exitCode, result.stdout + result.stderr).toBe(0);
    expect(await exists(join(dir, 'old.qcow2'))).toBe(false);
    for (const image of ['vm.qcow2', 'out/copy.qcow2'])
      expect(await compareImages(join(dir, image), 'qcow2', join(dir, 'vm-before.raw'), 'raw')).toBe(0);
  });

  it('retires a source only under the name the manifest reads it by', async () => {
    const { dir } = ws;
    await mkdir(join(dir, 'full'));
    await qemuImg('convert', '-f', 'raw', '-O', 'raw', join(dir, 'vm1-full.raw'), join(dir, 'full', 'a.raw'));
    await symlink('full/a.raw', join(dir, 'a-link.raw'));
    // Retired under the name its link leads to, the source would be missing from the next plan on.
    const text = (from: string, retired: string) =>
      `version: 1\nimages:\n  a: { path: out/a.qcow2, from: { path: ${from}, format: raw } }\nretire: [${retired}]\n`;
    await writeFile(join(dir, 'm.yaml'), text('a-link.raw', 'full/a.raw'));
    const refused = await chainform(dir, 'plan', 'm.yaml');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain('the source of "a" still reads it');
    await writeFile(join(dir, 'm.yaml'), text('full/a.raw', 'full/a.raw'));
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect(await exists(join(dir, 'full', 'a.raw'))).toBe(false);
    const again = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
  });

  it('retires another name of an image file the plan writes anew: nothing reads the old file then', async () => {
    const { dir } = ws;
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'vm.qcow2'), '8M');
    await link(join(dir, 'vm.qcow2'), join(dir, 'vm-old.qcow2'));
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  vm: { path: vm.qcow2, options: { cluster_size: 131072 } }\nretire: [vm-old.qcow2]\n',
    );
    // Before, plan refused it as a name of vm.qcow2's file, which the rewrite replaces.
    const result = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(result.exitCode, result.stdout + result.stderr).toBe(0);
    expect(await exists(join(dir, 'vm-old.qcow2'))).toBe(false);
    expect((await imageInfo(join(dir, 'vm.qcow2'), 'qcow2'))['cluster-size']).toBe(131072);
  });

  it('refuses at plan to retire a file that an image still reads through its backing chain', async () => {
    const { dir } = ws;
    // old.qcow2 <- mid.qcow2 <- keep.qcow2: keep stays on mid, which the manifest does not
    // manage, and mid still reads old.qcow2: deleting it would break keep.
    await qcow2Chain(dir, ['old', 'mid', 'keep'], '32M');
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  keep: { path: keep.qcow2, backing: { path: mid.qcow2, format: qcow2 } }\nretire: [old.qcow2]\n',
    );
    // Before, apply checked this only once the steps had run (retireFiles still does, last).
    const result = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain(
      `error: ${join(dir, 'old.qcow2')} is listed under retire, but image "keep" still reads it [retire-in-use]`,
    );
    expect(await exists(join(dir, 'old.qcow2'))).toBe(true);
  });

  it('refuses at plan to retire a file that a source the manifest keeps still reads', async () => {
    const { dir } = ws;
    // template.raw is retired, but vm-over.qcow2 (a source that stays) is an overlay on it.
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'template.raw', '-F', 'raw', join(dir, 'vm-over.qcow2'));
    await writeFile(
      join(dir, 'm.yaml'),
      [
        'version: 1',
        'images:',
        '  base: { path: base.qcow2, from: { path: template.raw, format: raw } }',
        '  vm: { path: vm.qcow2, from: { path: vm-over.qcow2, format: qcow2 }, backing: base }',
        'retire: [template.raw]',
        '',
      ].join('\n'),
    );
    const result = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain(
      `error: ${join(dir, 'template.raw')} is listed under retire, but the source of "vm" still reads it [retire-in-use]`,
    );
    expect(await exists(join(dir, 'base.qcow2'))).toBe(false);
    // The workspace guard also checks its sha256 after the test.
    expect(await exists(join(dir, 'template.raw'))).toBe(true);
  });

  it('keeps a retired file that a process has open, even read-only', async () => {
    const { dir } = ws;
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 'old.raw'), '1M');
    const socket = join(dir, 'old.sock');
    const server = execa('qemu-nbd', ['-r', '-t', '-f', 'raw', '-k', socket, join(dir, 'old.raw')], { reject: false });
    try {
      for (let i = 0; i < 100 && !(await exists(socket)); i++) await new Promise((r) => setTimeout(r, 20));
      await qemuImg('create', '-q', '-f', 'raw', join(dir, 'spare.raw'), '1M');
      await writeFile(join(dir, 'm.yaml'), manifest(['old.raw', 'spare.raw']));
      const result = await chainform(dir, 'apply', 'm.yaml', '--yes');
      expect(result.exitCode).toBe(1);
      expect(result.stdout).toMatch(/failed: kept .*old\.raw: process \d+ \(qemu-nbd\) has it open/);
      expect(await exists(join(dir, 'old.raw'))).toBe(true);
      // The other one went, as the manifest asks, and the closing line says so.
      expect(result.stdout).toContain(`retired (deleted) ${join(dir, 'spare.raw')}`);
      expect(await exists(join(dir, 'spare.raw'))).toBe(false);
      expect(result.stdout).toContain(
        'Inputs were not modified (the 1 retired file above was deleted, as the manifest asks); temporary files were removed.',
      );
    } finally {
      server.kill();
      await server;
    }
  });

  it('refuses at plan time to retire something that is not a file', async () => {
    const { dir } = ws;
    await mkdir(join(dir, 'old-folder'));
    await writeFile(join(dir, 'm.yaml'), manifest(['old-folder']));
    const result = await chainform(dir, 'plan', 'm.yaml');
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain(
      `m.yaml:5:10: error: ${join(dir, 'old-folder')} is a directory, not an image file [not-a-file]`,
    );
  });

  it('stops before retiring when an output no longer matches its source', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'm.yaml'), manifest([]));
    expect((await chainform(dir, 'apply', 'm.yaml', '--yes')).exitCode).toBe(0);
    // Bit rot the ledger cannot see: the data changes, the size and mtime are put back.
    const output = join(dir, 'vm1.qcow2');
    await behindTheLedger(output, () => qemuIo('qcow2', output, `write -P 0x99 ${MiB + 64 * 1024} 64k`));
    await writeFile(join(dir, 'm.yaml'), manifest(['vm1-full.raw']));

    const result = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(result.exitCode).toBe(1);
    expect(result.stdout).toContain(`failed: ${output} (vm1) does NOT match its source`);
    expect(result.stdout).toContain(`not retired ${join(dir, 'vm1-full.raw')}: the layout did not verify`);
    expect(await exists(join(dir, 'vm1-full.raw'))).toBe(true);
  });

  it('stops before retiring when an output was shrunk to the end of its data, which compare alone calls identical', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'm.yaml'), manifest([]));
    expect((await chainform(dir, 'apply', 'm.yaml', '--yes')).exitCode).toBe(0);
    // The template's last 16 MiB are zeros: qemu-img compare reads past the end of a smaller
    // image as zeros, so it finds the shrunk base "identical".
    const output = join(dir, 'base.qcow2');
    await behindTheLedger(output, () => qemuImg('resize', '-q', '-f', 'qcow2', '--shrink', output, '16M'));
    expect(await compareImages(output, 'qcow2', join(dir, 'template.raw'), 'raw')).toBe(0);
    await writeFile(join(dir, 'm.yaml'), manifest(['vm1-full.raw']));

    const result = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(result.exitCode).toBe(1);
    expect(result.stdout).toContain(
      `failed: ${output} (base) is ${16 * MiB} bytes (virtual size), but its source has ${32 * MiB}`,
    );
    expect(result.stdout).toContain(`not retired ${join(dir, 'vm1-full.raw')}: the layout did not verify`);
    expect(await exists(join(dir, 'vm1-full.raw'))).toBe(true);
  });

  it('verifies a vpc output, which qemu-img makes up to one disk cylinder larger than its source', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  v: { path: v.vpc, format: vpc, from: { path: template.raw, format: raw } }\n',
    );
    const result = await chainform(dir, 'apply', 'm.yaml', '--yes', '--verify');
    expect(result.exitCode, result.stdout).toBe(0);
    expect(result.stdout).toContain('verified v: matches its source');
    const info = JSON.parse(await qemuImg('info', '--output=json', '-f', 'vpc', join(dir, 'v.vpc')));
    expect(info['virtual-size']).toBeGreaterThan(32 * MiB);
  });
});
