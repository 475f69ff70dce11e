// Snapshots taken at another disk size than the image has now. qemu-img reads a snapshot at the
// image's current size, so one taken before the image was shrunk cannot be copied whole: plan
// and validate refuse it, located, and write nothing. One taken before the image grew is read
// at the larger size, its new end as qemu reads it (zeros here: the image has no backing file).
import { existsSync } from 'node:fs';
import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chainform, checkImage, compareImages, imageInfo, MiB, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

/** shrunk.qcow2: snapshot "wide" holds data at 3 MiB, then the image shrank to 2 MiB. grown.qcow2: 2 MiB at "narrow", now 4 MiB. */
async function makeImages(dir: string): Promise<string[]> {
  const shrunk = join(dir, 'shrunk.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', shrunk, '4M');
  await qemuIo('qcow2', shrunk, 'write -P 0xab 0 64k', `write -P 0xcd ${3 * MiB} 64k`);
  await qemuImg('snapshot', '-c', 'wide', shrunk);
  await qemuImg('resize', '-q', '--shrink', '-f', 'qcow2', shrunk, '2M');
  const grown = join(dir, 'grown.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', grown, '2M');
  await qemuIo('qcow2', grown, 'write -P 0x12 1M 64k');
  await qemuImg('snapshot', '-c', 'narrow', grown);
  await qemuImg('resize', '-q', '-f', 'qcow2', grown, '4M');
  await qemuIo('qcow2', grown, `write -P 0x34 ${3 * MiB} 64k`);
  return [shrunk, grown];
}

const ws = useWorkspace(makeImages);

const linkManifest = (image: string, snapshot: string) =>
  `version: 1\nimages:\n  old:\n    path: out/old.qcow2\n    from: { path: ${image}, format: qcow2, snapshot: ${snapshot} }\n  now:\n    path: out/now.qcow2\n    from: { path: ${image}, format: qcow2 }\n    backing: old\n`;

/** `chainform import --linearize` of one qcow2 image into `outDir`, writing `manifest`. */
const importLinearized = (dir: string, image: string, outDir: string, manifest: string) =>
  chainform(dir, 'import', '--linearize', '--out-dir', outDir, image, '-f', 'qcow2', '-o', manifest);

describe('snapshots taken at another disk size', () => {
  it('refuses a snapshot taken before the image shrank, at its line, and writes nothing', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'm.yaml'), linkManifest('shrunk.qcow2', 'wide'));
    for (const command of ['plan', 'validate', 'apply']) {
      const r = await chainform(dir, command, 'm.yaml', ...(command === 'apply' ? ['--yes'] : []));
      expect(r.exitCode, command).toBe(1);
      expect(r.stderr, command).toContain('m.yaml:5:58: error: snapshot "wide" (id 1) of');
      expect(r.stderr, command).toContain(
        "was taken when the disk was 4194304 bytes, but the image is now 2097152 bytes: qemu-img reads a snapshot at the image's current size, so a copy would lose its last 2097152 bytes [snapshot-past-image-end]",
      );
      expect(r.stderr, command).toContain(
        `hint: grow the image back first (qemu-img resize -f qcow2 ${join(dir, 'shrunk.qcow2')} 4194304;`,
      );
    }
    expect(existsSync(join(dir, 'out'))).toBe(false);
  });

  it('import --linearize warns about such a snapshot before the manifest is used', async () => {
    const { dir } = ws;
    const r = await importLinearized(dir, 'shrunk.qcow2', 'out', 'm.yaml');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain(
      'warning: snapshot "wide" (id 1) of ' +
        `${join(dir, 'shrunk.qcow2')} was taken when the disk was 4194304 bytes, but the image is now 2097152 bytes: plan will refuse its link`,
    );
    expect(existsSync(join(dir, 'm.yaml'))).toBe(true);
    const planned = await chainform(dir, 'plan', 'm.yaml');
    expect(planned.exitCode).toBe(1);
    expect(planned.stderr).toContain('[snapshot-past-image-end]');
    // A snapshot the image has only grown past is not warned about.
    const grown = await importLinearized(dir, 'grown.qcow2', 'out2', 'g.yaml');
    expect(grown.exitCode, grown.stderr).toBe(0);
    expect(grown.stderr).not.toContain('snapshot-past-image-end');
  });

  it('copies the snapshot whole once the image is grown back, as the hint says', async () => {
    const { dir } = ws;
    // A copy of the file keeps its snapshots: the hint's way to leave the input as it is.
    const copy = join(dir, 'copy.qcow2');
    await copyFile(join(dir, 'shrunk.qcow2'), copy);
    await writeFile(join(dir, 'm.yaml'), linkManifest('copy.qcow2', 'wide'));
    expect((await chainform(dir, 'plan', 'm.yaml')).exitCode).toBe(1);

    await qemuImg('resize', '-q', '-f', 'qcow2', copy, '4194304');
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes', '--verify');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    const old = join(dir, 'out/old.qcow2');
    expect((await imageInfo(old, 'qcow2'))['virtual-size']).toBe(4 * MiB);
    await qemuIo('qcow2', old, `read -P 0xcd ${3 * MiB} 64k`, 'read -P 0xab 0 64k');
    expect(await checkImage(old, 'qcow2')).toBe(0);
  });

  it("links a snapshot taken before the image grew at the image's size, its new end zeros", async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'm.yaml'), linkManifest('grown.qcow2', 'narrow'));
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes', '--verify');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    const reference = join(dir, 'narrow.raw');
    await qemuImg(
      'convert',
      '-f',
      'qcow2',
      '-l',
      'snapshot.name=narrow',
      '-O',
      'raw',
      join(dir, 'grown.qcow2'),
      reference,
    );
    expect(await compareImages(join(dir, 'out/old.qcow2'), 'qcow2', reference, 'raw')).toBe(0);
    expect((await imageInfo(join(dir, 'out/old.qcow2'), 'qcow2'))['virtual-size']).toBe(4 * MiB);
    await qemuIo('qcow2', join(dir, 'out/old.qcow2'), 'read -P 0x12 1M 64k', `read -P 0 ${3 * MiB} 64k`);
    expect(await compareImages(join(dir, 'out/now.qcow2'), 'qcow2', join(dir, 'grown.qcow2'), 'qcow2')).toBe(0);
  });
});
