// Interrupted applies: Ctrl-C stops qemu-img cleanly; a SIGKILLed chainform is cleaned up after
// (orphaned qemu-img stopped, half-written file removed) by the next apply, which completes.
import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { expect, it } from 'vitest';
import type { Journal } from '../../src/state/journal.js';
import { processRunning } from '../../src/util/process-alive.js';
import {
  chainform,
  checkImage,
  checksums,
  compareImages,
  imageInfo,
  qemuImg,
  qemuIo,
  tempFolder,
} from '../helpers/qemu.js';

const CLI = new URL('../../dist/cli.js', import.meta.url).pathname;

/**
 * The command line of a live process, '' when it is gone. A zombie counts as gone: an orphan's
 * exit status is collected by the container's init, which may never do it.
 */
async function runningCommand(pid: number | undefined): Promise<string> {
  if (pid === undefined || !(await processRunning(pid))) return '';
  return readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
}

/** The journal of a run that died (its pid is gone) in the in-place step `id` on `path`. */
async function writeKilledRunJournal(dir: string, id: string, path: string): Promise<void> {
  const gone = execa('true');
  await gone;
  await mkdir(join(dir, '.chainform'), { recursive: true });
  const journal: Journal = {
    version: 1,
    pid: gone.pid ?? 0,
    host: hostname(),
    startedAt: new Date().toISOString(),
    steps: [{ id, image: 'vm', path, status: 'running', temporaries: [], commands: [] }],
  };
  await writeFile(join(dir, '.chainform/journal.json'), JSON.stringify(journal));
}

/** Runs `apply m.yaml --yes` in `dir`, sends SIGINT once its output shows `marker`, and returns how it ended. */
async function interruptApplyAt(dir: string, marker: string) {
  const child = execa('node', [CLI, 'apply', 'm.yaml', '--yes'], { cwd: dir, reject: false, stdin: 'ignore' });
  let output = '';
  await new Promise<void>((resolve) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes(marker)) resolve();
    });
  });
  child.kill('SIGINT');
  return await child;
}

/** A 1 GiB raw input with 768 MiB of data and a manifest converting it: seconds of work to interrupt. */
async function bigConvert(dir: string): Promise<{ source: string; before: Record<string, string> }> {
  await mkdir(join(dir, 'in'));
  const source = join(dir, 'in/big.raw');
  await qemuImg('create', '-q', '-f', 'raw', source, '1G');
  await qemuIo('raw', source, 'write -P 0x05 0 768M');
  await writeFile(
    join(dir, 'm.yaml'),
    'version: 1\nimages:\n  big: { path: out/big.qcow2, from: { path: in/big.raw, format: raw } }\n',
  );
  return { source, before: await checksums([source]) };
}

it('stops cleanly on SIGINT and resumes on the next apply', async () => {
  const { dir, cleanup } = await tempFolder();
  try {
    const { source, before } = await bigConvert(dir);

    const result = await interruptApplyAt(dir, 'started  big:convert');
    expect(result.exitCode).toBe(130);
    expect(String(result.stdout)).toContain('Apply interrupted: 0 done, 1 stopped, 0 not started.');
    expect(String(result.stdout)).toContain('qemu-img convert was interrupted');
    expect(String(result.stdout)).toContain(
      'Inputs were not modified; temporary files were removed. Run apply again to go on.',
    );
    expect(await readdir(join(dir, 'out'))).toEqual([]);
    const leftover = await execa('pgrep', ['-f', `qemu-img convert .*${dir}`], { reject: false });
    expect(leftover.stdout).toBe('');
    expect(await checksums([source])).toEqual(before);

    const resumed = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(resumed.exitCode).toBe(0);
    expect(await compareImages(join(dir, 'out/big.qcow2'), 'qcow2', source, 'raw')).toBe(0);
  } finally {
    await cleanup();
  }
});

