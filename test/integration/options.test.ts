// Issue 3, options: amend in place where qemu-img amend can, convert where it cannot; grow;
// refuse a shrink unless asked. The reshaped overlay is the manifest's own in-place image; its
// base is an input and must not change.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chainform, checkImage, checksums, compareImages, imageInfo, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const ws = useWorkspace(async (dir) => {
  const base = join(dir, 'base.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', base, '64M');
  await qemuIo('qcow2', base, 'write -P 0x01 0 32M');
  return [base];
});

/** An overlay on base.qcow2 with zeros over base data and some data of its own; its content as raw. */
async function makeOverlay(dir: string, createOptions: string): Promise<string> {
  const vm = join(dir, 'vm.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', createOptions, '-b', 'base.qcow2', '-F', 'qcow2', vm);
  await qemuIo('qcow2', vm, 'write -z 1M 2M', 'write -P 0x02 8M 1M');
  const reference = join(dir, 'reference.raw');
  await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', vm, reference);
  return reference;
}

function manifest(vm: string): string {
  return `version: 1\nimages:\n  base: { path: base.qcow2 }\n  vm:\n    path: vm.qcow2\n    backing: base\n${vm}`;
}

async function planKinds(dir: string): Promise<string[]> {
  const r = await chainform(dir, 'plan', 'manifest.yaml', '--json');
  return JSON.parse(r.stdout).steps.map((s: { kind: string }) => s.kind);
}

async function format(dir: string): Promise<Record<string, unknown>> {
  const info = await imageInfo(join(dir, 'vm.qcow2'), 'qcow2');
  return {
    ...(info['format-specific'] as { data: Record<string, unknown> }).data,
    size: info['virtual-size'],
    cluster: info['cluster-size'],
  };
}

