// Issue 4 (in part): one apply at a time per state folder; a lock left by a dead process is stale.
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { acquireApplyLock } from '../../src/state/apply-lock.js';
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
      join(dir, '.chainform/apply.owner.json'),
      JSON.stringify({ pid: 4194305, host: hostname(), startedAt: '2026-01-01T00:00:00.000Z' }),
    );
    const r = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(existsSync(join(dir, '.chainform/apply.lock'))).toBe(false);
  });
});
