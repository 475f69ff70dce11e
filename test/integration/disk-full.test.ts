// Full disks: `apply` refuses a plan whose measured writes exceed the free space before it writes
// anything; forced past that check, the step fails on ENOSPC, removes its temporary file and
// leaves the input intact; after space is freed the same apply completes. The output folder is a
// small tmpfs mounted for the test (CI runs as root).
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { chainform, checkImage, checksums, compareImages, qemuImg, qemuIo, tempFolder } from '../helpers/qemu.js';

let dir = '';
let small = '';
let cleanup: () => Promise<void> = async () => undefined;

beforeEach(async () => {
  const folder = await tempFolder();
  dir = folder.dir;
  small = join(dir, 'small');
  await mkdir(small);
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=32M', 'tmpfs', small]);
  cleanup = async () => {
    await execa('umount', [small], { reject: false });
    await folder.cleanup();
  };
});

afterEach(async () => {
  await cleanup();
});

it('refuses early when the writes do not fit, fails cleanly on ENOSPC, and completes once there is room', async () => {
  await mkdir(join(dir, 'in'));
  const source = join(dir, 'in/data.raw');
  await qemuImg('create', '-q', '-f', 'raw', source, '64M');
  await qemuIo('raw', source, 'write -P 0x3c 0 48M');
  const before = await checksums([source]);
  await writeFile(
    join(dir, 'm.yaml'),
    'version: 1\nimages:\n  data: { path: small/data.qcow2, from: { path: in/data.raw, format: raw } }\n',
  );

  // The figure is qemu-img measure's, not a bound: 48 MiB of data plus qcow2 metadata.
  const planned = await chainform(dir, 'plan', 'm.yaml');
  expect(planned.exitCode).toBe(0);
  expect(planned.stdout).toMatch(/~48\.\d MiB/);
  expect(planned.stdout).toMatch(/Free space in .*small: 32\.0 MiB; this plan writes about 48\.\d MiB: does NOT fit/);

  const refused = await chainform(dir, 'apply', 'm.yaml', '--yes');
  expect(refused.exitCode).toBe(1);
  expect(refused.stderr).toMatch(/error: not enough free space in .*small: the plan writes about 48\.\d MiB there/);
  expect(await readdir(small)).toEqual([]);
  // --quiet skips measures only when the worst case fits: here it must measure. The measured
  // figure (50659328 bytes, 48.3 MiB) tells it from the planner's own (the 48.0 MiB allocated).
  const quiet = await chainform(dir, 'apply', 'm.yaml', '--yes', '--quiet');
  expect(quiet.exitCode).toBe(1);
  expect(quiet.stderr).toMatch(/error: not enough free space in .*small: the plan writes about 48\.3 MiB there/);
  expect(await readdir(small)).toEqual([]);

  const full = await chainform(dir, 'apply', 'm.yaml', '--yes', '--no-space-check');
  expect(full.exitCode).toBe(1);
  expect(full.stdout).toMatch(
    /this plan writes about 48\.\d MiB: does NOT fit \(--no-space-check: apply starts anyway\)/,
  );
  expect(full.stdout).toContain('No space left on device');
  expect(full.stdout).not.toMatch(/^\s+at /m);
  expect(await readdir(small)).toEqual([]);
  expect(await checksums([source])).toEqual(before);

  await execa('mount', ['-o', 'remount,size=128M', small]);
  const resumed = await chainform(dir, 'apply', 'm.yaml', '--yes');
  expect(resumed.exitCode).toBe(0);
  expect(await compareImages(join(small, 'data.qcow2'), 'qcow2', source, 'raw')).toBe(0);
  expect(await checkImage(join(small, 'data.qcow2'), 'qcow2')).toBe(0);
  expect(await checksums([source])).toEqual(before);
});
