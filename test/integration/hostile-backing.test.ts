// Issue 4 (in part): a backing name qemu would open as a protocol or as JSON options is refused
// before anything follows it; a file whose name merely contains a colon still works.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chainform, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const HOSTILE = {
  network: 'nbd://127.0.0.1:9/x',
  json: 'json:{"driver":"file","filename":"/etc/hostname"}',
};

const ws = useWorkspace(async (dir) => {
  // -u: qemu-img does not open the backing while creating the image.
  await qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', HOSTILE.network, '-F', 'raw', join(dir, 'net.qcow2'), '16M');
  await qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', HOSTILE.json, '-F', 'raw', join(dir, 'json.qcow2'), '16M');
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'nbd:base.qcow2'), '16M');
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', './nbd:base.qcow2', '-F', 'qcow2', join(dir, 'colon.qcow2'));
  await qemuIo('qcow2', join(dir, 'colon.qcow2'), 'write -P 0x01 0 64k');
  return ['net.qcow2', 'json.qcow2', 'nbd:base.qcow2', 'colon.qcow2'].map((f) => join(dir, f));
});

describe('hostile backing names', () => {
  it.each(Object.entries(HOSTILE))('refuses a %s backing name in plan and import', async (kind, name) => {
    const { dir } = ws;
    const file = kind === 'network' ? 'net.qcow2' : 'json.qcow2';
    await writeFile(
      join(dir, 'm.yaml'),
      `version: 1\nimages:\n  x: { path: out/x.qcow2, from: { path: ${file}, format: qcow2 } }\n`,
    );
    const plan = await chainform(dir, 'plan', 'm.yaml');
    expect(plan.exitCode).toBe(1);
    expect(plan.stderr).toContain(
      `names its backing ${JSON.stringify(name)}, which qemu would open as a protocol or as JSON options`,
    );
    // Nothing followed the link: no connection or file error from qemu is reported.
    expect(plan.stderr).not.toMatch(/Could not open|Connection refused|Failed to connect/);
    const imported = await chainform(dir, 'import', file, '-f', 'qcow2');
    expect(imported.exitCode).toBe(1);
    expect(imported.stderr).toContain('unsafe-backing-name');
  });

  it('follows a backing file whose name only contains a colon', async () => {
    const { dir } = ws;
    const imported = await chainform(dir, 'import', 'colon.qcow2', '-f', 'qcow2', '-o', 'colon.yaml');
    expect(imported.exitCode, imported.stderr).toBe(0);
    const plan = await chainform(dir, 'plan', 'colon.yaml', '--detailed-exitcode');
    expect(plan.exitCode, plan.stdout + plan.stderr).toBe(0);
  });
});
