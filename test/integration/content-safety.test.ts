// Regressions from review: cases where a plan could silently present other content than the
// manifest asks for, or leave a second plan that is not empty.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chainform, checksums, compareImages, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const ws = useWorkspace(async (dir) => {
  const d = join(dir, 'd.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', d, '16M');
  await qemuIo('qcow2', d, 'write -P 0x11 0 16M');
  const top = join(dir, 'top.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'd.qcow2', '-F', 'qcow2', top);
  await qemuIo('qcow2', top, 'write -P 0x22 0 1M');
  return [d, top];
});

async function snapshot(file: string, name: string): Promise<void> {
  await qemuImg('snapshot', '-c', name, '--image-opts', `driver=qcow2,file.filename=${file}`);
}

async function run(dir: string, manifest: string, ...args: string[]) {
  await writeFile(join(dir, 'manifest.yaml'), manifest);
  return chainform(dir, ...args, 'manifest.yaml', ...(args[0] === 'apply' ? ['--yes'] : []));
}

describe('content safety', () => {
  it('a shrunk image is not taken for its source by images backed on it', async () => {
    const { dir } = ws;
    const manifest = `version: 1
images:
  c: { path: out/c.qcow2, from: { path: d.qcow2, format: qcow2 }, size: 8M, shrink: true }
  t: { path: out/t.qcow2, from: { path: top.qcow2, format: qcow2 }, backing: c }
`;
    const r = await run(dir, manifest, 'apply');
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    const reference = join(dir, 'top.ref.raw');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', join(dir, 'top.qcow2'), reference);
    expect(await compareImages(join(dir, 'out/t.qcow2'), 'qcow2', reference, 'raw')).toBe(0);
    expect((await run(dir, manifest, 'plan', '--detailed-exitcode')).exitCode).toBe(0);
  });

  it('snapshots with the same name are different content; a name that is another id is ambiguous', async () => {
    const { dir } = ws;
    const s = join(dir, 's.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', s, '16M');
    await qemuIo('qcow2', s, 'write -P 0x01 0 1M');
    await snapshot(s, 'dup');
    await qemuIo('qcow2', s, 'write -P 0x02 0 1M');
    await snapshot(s, 'dup');
    await qemuIo('qcow2', s, 'write -P 0x03 0 1M');
    ws.inputs.push(s);
    await ws.acceptInputChanges();
    const chain = (cBacking: string) => `version: 1
images:
  a: { path: out/a.qcow2, from: { path: s.qcow2, format: qcow2, snapshot: "1" } }
  b: { path: out/b.qcow2, from: { path: s.qcow2, format: qcow2, snapshot: "2" }, backing: a }
  c: { path: out/c.qcow2, from: { path: s.qcow2, format: qcow2 }, backing: ${cBacking} }
`;
    expect((await run(dir, chain('b'), 'apply')).exitCode).toBe(0);
    const plan = JSON.parse((await run(dir, chain('a'), 'plan', '--json')).stdout);
    expect(plan.steps.map((x: { kind: string }) => x.kind)).not.toContain('repoint');
    expect((await run(dir, chain('a'), 'apply')).exitCode).toBe(0);
    expect(await compareImages(join(dir, 'out/c.qcow2'), 'qcow2', s, 'qcow2')).toBe(0);

    await snapshot(s, '1'); // a snapshot named "1" while another has id 1
    await ws.acceptInputChanges();
    const ambiguous = await run(
      dir,
      'version: 1\nimages:\n  x: { path: out/x.qcow2, from: { path: s.qcow2, format: qcow2, snapshot: "1" } }\n',
      'plan',
    );
    expect(ambiguous.stderr).toContain('"1" names more than one internal snapshot');
  });

  it('keeps the internal snapshots of an image reshaped in place, or refuses', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=32768', '-b', 'd.qcow2', '-F', 'qcow2', vm);
    await qemuIo('qcow2', vm, 'write -P 0x33 0 1M');
    await snapshot(vm, 'sn0');
    const other = join(dir, 'other.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', other, '16M');
    await qemuIo('qcow2', other, 'write -P 0x44 0 16M');
    ws.inputs.push(other);
    await ws.acceptInputChanges();
    const vmBefore = await checksums([vm]);

    const rewrite = await run(
      dir,
      'version: 1\nimages:\n  vm: { path: vm.qcow2, backing: { path: d.qcow2, format: qcow2 }, options: { cluster_size: 65536 } }\n',
      'plan',
    );
    expect(rewrite.exitCode).toBe(1);
    expect(rewrite.stderr).toContain('"vm" has internal snapshots');

    // Another base: only a repoint to identical content would keep the snapshot right.
    const repoint = await run(
      dir,
      'version: 1\nimages:\n  vm: { path: vm.qcow2, backing: { path: other.qcow2, format: qcow2 } }\n',
      'apply',
    );
    expect(repoint.exitCode).toBe(1);
    expect(repoint.stdout).toContain('the check found a difference, so nothing was changed');
    expect(await checksums([vm])).toEqual(vmBefore);
  });

  it('refuses to shrink a base in place under an image kept in place', async () => {
    const { dir } = ws;
    const r = await run(
      dir,
      'version: 1\nimages:\n  d: { path: d.qcow2, size: 8M, shrink: true }\n  top: { path: top.qcow2, backing: d }\n',
      'plan',
    );
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('"top" keeps its content in place, but its chain reads through');
  });

  it('leaves an empty second plan after amending or growing images chainform built', async () => {
    const { dir } = ws;
    const base = `version: 1
images:
  c: { path: out/c.qcow2, from: { path: d.qcow2, format: qcow2 } }
  t: { path: out/t.qcow2, from: { path: top.qcow2, format: qcow2 }, backing: c }
`;
    expect((await run(dir, base, 'apply')).exitCode).toBe(0);
    const changed = base
      .replace(
        'from: { path: top.qcow2, format: qcow2 }, backing: c }',
        'from: { path: top.qcow2, format: qcow2 }, backing: c, size: 32M, options: { lazy_refcounts: true } }',
      )
      .replace('from: { path: d.qcow2, format: qcow2 } }', 'from: { path: d.qcow2, format: qcow2 }, size: 24M }');
    const applied = await run(dir, changed, 'apply');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    const again = await run(dir, changed, 'plan', '--detailed-exitcode');
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
  });
});
