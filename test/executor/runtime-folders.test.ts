// The reaper of runtime folders left by killed runs touches only what chainform made: exact
// `chainform-<pid>-XXXXXX` folders of this user with mode 0700 whose owner is gone, and only
// qemu-nbd/qemu-img processes working in them. Run against a private TMPDIR with real processes.
import { chmod, mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { reapOrphanedRuntimeFolders } from '../../src/executor/runtime-folders.js';
import { tempFolder } from '../helpers/qemu.js';

let root = '';
let cleanup = async () => undefined as unknown;
const savedTmp = process.env.TMPDIR;

beforeEach(async () => {
  const folder = await tempFolder();
  root = folder.dir;
  cleanup = folder.cleanup;
  process.env.TMPDIR = root;
});

afterEach(async () => {
  if (savedTmp === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = savedTmp;
  await cleanup();
});

/** A pid that no longer exists. */
async function deadPid(): Promise<number> {
  const done = execa('true');
  await done;
  return done.pid ?? 0;
}

it('removes an orphaned folder and stops its qemu-nbd, and nothing that only looks similar', async () => {
  const dead = await deadPid();
  // Ours: exact name, mode 0700 (mkdtemp), owner gone, a qemu-nbd serving from it.
  const ours = await mkdtemp(join(root, `chainform-${dead}-`));
  await execa('qemu-img', ['create', '-q', '-f', 'raw', join(root, 'disk.raw'), '1M']);
  const socket = join(ours, 'source.sock');
  const nbd = execa('qemu-nbd', ['-r', '-t', '-f', 'raw', '-k', socket, join(root, 'disk.raw')], { reject: false });
  // Not ours: other names, a folder with another mode, and a non-qemu process in an orphan folder.
  await mkdir(join(root, 'chainform-2024-release-notes'));
  await writeFile(join(root, 'chainform-2024-release-notes/draft.md'), 'notes');
  await writeFile(join(root, `chainform-${dead}-build.log`), 'log');
  const open = join(root, `chainform-${dead}-AbCdEf`);
  await mkdir(open);
  await chmod(open, 0o755);
  const other = await mkdtemp(join(root, `chainform-${dead}-`));
  await writeFile(join(other, 'notes.txt'), 'x');
  const tail = execa('tail', ['-f', join(other, 'notes.txt')], { reject: false });
  for (let i = 0; i < 100 && !(await readdir(ours)).includes('source.sock'); i++)
    await new Promise((r) => setTimeout(r, 20));

  await reapOrphanedRuntimeFolders();

  const ended = await nbd;
  expect(ended.signal ?? `exit ${ended.exitCode}`).toMatch(/^(SIGTERM|exit 0)$/);
  const left = await readdir(root);
  expect(left).not.toContain(ours.slice(root.length + 1));
  expect(left).toEqual(
    expect.arrayContaining(['chainform-2024-release-notes', `chainform-${dead}-build.log`, `chainform-${dead}-AbCdEf`]),
  );
  // tail is not a chainform helper: it is never signalled.
  expect([tail.exitCode, tail.signalCode]).toEqual([null, null]);
  tail.kill();
  await tail;
});
