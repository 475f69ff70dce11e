// Issue 4 (in part): one apply at a time per state folder; a lock left by a dead process is stale.
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { acquireApplyLock } from '../../src/state/apply-lock.js';
import { processAlive } from '../../src/util/process-alive.js';
import { chainform, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const ws = useWorkspace(async (dir) => {
  const source = join(dir, 'in.raw');
  await qemuImg('create', '-q', '-f', 'raw', source, '8M');
  await qemuIo('raw', source, 'write -P 0x01 0 1M');
  await writeFile(
    join(dir, 'manifest.yaml'),
    'version: 1\nimages:\n  a: { path: out/a.qcow2, from: { path: in.raw, format: raw } }\n',
  );
  return [source];
});

describe('apply lock', () => {
  it('refuses a second apply while one holds the lock, naming the holder', async () => {
    const { dir } = ws;
    const held = await acquireApplyLock(dir);
    if (!held.ok) throw new Error('could not take the lock');
    try {
      const r = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(
        `another apply is running for this manifest's folder (process ${process.pid} on ${hostname()}, running since `,
      );
      expect(existsSync(join(dir, 'out'))).toBe(false);
    } finally {
      await held.release();
    }
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
  });

  it('takes over a lock left by a process that is gone', async () => {
    const { dir } = ws;
    // A lock and owner file as a killed apply leaves them; pid 2^22+1 is above Linux's pid_max.
    await mkdir(join(dir, '.chainform/apply.lock'), { recursive: true });
    await writeFile(
      join(dir, '.chainform/apply.owner.4194305.json'),
      JSON.stringify({ pid: 4194305, host: hostname(), startedAt: '2026-01-01T00:00:00.000Z' }),
    );
    const r = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(existsSync(join(dir, '.chainform/apply.lock'))).toBe(false);
    expect(existsSync(join(dir, '.chainform/apply.owner.4194305.json'))).toBe(false);
  });

  it('takes over a lock whose holder was killed and is a zombie its parent has not collected yet', async () => {
    const { dir } = ws;
    // sh starts `sleep 0`, prints its pid and becomes `sleep 30`, which never collects it.
    const parent = execa('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30']);
    try {
      const zombie = await new Promise<number>((resolve) =>
        parent.stdout?.once('data', (d) => resolve(Number(`${d}`))),
      );
      let state = '';
      for (let i = 0; i < 100 && state !== 'Z'; i++) {
        await new Promise((r) => setTimeout(r, 20));
        const stat = await readFile(`/proc/${zombie}/stat`, 'utf8');
        state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      }
      expect(state).toBe('Z');
      expect(processAlive(zombie)).toBe(false);
      expect(processAlive(parent.pid as number)).toBe(true);
      await mkdir(join(dir, '.chainform/apply.lock'), { recursive: true });
      await writeFile(
        join(dir, `.chainform/apply.owner.${zombie}.json`),
        JSON.stringify({ pid: zombie, host: hostname(), startedAt: new Date().toISOString() }),
      );
      const r = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
      expect(r.exitCode, r.stderr).toBe(0);
      expect(existsSync(join(dir, `.chainform/apply.owner.${zombie}.json`))).toBe(false);
    } finally {
      parent.kill('SIGKILL');
      await parent.catch(() => undefined);
    }
  });
});

describe('images in use', () => {
  it('takes over a fresh lock no live process has claimed', async () => {
    const { dir } = ws;
    // Every process names itself before it tries the lock, so a fresh lock with no owner file
    // of a live process was left by a killed run: it is taken over at once, not after 30 s.
    await mkdir(join(dir, '.chainform/apply.lock'), { recursive: true });
    const r = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(r.exitCode, r.stderr).toBe(0);
  });

  it('cleans up write-file-atomic leftovers in the state folder', async () => {
    const { dir } = ws;
    await mkdir(join(dir, '.chainform'), { recursive: true });
    await writeFile(join(dir, '.chainform/journal.json.2763091721'), '{"half":');
    await writeFile(join(dir, '.chainform/ledger.json.1714029035'), '{"half":');
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect((await readdir(join(dir, '.chainform'))).sort()).toEqual(['journal.json', 'ledger.json']);
  });

  it('refuses to plan or apply while qemu-nbd holds an image open for writing', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', vm, '8M');
    await writeFile(
      join(dir, 'inuse.yaml'),
      'version: 1\nimages:\n  vm: { path: vm.qcow2, options: { lazy_refcounts: true } }\n',
    );
    // A writable export, as a running VM would hold it.
    const server = execa('qemu-nbd', ['-f', 'qcow2', '-k', join(dir, 'nbd.sock'), vm], { reject: false });
    try {
      for (let i = 0; i < 100 && !existsSync(join(dir, 'nbd.sock')); i++) await new Promise((r) => setTimeout(r, 20));
      for (const command of ['plan', 'apply']) {
        const r = await chainform(dir, command, 'inuse.yaml', ...(command === 'apply' ? ['--yes'] : []));
        expect(r.exitCode, command).toBe(1);
        expect(r.stderr, command).toContain(
          `inuse.yaml:3:15: error: ${vm} is in use: another process holds it open for writing`,
        );
      }
    } finally {
      server.kill('SIGTERM');
      await server;
    }
    const after = await chainform(dir, 'plan', 'inuse.yaml', '--json');
    expect(JSON.parse(after.stdout).steps.map((s: { kind: string }) => s.kind)).toEqual(['amend']);
  });
});