describe('options and size', () => {
  it('downgrades to compat 0.10 and back in place with amend, keeping content with zero clusters', async () => {
    const { dir } = ws;
    const reference = await makeOverlay(dir, 'compat=1.1');
    for (const compat of ['0.10', '1.1']) {
      await writeFile(join(dir, 'manifest.yaml'), manifest(`    options: { compat: "${compat}" }\n`));
      expect(await planKinds(dir)).toEqual(['amend']);
      const r = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
      expect(r.exitCode, r.stdout + r.stderr).toBe(0);
      expect((await format(dir)).compat).toBe(compat);
      expect(await compareImages(join(dir, 'vm.qcow2'), 'qcow2', reference, 'raw')).toBe(0);
      expect(await checkImage(join(dir, 'vm.qcow2'), 'qcow2')).toBe(0);
      expect(await planKinds(dir)).toEqual([]);
    }
  });

  it('refuses a downgrade the image cannot take, naming why, until the manifest drops the feature', async () => {
    const { dir } = ws;
    const reference = await makeOverlay(dir, 'lazy_refcounts=on');
    await writeFile(join(dir, 'manifest.yaml'), manifest('    options: { compat: "0.10" }\n'));
    const refused = await chainform(dir, 'plan', 'manifest.yaml');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(
      'manifest.yaml:7:16: error: "vm" cannot be downgraded to compat 0.10 in place: lazy_refcounts is on (add lazy_refcounts: false)',
    );
    await writeFile(join(dir, 'manifest.yaml'), manifest('    options: { compat: "0.10", lazy_refcounts: false }\n'));
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect(await format(dir)).toMatchObject({ compat: '0.10' });
    expect(await compareImages(join(dir, 'vm.qcow2'), 'qcow2', reference, 'raw')).toBe(0);
  });

  it('turns lazy_refcounts on and off in place', async () => {
    const { dir } = ws;
    await makeOverlay(dir, 'compat=1.1');
    for (const lazy of [true, false]) {
      await writeFile(join(dir, 'manifest.yaml'), manifest(`    options: { lazy_refcounts: ${lazy} }\n`));
      expect(await planKinds(dir)).toEqual(['amend']);
      expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
      expect((await format(dir))['lazy-refcounts']).toBe(lazy);
      expect(await checkImage(join(dir, 'vm.qcow2'), 'qcow2')).toBe(0);
    }
  });

  it('grows to a declared size, refuses to shrink unless asked, and shrinks when asked', async () => {
    const { dir } = ws;
    const reference = await makeOverlay(dir, 'compat=1.1');
    await writeFile(join(dir, 'manifest.yaml'), manifest('    size: 128M\n'));
    expect(await planKinds(dir)).toEqual(['resize']);
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect((await format(dir)).size).toBe(128 * 1024 * 1024);
    expect(await compareImages(join(dir, 'vm.qcow2'), 'qcow2', reference, 'raw')).toBe(0);

    await writeFile(join(dir, 'manifest.yaml'), manifest('    size: 96M\n'));
    const refused = await chainform(dir, 'plan', 'manifest.yaml');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain('manifest.yaml:7:11: error: "vm" would shrink from 134217728 to 100663296 bytes');
    expect(refused.stderr).toContain('hint: add `shrink: true`');

    await writeFile(join(dir, 'manifest.yaml'), manifest('    size: 96M\n    shrink: true\n'));
    const plan = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    expect(plan.steps[0].commands[0].argv).toContain('--shrink');
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect((await format(dir)).size).toBe(96 * 1024 * 1024);
    expect(await checkImage(join(dir, 'vm.qcow2'), 'qcow2')).toBe(0);
  });

  it('refuses to grow a compat 0.10 image over a larger backing (qemu cannot hide the backing there), and grows it as 1.1', async () => {
    const { dir } = ws;
    // A backing of the test's own, with data past the overlay's end: growing must not expose it.
    const big = join(dir, 'big.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', big, '16M');
    await qemuIo('qcow2', big, 'write -P 0x66 10M 1M');
    const small = join(dir, 'small.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'big.qcow2', '-F', 'qcow2', small, '8M');
    const layout = (options: string) =>
      `version: 1\nimages:\n  s: { path: small.qcow2, backing: { path: big.qcow2, format: qcow2 }, size: 16M${options} }\n`;
    await writeFile(join(dir, 'manifest.yaml'), layout(''));
    const before = await checksums([small, big]);
    const refused = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(
      'manifest.yaml:3:78: error: "s" cannot grow from 8388608 to 16777216 bytes on a backing of 16777216 bytes',
    );
    expect(refused.stderr).toContain('[grow-needs-zero-clusters]');
    expect(await checksums([small, big])).toEqual(before);

    await writeFile(join(dir, 'manifest.yaml'), layout(', options: { compat: "1.1" }'));
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect((await imageInfo(small, 'qcow2'))['virtual-size']).toBe(16 * 1024 * 1024);
    // The grown area reads as zeros, not as the backing's 0x66 at 10 MiB.
    await qemuIo('qcow2', small, 'read -P 0 8M 8M');
    expect(await checkImage(small, 'qcow2')).toBe(0);
  });

  it('refuses a grow over a larger backing for a new compat v2 copy and a qed image too', async () => {
    const { dir } = ws;
    const big = join(dir, 'big.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', big, '16M');
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'src.qcow2'), '8M');
    await qemuImg('create', '-q', '-f', 'qed', '-b', 'big.qcow2', '-F', 'qcow2', join(dir, 's.qed'), '8M');
    const cases = {
      'compat 0.10 has no zero clusters':
        '  c: { path: out/c.qcow2, from: { path: src.qcow2, format: qcow2 }, backing: { path: big.qcow2, format: qcow2 }, options: { compat: v2 }, size: 16M }\n',
      'qed cannot zero it on a resize':
        '  s: { path: s.qed, format: qed, backing: { path: big.qcow2, format: qcow2 }, size: 16M }\n',
    };
    for (const [why, image] of Object.entries(cases)) {
      await writeFile(join(dir, 'manifest.yaml'), `version: 1\nimages:\n${image}`);
      const refused = await chainform(dir, 'plan', 'manifest.yaml');
      expect(refused.exitCode, refused.stderr).toBe(1);
      expect(refused.stderr).toContain(`and ${why} [grow-needs-zero-clusters]`);
    }
  });

  it('takes a backing the manifest also grows at its grown size when a compat 0.10 image grows on it', async () => {
    const { dir } = ws;
    // Whichever of the two resizes runs first (or both at once), b may be 16M when v grows:
    // refused, as a 16M backing is (a review saw apply fail midway when b grew first).
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'b.qcow2'), '8M');
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'old.qcow2'), '8M');
    const v = join(dir, 'v.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'old.qcow2', '-F', 'qcow2', v);
    await writeFile(
      join(dir, 'manifest.yaml'),
      'version: 1\nimages:\n  b: { path: b.qcow2, size: 16M }\n  v: { path: v.qcow2, backing: { path: b.qcow2, format: qcow2 }, size: 16M }\n',
    );
    const before = await checksums([v, join(dir, 'b.qcow2')]);
    const refused = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain('"v" cannot grow from 8388608 to 16777216 bytes on a backing of 16777216 bytes');
    expect(await checksums([v, join(dir, 'b.qcow2')])).toEqual(before);
  });

  it('refuses lazy refcounts on a compat 0.10 image whose manifest keeps its compat, naming the fix', async () => {
    const { dir } = ws;
    await makeOverlay(dir, 'compat=0.10');
    await writeFile(join(dir, 'manifest.yaml'), manifest('    options: { lazy_refcounts: true }\n'));
    const refused = await chainform(dir, 'plan', 'manifest.yaml');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(
      'error: "vm" is a compat 0.10 image, and lazy_refcounts: true needs compat 1.1 [needs-compat-1.1]',
    );
    expect(refused.stderr).toContain('hint: add compat: "1.1" to its options');
    await writeFile(join(dir, 'manifest.yaml'), manifest('    options: { lazy_refcounts: true, compat: "1.1" }\n'));
    expect(await planKinds(dir)).toEqual(['amend']);
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect(await format(dir)).toMatchObject({ compat: '1.1', 'lazy-refcounts': true });
  });

  it('measures a backing named by path at the size the plan gives it, as the next plan would', async () => {
    const { dir } = ws;
    await makeOverlay(dir, 'compat=1.1');
    // base.qcow2 grows to 128M as an image of the manifest; vm names it by path and stays smaller.
    await writeFile(
      join(dir, 'manifest.yaml'),
      'version: 1\nimages:\n  base: { path: base.qcow2, size: 128M }\n  vm: { path: vm.qcow2, backing: { path: base.qcow2, format: qcow2 }, size: 96M }\n',
    );
    const refused = await chainform(dir, 'plan', 'manifest.yaml');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(
      'error: the backing of "vm" (134217728 bytes) is larger than the image itself (100663296 bytes) [backing-larger]',
    );
  });

  it('changes cluster_size through a convert that keeps the backing, with the plan saying why', async () => {
    const { dir } = ws;
    const reference = await makeOverlay(dir, 'cluster_size=512');
    await writeFile(join(dir, 'manifest.yaml'), manifest('    options: { cluster_size: 65536 }\n'));
    const plan = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    expect(plan.steps.map((s: { kind: string }) => s.kind)).toEqual(['convert-keep-backing']);
    expect(plan.steps[0].reason).toContain('cluster_size 512 -> 65536');
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect(await format(dir)).toMatchObject({ cluster: 65536 });
    expect((await imageInfo(join(dir, 'vm.qcow2'), 'qcow2'))['backing-filename']).toBe('base.qcow2');
    expect(await compareImages(join(dir, 'vm.qcow2'), 'qcow2', reference, 'raw')).toBe(0);
    expect(await planKinds(dir)).toEqual([]);
  });
});
