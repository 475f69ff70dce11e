// `chainform status`: per-image drift and the exit code CI and cron rely on (0 in sync, 2 drift,
// 1 error), on real images before and after an apply, after a source changed, and for an image
// kept in place on the wrong backing.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chainform, qemuImg, qemuIo } from '../helpers/qemu.js';
import { templateAndCopy } from '../helpers/template-copy.js';
import { useWorkspace } from '../helpers/workspace.js';

describe('status', () => {
  const ws = useWorkspace(async (dir) => {
    const { template } = await templateAndCopy(dir);
    return [template];
  });

  it('reports missing images, then in sync, then a changed source, with exit 2, 0, 2', async () => {
    const { dir } = ws;
    const before = await chainform(dir, 'status', 'm.yaml');
    expect(before.exitCode).toBe(2);
    expect(before.stdout).toContain('base  base.qcow2: missing  (a standalone image: full copy of the source)');
    expect(before.stdout).toContain('Drift: 2 of 2 images differ.');

    expect((await chainform(dir, 'apply', 'm.yaml', '--yes')).exitCode).toBe(0);
    const after = await chainform(dir, 'status', 'm.yaml');
    expect(after.exitCode).toBe(0);
    expect(after.stdout).toContain(
      'base  base.qcow2: in sync\nvm    vm.qcow2: in sync\n\nIn sync: 2 images match m.yaml.',
    );

    await qemuIo('raw', join(dir, 'full.raw'), 'write -P 0x33 1M 64k');
    const changed = await chainform(dir, 'status', 'm.yaml', '--json');
    expect(changed.exitCode).toBe(2);
    const drift = JSON.parse(changed.stdout) as { images: { id: string; state: string }[]; inSync: boolean };
    expect(drift.images.map((i) => `${i.id}:${i.state}`)).toEqual(['base:in-sync', 'vm:rebuild']);
    expect(drift.inSync).toBe(false);
    expect((await chainform(dir, 'status', 'm.yaml')).stdout).toContain(
      'Drift: 1 of 2 images differs. `chainform plan m.yaml` shows the steps; `chainform apply m.yaml` runs them.',
    );

    // A deployed VM writes into its disk: drift (exit 2), not an error.
    await qemuIo('qcow2', join(dir, 'vm.qcow2'), 'write -P 0x44 2M 64k');
    const written = await chainform(dir, 'status', 'm.yaml');
    expect(written.exitCode, written.stderr).toBe(2);
    expect(written.stdout).toContain('vm  vm.qcow2: modified since chainform built it, or not built by it');
    // Planning stops there, so base's state is not known: counted, not called in sync.
    // apply would refuse it (output-exists), so status does not promise apply runs anything.
    expect(written.stdout).toContain(
      'Drift: 1 of 2 images differs (1 not checked: planning stops at the drift above). `chainform plan m.yaml` says what stops it and how to go on.',
    );
    const json = JSON.parse((await chainform(dir, 'status', 'm.yaml', '--json')).stdout) as { notChecked?: string[] };
    expect(json.notChecked).toEqual(['base']);
  });

  it('reports a folder where an image is to be made as drift (exit 2), naming it, also where chainform built one', async () => {
    const { dir } = ws;
    const expected = `base  base.qcow2: modified since chainform built it, or not built by it  (${join(dir, 'base.qcow2')} is a directory, where the manifest makes a new image)`;
    await mkdir(join(dir, 'base.qcow2'));
    const before = await chainform(dir, 'status', 'm.yaml');
    expect(before.exitCode, before.stderr).toBe(2);
    expect(before.stdout).toContain(expected);

    // An image chainform built (and nothing reads through), replaced by a folder.
    await writeFile(
      join(dir, 'solo.yaml'),
      'version: 1\nimages:\n  solo: { path: solo.qcow2, from: { path: full.raw, format: raw } }\n',
    );
    expect((await chainform(dir, 'apply', 'solo.yaml', '--yes', '--quiet')).exitCode).toBe(0);
    await rm(join(dir, 'solo.qcow2'));
    await mkdir(join(dir, 'solo.qcow2'));
    const after = await chainform(dir, 'status', 'solo.yaml');
    expect(after.exitCode, after.stderr).toBe(2);
    expect(after.stdout).toContain(
      `solo  solo.qcow2: modified since chainform built it, or not built by it  (${join(dir, 'solo.qcow2')} is a directory, where the manifest makes a new image)`,
    );
  });

  it('keeps in place an image whose data file is a device, as import wrote it', async () => {
    const { dir } = ws;
    // /dev/zero stands for a block device (an LVM volume): not a regular file, never replaced.
    const image = join(dir, 'dev.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'data_file=dev.raw,data_file_raw=on', image, '4M');
    await qemuImg('amend', '-f', 'qcow2', '-o', 'data_file=/dev/zero', image);
    expect((await chainform(dir, 'import', '-f', 'qcow2', 'dev.qcow2', '-o', 'dev.yaml')).exitCode).toBe(0);
    const r = await chainform(dir, 'status', 'dev.yaml');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('In sync: 1 image matches dev.yaml.');
  });

  it('reports an image kept in place on the wrong backing, and exit 1 for an error', async () => {
    const { dir } = ws;
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'a.qcow2'), '8M');
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'b.qcow2'), '8M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', join(dir, 'top.qcow2'));
    await writeFile(
      join(dir, 'k.yaml'),
      'version: 1\nimages:\n  top: { path: top.qcow2, backing: { path: b.qcow2, format: qcow2 } }\n',
    );
    const result = await chainform(dir, 'status', 'k.yaml');
    expect(result.exitCode).toBe(2);
    expect(result.stdout).toMatch(/^top {2}top\.qcow2: wrong backing/m);
    expect((await chainform(dir, 'plan', 'k.yaml')).stdout).toContain('Plan: 1 to rebase, 0 unchanged; 1 step');
    expect((await chainform(dir, 'status', 'missing.yaml')).exitCode).toBe(1);
  });
});
