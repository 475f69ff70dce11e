// Issue 2, tests (b), (c), (d): two raw full copies of a raw template, each with its own changes
// (one with zeros over template data), turned into qcow2 overlays on the template that present
// the copy's exact content while storing about the changed clusters only; apply twice; inputs
// unchanged.
import { copyFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  chainform,
  checkImage,
  checksums,
  compareImages,
  imageInfo,
  MiB,
  qemuImg,
  qemuIo,
  topLayerDataBytes,
} from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const MANIFEST = `version: 1
defaults:
  options: { cluster_size: 65536 }
images:
  template:
    path: out/template.qcow2
    from: { path: in/template.raw, format: raw }
  vm1:
    path: out/vm1.qcow2
    from: { path: in/vm1.raw, format: raw }
    backing: template
  vm2:
    path: out/vm2.qcow2
    from: { path: in/vm2.raw, format: raw }
    backing: template
`;

const ws = useWorkspace(async (dir) => {
  await mkdir(join(dir, 'in'));
  const template = join(dir, 'in/template.raw');
  await qemuImg('create', '-q', '-f', 'raw', template, '64M');
  await qemuIo('raw', template, 'write -P 0xaa 0 48M');
  await copyFile(template, join(dir, 'in/vm1.raw'));
  await copyFile(template, join(dir, 'in/vm2.raw'));
  await qemuIo('raw', join(dir, 'in/vm1.raw'), 'write -P 0x11 4M 1M', 'write -P 0x12 60M 512k');
  // vm2: zeros written over template data, and new data past the template's data.
  await qemuIo('raw', join(dir, 'in/vm2.raw'), 'write -z 8M 2M', 'write -P 0x22 56M 1M');
  await writeFile(join(dir, 'manifest.yaml'), MANIFEST);
  return ['template.raw', 'vm1.raw', 'vm2.raw'].map((f) => join(dir, 'in', f));
});

describe('full copies back to thin overlays', () => {
  it('builds overlays that present each copy exactly and store about the changed clusters', async () => {
    const { dir } = ws;
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes', '--jobs', '2');
    expect(applied.exitCode, applied.stderr + applied.stdout).toBe(0);
    expect(applied.stdout).toContain('Apply complete: 3 steps done');

    const changed = { vm1: 1.5 * MiB, vm2: 1 * MiB }; // data clusters each copy changed
    for (const vm of ['vm1', 'vm2'] as const) {
      const out = join(dir, `out/${vm}.qcow2`);
      expect(await compareImages(out, 'qcow2', join(dir, `in/${vm}.raw`), 'raw')).toBe(0);
      expect(await checkImage(out, 'qcow2')).toBe(0);
      const info = await imageInfo(out, 'qcow2');
      expect(info['backing-filename']).toBe('template.qcow2');
      expect(info['backing-filename-format']).toBe('qcow2');
      const stored = await topLayerDataBytes(out, 'qcow2');
      expect(stored).toBe(changed[vm]);
      expect(info['actual-size'] as number).toBeLessThan(changed[vm] + MiB);
    }
    // vm2's zeros over template data are zero clusters, not stored data.
    const map = JSON.parse(await qemuImg('map', '--output=json', '-f', 'qcow2', join(dir, 'out/vm2.qcow2')));
    expect(map).toContainEqual(
      expect.objectContaining({
        start: 8 * MiB,
        length: 2 * MiB,
        depth: 0,
        zero: true,
        data: false,
      }),
    );
    expect(await compareImages(join(dir, 'out/template.qcow2'), 'qcow2', join(dir, 'in/template.raw'), 'raw')).toBe(0);
    // No temporary files are left behind.
    expect((await readdir(join(dir, 'out'))).sort()).toEqual(['template.qcow2', 'vm1.qcow2', 'vm2.qcow2']);
  });

  it('plans nothing on a second run, and nothing changes on disk', async () => {
    const { dir } = ws;
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    const outputs = ['template', 'vm1', 'vm2'].map((n) => join(dir, `out/${n}.qcow2`));
    const afterFirst = await checksums(outputs);
    const second = await chainform(dir, 'plan', 'manifest.yaml', '--detailed-exitcode');
    expect(second.exitCode, second.stdout + second.stderr).toBe(0);
    expect(second.stdout).toContain('No changes: all 3 images match the manifest.');
    const reapplied = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(reapplied.exitCode).toBe(0);
    expect(await checksums(outputs)).toEqual(afterFirst);
  });

  it('rebuilds the overlays too when the template they sit on is rebuilt', async () => {
    const { dir } = ws;
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    await qemuIo('raw', join(dir, 'in/template.raw'), 'write -P 0x11 4M 1M');
    await ws.acceptInputChanges();
    const plan = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    expect(plan.steps.map((s: { id: string }) => s.id)).toEqual(['template:convert', 'vm1:diff', 'vm2:diff']);
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    for (const vm of ['vm1', 'vm2']) {
      expect(await compareImages(join(dir, `out/${vm}.qcow2`), 'qcow2', join(dir, `in/${vm}.raw`), 'raw')).toBe(0);
    }
    expect((await chainform(dir, 'plan', 'manifest.yaml', '--detailed-exitcode')).exitCode).toBe(0);
  });

  it('keeps the overlays when their template is rewritten with new settings, also on the next run', async () => {
    const { dir } = ws;
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    await writeFile(
      join(dir, 'manifest.yaml'),
      MANIFEST.replace(
        'template:\n    path: out/template.qcow2',
        'template:\n    options: { cluster_size: 131072 }\n    path: out/template.qcow2',
      ),
    );
    const plan = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    expect(plan.steps.map((s: { id: string }) => s.id)).toEqual(['template:convert']);
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect((await imageInfo(join(dir, 'out/template.qcow2'), 'qcow2'))['cluster-size']).toBe(131072);
    for (const vm of ['vm1', 'vm2']) {
      expect(await compareImages(join(dir, `out/${vm}.qcow2`), 'qcow2', join(dir, `in/${vm}.raw`), 'raw')).toBe(0);
    }
    const again = await chainform(dir, 'plan', 'manifest.yaml', '--detailed-exitcode');
    expect(again.exitCode, again.stdout).toBe(0);
  });

  it('rebuilds an output when its source changed since the last apply', async () => {
    const { dir } = ws;
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    // The test owns this copy; change it and update the checksum it must keep from now on.
    await qemuIo('raw', join(dir, 'in/vm1.raw'), 'write -P 0x77 20M 64k');
    await ws.acceptInputChanges();
    const plan = await chainform(dir, 'plan', 'manifest.yaml', '--json');
    const parsed = JSON.parse(plan.stdout);
    expect(parsed.steps.map((s: { id: string }) => s.id)).toEqual(['vm1:diff']);
    expect(parsed.images.find((i: { id: string }) => i.id === 'vm1').action).toBe('replace');
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect(await compareImages(join(dir, 'out/vm1.qcow2'), 'qcow2', join(dir, 'in/vm1.raw'), 'raw')).toBe(0);
  });
});
