// Issue 4 (in part): a backing name qemu would open as a protocol or as JSON options is refused
// before anything follows it; a file whose name merely contains a colon still works.
import { symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chainform, checksums, qemuImg, qemuIo } from '../helpers/qemu.js';
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

describe('backing loops hidden behind another name', () => {
  it('refuses a backing named by a symlink to another image that is backed by the first, writing nothing', async () => {
    const { dir } = ws;
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'a.qcow2'), '16M');
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'b.qcow2'), '16M');
    await symlink('b.qcow2', join(dir, 'blink.qcow2'));
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  a: { path: a.qcow2, backing: { path: blink.qcow2, format: qcow2 } }\n  b: { path: b.qcow2, backing: a }\n',
    );
    const before = await checksums([join(dir, 'a.qcow2'), join(dir, 'b.qcow2')]);
    // Applied, a would sit on b and b on a (a review saw apply write that loop).
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode).toBe(1);
    expect(applied.stderr).toContain('m.yaml:3:32: error: backing cycle: a -> b -> a [backing-cycle]');
    expect(applied.stderr).toContain(`a is backed by ${join(dir, 'blink.qcow2')}, the file of b`);
    expect(await checksums([join(dir, 'a.qcow2'), join(dir, 'b.qcow2')])).toEqual(before);
  });
});

describe('two names of one image file', () => {
  it('refuses two images whose paths are one file, before anything is written', async () => {
    const { dir } = ws;
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'x.qcow2'), '8M');
    await symlink('x.qcow2', join(dir, 'y.qcow2'));
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  x: { path: x.qcow2, size: 16M }\n  y: { path: y.qcow2, size: 32M }\n',
    );
    const before = await checksums([join(dir, 'x.qcow2')]);
    // Before, y grew it to 32M and x then failed as a shrink.
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode).toBe(1);
    expect(applied.stderr).toContain(
      `m.yaml:4:14: error: images "x" and "y" are one file: ${join(dir, 'y.qcow2')} is another name of ${join(dir, 'x.qcow2')}`,
    );
    expect(await checksums([join(dir, 'x.qcow2')])).toEqual(before);
  });
});