it('on SIGINT during a safe rebase in place, names the image it was changing, which still reads the same', async () => {
  const { dir, cleanup } = await tempFolder();
  try {
    // disk.qcow2 (empty) on old.raw; the manifest moves it onto new.raw, whose data differs
    // everywhere: compare stops at the first byte, then rebase copies 768 MiB into disk.qcow2.
    const [old, next, disk] = ['old.raw', 'new.raw', 'disk.qcow2'].map((name) => join(dir, name)) as [
      string,
      string,
      string,
    ];
    for (const [file, pattern] of [
      [old, 1],
      [next, 2],
    ] as const) {
      await qemuImg('create', '-q', '-f', 'raw', file, '1G');
      await qemuIo('raw', file, `write -P ${pattern} 0 768M`);
    }
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'old.raw', '-F', 'raw', disk);
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  nb: { path: new.raw, format: raw }\n  disk: { path: disk.qcow2, format: qcow2, backing: nb }\n',
    );
    const before = await checksums([old, next]);

    // Progress comes from the rebase (the compare prints none): disk.qcow2 is being written.
    const result = await interruptApplyAt(dir, 'progress disk:verified-repoint');
    expect(result.exitCode, String(result.stdout)).toBe(130);
    expect(String(result.stdout)).toContain(
      `${disk} was being changed in place when its step stopped: it (and its data file, if it has one) may hold part of the change`,
    );
    expect(String(result.stdout)).toContain(
      'Apart from that, inputs were not modified; temporary files were removed. Run apply again to go on.',
    );
    expect(await checksums([old, next])).toEqual(before);
    // A safe rebase keeps what the image presents while it copies: still old.raw's content.
    expect(await compareImages(disk, 'qcow2', old, 'raw')).toBe(0);

    const resumed = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(resumed.exitCode, resumed.stdout).toBe(0);
    expect(await compareImages(disk, 'qcow2', old, 'raw')).toBe(0);
    expect((await imageInfo(disk, 'qcow2'))['backing-filename']).toBe('new.raw');
  } finally {
    await cleanup();
  }
});

// SIGKILL of chainform itself mid-step: its qemu-img child keeps running as an orphan and the
// temporary file stays half written. The next apply finds both in the journal, stops the orphan,
// removes the file, says what it did, and completes; the input is untouched.
it('resumes after chainform is killed with SIGKILL while qemu-img runs', async () => {
  const { dir, cleanup } = await tempFolder();
  try {
    const { source, before } = await bigConvert(dir);

    const child = execa('node', [CLI, 'apply', 'm.yaml', '--yes'], { cwd: dir, reject: false, stdin: 'ignore' });
    const journalFile = join(dir, '.chainform/journal.json');
    // Wait until the journal holds the running convert's pid: that is the moment to crash.
    let journal: Journal | undefined;
    for (let i = 0; i < 400 && !journal?.steps[0]?.commands.length; i++) {
      await new Promise((r) => setTimeout(r, 25));
      journal = JSON.parse(await readFile(journalFile, 'utf8').catch(() => 'null')) ?? undefined;
    }
    const orphan = journal?.steps[0]?.commands[0];
    expect(orphan?.argv.slice(0, 2)).toEqual(['qemu-img', 'convert']);
    child.kill('SIGKILL');
    await child;
    // The orphan outlives chainform and is still writing the temporary file. It is stopped
    // (SIGSTOP) so that it still runs when the next apply comes, however fast this machine
    // copies; that apply must stop it all the same.
    expect(await runningCommand(orphan?.pid)).toContain('qemu-img\0convert');
    process.kill(orphan?.pid as number, 'SIGSTOP');
    expect((await readdir(join(dir, 'out'))).filter((n) => n !== 'big.qcow2')).toHaveLength(1);

    // plan writes nothing, so it only warns; apply is what cleans up.
    const planned = await chainform(dir, 'plan', 'm.yaml');
    expect(planned.stderr).toContain(`warning: the last apply (pid ${child.pid} on `);
    expect(planned.stderr).toContain('was killed before it finished [apply-killed]');

    const resumed = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(resumed.stderr).toBe('');
    expect(resumed.exitCode).toBe(0);
    expect(resumed.stdout).toContain(`Resuming after an apply that was killed (pid ${child.pid}`);
    expect(resumed.stdout).toContain('interrupted (will be redone): big:convert');
    expect(resumed.stdout).toContain('stopped 1 leftover command');
    expect(resumed.stdout).toContain('removed 1 half-written temporary file');
    expect(await runningCommand(orphan?.pid)).toBe('');
    expect(await readdir(join(dir, 'out'))).toEqual(['big.qcow2']);
    expect(await compareImages(join(dir, 'out/big.qcow2'), 'qcow2', source, 'raw')).toBe(0);
    expect(await checkImage(join(dir, 'out/big.qcow2'), 'qcow2')).toBe(0);
    expect(await checksums([source])).toEqual(before);
    const closed = JSON.parse(await readFile(journalFile, 'utf8')) as Journal;
    expect(closed.outcome).toBe('completed');
    expect(closed.steps.map((s) => s.status)).toEqual(['done']);

    // A clean run leaves nothing to recover: the next apply says nothing about a killed run.
    const again = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(again.exitCode).toBe(0);
    expect(again.stdout).not.toContain('Resuming');
  } finally {
    await cleanup();
  }
});

