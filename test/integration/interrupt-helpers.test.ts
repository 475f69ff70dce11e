// Ctrl-C while a step serves a snapshot through qemu-nbd: the export is stopped, its private
// runtime folder removed, no temporary image is left, and the input is unchanged.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { expect, it } from 'vitest';
import { checksums, compareImages, qemuImg, qemuIo, tempFolder } from '../helpers/qemu.js';

const CLI = new URL('../../dist/cli.js', import.meta.url).pathname;

/** A 1 GiB disk with two snapshots (768 MiB written, then 64 MiB changed) and a manifest for it. */
async function makeDisk(dir: string): Promise<string> {
  const image = join(dir, 'disk.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', image, '1G');
  await qemuIo('qcow2', image, 'write -P 0x01 0 768M');
  await qemuImg('snapshot', '-c', 'sn0', '--image-opts', `driver=qcow2,file.filename=${image}`);
  // sn1 differs in 256 MiB: the delta step reads them through the export for long enough to be
  // interrupted even at this machine's fastest (64 MiB took under 300 ms).
  await qemuIo('qcow2', image, 'write -P 0x02 0 256M');
  await qemuImg('snapshot', '-c', 'sn1', '--image-opts', `driver=qcow2,file.filename=${image}`);
  await writeFile(
    join(dir, 'm.yaml'),
    `version: 1
images:
  base: { path: out/base.qcow2, from: { path: disk.qcow2, format: qcow2, snapshot: sn0 } }
  next: { path: out/next.qcow2, from: { path: disk.qcow2, format: qcow2, snapshot: sn1 }, backing: base }
`,
  );
  return image;
}

/**
 * Starts `apply` and resolves once the snapshot delta step has started. The process is wrapped:
 * an async function returning it directly would wait for it (it is thenable).
 */
async function applyUntilDeltaStarts(dir: string, env: Record<string, string> = {}) {
  // One step at a time, so that the base is done when the delta starts.
  const child = execa('node', [CLI, 'apply', 'm.yaml', '--yes', '--jobs', '1'], {
    cwd: dir,
    env,
    reject: false,
    stdin: 'ignore',
  });
  let output = '';
  await new Promise<void>((resolve) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('started  next:')) resolve();
    });
  });
  // Let the export come up and the delta's copy start.
  for (let i = 0; i < 100; i++) {
    const nbd = await execa('pgrep', ['-f', `qemu-nbd.*${dir}`], { reject: false });
    if (nbd.stdout) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
  return { child };
}

it('stops helpers left by a run killed with SIGKILL on the next apply, which completes', async () => {
  const { dir, cleanup } = await tempFolder();
  try {
    const image = await makeDisk(dir);
    const before = await checksums([image]);
    // Its own temp folder: another test's apply meanwhile would stop the export first (every
    // apply reaps the orphaned runtime folders it finds), and this one would have nothing to report.
    const env = { TMPDIR: join(dir, 'tmp') };
    await mkdir(env.TMPDIR);
    const { child } = await applyUntilDeltaStarts(dir, env);
    child.kill('SIGKILL');
    await child;
    // The killed run could not stop its export: it still holds the image open.
    expect((await execa('pgrep', ['-af', `qemu-nbd.*${dir}`], { reject: false })).stdout).toContain(
      'snapshot.name=sn1',
    );
    const again = await execa('node', [CLI, 'apply', 'm.yaml', '--yes'], {
      cwd: dir,
      env,
      reject: false,
      stdin: 'ignore',
    });
    expect(again.exitCode, String(again.stdout)).toBe(0);
    expect((await execa('pgrep', ['-af', `qemu-nbd.*${dir}`], { reject: false })).stdout).toBe('');
    // The cleanup says what it stopped.
    expect(again.stdout).toContain('stopped 1 leftover helper (qemu-nbd)');
    const reference = join(dir, 'sn1.raw');
    await qemuImg('convert', '-f', 'qcow2', '-l', 'snapshot.name=sn1', '-O', 'raw', image, reference);
    expect(await compareImages(join(dir, 'out/next.qcow2'), 'qcow2', reference, 'raw')).toBe(0);
    expect(await checksums([image])).toEqual(before);
  } finally {
    await cleanup();
  }
});

it('stops a helper whose owner was killed before anything recorded it, by the folder it names', async () => {
  const { dir, cleanup } = await tempFolder();
  try {
    const image = await makeDisk(dir);
    // A runtime folder named after an owner that is gone, and an export serving from it: what a
    // SIGKILL an instant after the helper was spawned leaves.
    const gone = execa('true');
    await gone;
    const folder = await mkdtemp(join(tmpdir(), `chainform-${gone.pid}-`));
    const socket = join(folder, 'source.sock');
    const helper = execa('qemu-nbd', ['-r', '-t', '-f', 'qcow2', '-l', 'snapshot.name=sn1', '-k', socket, image], {
      reject: false,
      detached: true,
    });
    for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(socket)).toBe(true);

    const again = await execa('node', [CLI, 'apply', 'm.yaml', '--yes'], { cwd: dir, reject: false, stdin: 'ignore' });
    expect(again.exitCode, String(again.stdout)).toBe(0);
    // qemu-nbd exits 0 on SIGTERM; awaiting it proves the reaper stopped it.
    const ended = await helper;
    expect(ended.signal ?? `exit ${ended.exitCode}`).toMatch(/^(SIGTERM|exit 0)$/);
    expect(existsSync(folder)).toBe(false);
  } finally {
    await cleanup();
  }
});

it('stops qemu-nbd exports and removes their folder on SIGINT', async () => {
  const { dir, cleanup } = await tempFolder();
  try {
    const image = await makeDisk(dir);
    const before = await checksums([image]);
    const { child } = await applyUntilDeltaStarts(dir);
    // This run's runtime folders are named after its pid (other tests' runs may have theirs).
    const runtimes = async () => (await readdir(tmpdir())).filter((f) => f.startsWith(`chainform-${child.pid}-`));
    expect(await runtimes()).toHaveLength(1);
    child.kill('SIGINT');
    const result = await child;
    expect(result.exitCode).toBe(130);
    expect(String(result.stdout)).toContain('Apply interrupted: 1 done, 1 stopped, 0 not started.');
    const nbd = await execa('pgrep', ['-af', `qemu-nbd.*${dir}`], { reject: false });
    expect(nbd.stdout).toBe('');
    expect(await runtimes()).toEqual([]);
    expect((await readdir(join(dir, 'out'))).sort()).toEqual(['base.qcow2']);
    expect(await checksums([image])).toEqual(before);
  } finally {
    await cleanup();
  }
});