// An in-place step (here a safe rebase) killed on a lazy-refcounts image leaves its dirty flag
// set, which plan refuses (image-dirty). The journal shows the step was chainform's, so the next
// apply repairs the refcounts (qemu-img check -r all, as qemu itself would) and carries on.
it('repairs an image an interrupted in-place step left dirty, then completes', async () => {
  const { dir, cleanup } = await tempFolder();
  try {
    const base = join(dir, 'base.qcow2');
    const other = join(dir, 'other.qcow2');
    const vm = join(dir, 'vm.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', base, '16M');
    await qemuImg('create', '-q', '-f', 'qcow2', other, '16M');
    await qemuIo('qcow2', other, 'write -P 0x07 0 1M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', '-b', base, '-F', 'qcow2', vm);
    // The state a SIGKILL of the whole process group mid-rebase leaves: the dirty flag...
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x09 0 64k', '-c', 'sigraise 9', vm], { reject: false });
    expect((await imageInfo(vm, 'qcow2'))['dirty-flag']).toBe(true);
    // ...and a journal whose run died in the in-place step on vm.qcow2.
    await writeKilledRunJournal(dir, 'vm:rebase', vm);
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  vm: { path: vm.qcow2, backing: { path: other.qcow2, format: qcow2 } }\n',
    );
    expect((await chainform(dir, 'plan', 'm.yaml')).stderr).toContain('[image-dirty]');

    const resumed = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(resumed.exitCode, resumed.stdout + resumed.stderr).toBe(0);
    expect(resumed.stdout).toContain(`repaired the refcounts of ${vm} (left dirty by the interrupted step)`);
    expect((await imageInfo(vm, 'qcow2'))['dirty-flag']).toBe(false);
    expect(await checkImage(vm, 'qcow2')).toBe(0);
    expect((await imageInfo(vm, 'qcow2'))['backing-filename']).toBe('other.qcow2');
  } finally {
    await cleanup();
  }
});

// The same state on an image whose header names its data file by a relative name, with the next
// apply run from another folder, which holds another disk's file of that name: the repair would
// open that file read-write (qemu opens such a name from its working directory), so it is left
// undone and said, and the plan refuses the image.
it('does not repair a dirty image whose relative data-file name leads to another file from here', async () => {
  const { dir, cleanup } = await tempFolder();
  try {
    const vmDir = join(dir, 'vm');
    await mkdir(vmDir);
    const vm = join(vmDir, 'vm.qcow2');
    await execa(
      'qemu-img',
      ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on,data_file=vm.data', 'vm.qcow2', '16M'],
      {
        cwd: vmDir,
      },
    );
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x09 0 64k', '-c', 'sigraise 9', 'vm.qcow2'], {
      cwd: vmDir,
      reject: false,
    });
    expect((await imageInfo(vm, 'qcow2'))['dirty-flag']).toBe(true);
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 'vm.data'), '16M');
    await qemuIo('raw', join(dir, 'vm.data'), 'write -P 0x44 0 1M');
    const before = await checksums([vm, join(vmDir, 'vm.data'), join(dir, 'vm.data')]);
    await writeKilledRunJournal(dir, 'vm:amend', vm);
    await writeFile(join(dir, 'm.yaml'), 'version: 1\nimages:\n  vm: { path: vm/vm.qcow2 }\n');

    const r = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(r.exitCode, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toContain(`could not repair ${vm}: ${vm} keeps its guest data in the file named "vm.data"`);
    // The repair to run by hand runs beside the image, where qemu finds its data file.
    expect(r.stdout).toContain(`repair it with \`cd ${vmDir} && qemu-img check -r all -f qcow2 ${vm}\``);
    expect(r.stderr).toContain('[relative-data-file]');
    expect(await checksums([vm, join(vmDir, 'vm.data'), join(dir, 'vm.data')])).toEqual(before);

    // A name that cannot even be looked up here (a loop of symlinks) is no other file's: refused.
    await rm(join(dir, 'vm.data'));
    await symlink('vm.data', join(dir, 'vm.data'));
    await writeKilledRunJournal(dir, 'vm:amend', vm);
    const looped = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(looped.exitCode, looped.stdout + looped.stderr).toBe(1);
    expect(looped.stderr).not.toContain('internal error');
    expect(looped.stdout).toContain(`could not repair ${vm}`);
    expect(looped.stderr).toContain('[relative-data-file]');
  } finally {
    await cleanup();
  }
});
