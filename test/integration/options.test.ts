// Issue 3, options: amend in place where qemu-img amend can, convert where it cannot; grow;
// refuse a shrink unless asked. The reshaped overlay is the manifest's own in-place image; its
// base is an input and must not change.
import { writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  chainform,
  checkImage,
  checksums,
  compareImages,
  imageInfo,
  qemuImg,
  qemuIo,
  topLayerDataBytes,
} from '../helpers/qemu.js';
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

/** What `image` presents, as raw, grown with zeros to `size` (what it must present once grown). */
async function paddedContent(dir: string, image: string, imageFormat: string, size: string): Promise<string> {
  const reference = join(dir, `${basename(image)}.grown.raw`);
  await qemuImg('convert', '-f', imageFormat, '-O', 'raw', image, reference);
  await qemuImg('resize', '-q', '-f', 'raw', reference, size);
  return reference;
}

function manifest(vm: string): string {
  return `version: 1\nimages:\n  base: { path: base.qcow2 }\n  vm:\n    path: vm.qcow2\n    backing: base\n${vm}`;
}

async function planKinds(dir: string): Promise<string[]> {
  const r = await chainform(dir, 'plan', 'manifest.yaml', '--json');
  return JSON.parse(r.stdout).steps.map((s: { kind: string }) => s.kind);
}

/** What qemu-img info says of a qcow2 image (vm.qcow2 when given its folder). */
async function format(dirOrImage: string): Promise<Record<string, unknown>> {
  const info = await imageInfo(dirOrImage.endsWith('.qcow2') ? dirOrImage : join(dirOrImage, 'vm.qcow2'), 'qcow2');
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

  it('grows a compat 0.10 image over a larger backing as a new file of its final size (qemu cannot zero on a resize)', async () => {
    const { dir } = ws;
    // A backing of the test's own, with data past the overlay's end: growing must not expose it.
    const big = join(dir, 'big.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', big, '16M');
    await qemuIo('qcow2', big, 'write -P 0x66 0 16M');
    const small = join(dir, 'small.qcow2');
    await qemuImg(
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      'compat=0.10,cluster_size=4096',
      '-b',
      'big.qcow2',
      '-F',
      'qcow2',
      small,
      '8M',
    );
    await qemuIo('qcow2', small, 'write -P 0x05 1M 1M');
    const reference = await paddedContent(dir, small, 'qcow2', '16M');
    await writeFile(
      join(dir, 'manifest.yaml'),
      'version: 1\nimages:\n  s: { path: small.qcow2, backing: { path: big.qcow2, format: qcow2 }, size: 16M }\n',
    );
    const bigBefore = await checksums([big]);
    const plan = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    expect(plan.steps.map((s: { kind: string }) => s.kind)).toEqual(['diff']);
    expect(plan.steps[0].commands[0].argv.at(-1)).toBe(String(16 * 1024 * 1024));
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    // The manifest names neither compat nor cluster size: the new file keeps both.
    expect(await format(small)).toMatchObject({ compat: '0.10', cluster: 4096, size: 16 * 1024 * 1024 });
    // The grown area reads as zeros, not as the backing's 0x66.
    expect(await compareImages(small, 'qcow2', reference, 'raw')).toBe(0);
    // Compat 0.10 stores every zero over the backing's data as data: the plan's bound covers it.
    expect(plan.steps[0].expectedWriteBytes).toBeGreaterThanOrEqual(await topLayerDataBytes(small, 'qcow2'));
    expect(await checkImage(small, 'qcow2')).toBe(0);
    expect(await checksums([big])).toEqual(bigBefore);
    expect(await planKinds(dir)).toEqual([]);
  });

  it('grows in place a compat 0.10 image whose manifest declares 0.10, through compat 1.1, writing only the grown area', async () => {
    const { dir } = ws;
    const big = join(dir, 'big.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', big, '16M');
    await qemuIo('qcow2', big, 'write -P 0x66 0 16M');
    const makeSmall = async (name: string) => {
      const file = join(dir, name);
      await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'big.qcow2', '-F', 'qcow2', file, '8M');
      await qemuIo('qcow2', file, 'write -P 0x05 1M 1M');
      return file;
    };
    const small = await makeSmall('small.qcow2');
    const reference = await paddedContent(dir, small, 'qcow2', '16M');
    const declared = (name: string) =>
      `version: 1\nimages:\n  s: { path: ${name}, backing: { path: big.qcow2, format: qcow2 }, size: 16M, options: { compat: "0.10" } }\n`;
    await writeFile(join(dir, 'manifest.yaml'), declared('small.qcow2'));
    const bigBefore = await checksums([big]);
    const plan = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    expect(plan.steps.map((s: { kind: string }) => s.kind)).toEqual(['resize']);
    expect(plan.steps[0].commands.map((c: { argv: string[] }) => c.argv.slice(1, 2).concat(c.argv.slice(-2)))).toEqual([
      ['amend', 'compat=1.1', small],
      ['resize', small, String(16 * 1024 * 1024)],
      ['amend', 'compat=0.10', small],
    ]);
    // The grown 8 MiB over the backing's data, written out as zeros; nothing else is read or copied.
    expect(plan.steps[0].expectedWriteBytes).toBe(8 * 1024 * 1024);
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect(await format(small)).toMatchObject({ compat: '0.10', size: 16 * 1024 * 1024 });
    expect(await compareImages(small, 'qcow2', reference, 'raw')).toBe(0);
    // Its own 1 MiB and the grown 8 MiB: the diff of a rewrite would have read the whole chain twice.
    expect(await topLayerDataBytes(small, 'qcow2')).toBe(9 * 1024 * 1024);
    expect(await checkImage(small, 'qcow2')).toBe(0);
    expect(await checksums([big])).toEqual(bigBefore);
    expect(await planKinds(dir)).toEqual([]);

    // Grown past the backing's end: zeros are written only where the backing has data; the rest
    // is grown by a plain resize once the backing is no larger than the image.
    const past = await makeSmall('past.qcow2');
    const pastReference = await paddedContent(dir, past, 'qcow2', '24M');
    await writeFile(join(dir, 'manifest.yaml'), declared('past.qcow2').replace('size: 16M', 'size: 24M'));
    const pastPlan = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    expect(pastPlan.steps[0].commands.map((c: { argv: string[] }) => `${c.argv[1]} ${c.argv.at(-1)}`)).toEqual([
      `amend ${past}`,
      `resize ${16 * 1024 * 1024}`,
      `amend ${past}`,
      `resize ${24 * 1024 * 1024}`,
    ]);
    expect(pastPlan.steps[0].expectedWriteBytes).toBe(8 * 1024 * 1024);
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect(await format(past)).toMatchObject({ compat: '0.10', size: 24 * 1024 * 1024 });
    expect(await compareImages(past, 'qcow2', pastReference, 'raw')).toBe(0);
    expect(await topLayerDataBytes(past, 'qcow2')).toBe(9 * 1024 * 1024);
    expect(await checkImage(past, 'qcow2')).toBe(0);

    // Stopped after the resize (at compat 1.1, grown): the declared level brings it back.
    const stopped = await makeSmall('stopped.qcow2');
    await qemuImg('amend', '-f', 'qcow2', '-o', 'compat=1.1', stopped);
    await qemuImg('resize', '-q', '-f', 'qcow2', stopped, '16M');
    await writeFile(join(dir, 'manifest.yaml'), declared('stopped.qcow2'));
    expect(await planKinds(dir)).toEqual(['amend']);
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect(await format(stopped)).toMatchObject({ compat: '0.10', size: 16 * 1024 * 1024 });
    expect(await compareImages(stopped, 'qcow2', reference, 'raw')).toBe(0);
    expect(await planKinds(dir)).toEqual([]);
  });

  it('grows a compat 0.10 image in place on a new backing that grows too, never beside the resize of that backing', async () => {
    const { dir } = ws;
    const n = join(dir, 'n.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', n, '16M');
    await qemuIo('qcow2', n, 'write -P 0x03 0 16M');
    const i = join(dir, 'i.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'base.qcow2', '-F', 'qcow2', i, '8M');
    await qemuIo('qcow2', i, 'write -P 0x05 1M 1M');
    const reference = await paddedContent(dir, i, 'qcow2', '32M');
    await writeFile(
      join(dir, 'manifest.yaml'),
      'version: 1\nimages:\n  n: { path: n.qcow2, size: 32M }\n  i: { path: i.qcow2, backing: { path: n.qcow2, format: qcow2 }, size: 32M, options: { compat: "0.10" } }\n',
    );
    const plan = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    const step = (id: string) => plan.steps.find((s: { id: string }) => s.id === id);
    // i's amends open n as its backing: n's resize (which needs n's write lock) waits for them.
    expect(step('i:resize').reads).toContain(n);
    expect(step('n:resize').dependsOn).toContain('i:resize');
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes', '--jobs', '4');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect(await format(i)).toMatchObject({ compat: '0.10', size: 32 * 1024 * 1024 });
    expect(await compareImages(i, 'qcow2', reference, 'raw')).toBe(0);
    expect(await checkImage(i, 'qcow2')).toBe(0);
    expect(await planKinds(dir)).toEqual([]);
  });

  it('grows a new compat v2 copy and a qed image over a larger backing too, and the next plan is empty', async () => {
    const { dir } = ws;
    const big = join(dir, 'big.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', big, '16M');
    await qemuIo('qcow2', big, 'write -P 0x66 0 16M');
    const src = join(dir, 'src.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', src, '8M');
    await qemuIo('qcow2', src, 'write -P 0x07 2M 1M');
    const sq = join(dir, 's.qed');
    await qemuImg('create', '-q', '-f', 'qed', '-o', 'cluster_size=16384', '-b', 'big.qcow2', '-F', 'qcow2', sq, '8M');
    await qemuIo('qed', sq, 'write -P 0x08 3M 1M');
    const references = {
      c: await paddedContent(dir, src, 'qcow2', '16M'),
      s: await paddedContent(dir, sq, 'qed', '16M'),
    };
    await writeFile(
      join(dir, 'manifest.yaml'),
      `version: 1
images:
  c: { path: out/c.qcow2, from: { path: src.qcow2, format: qcow2 }, backing: { path: big.qcow2, format: qcow2 }, options: { compat: v2 }, size: 16M }
  s: { path: s.qed, format: qed, backing: { path: big.qcow2, format: qcow2 }, size: 16M }
`,
    );
    const before = await checksums([big, src]);
    expect(await planKinds(dir)).toEqual(['diff', 'diff']);
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect(await format(join(dir, 'out/c.qcow2'))).toMatchObject({ compat: '0.10', size: 16 * 1024 * 1024 });
    expect(await compareImages(join(dir, 'out/c.qcow2'), 'qcow2', references.c, 'raw')).toBe(0);
    expect(await imageInfo(sq, 'qed')).toMatchObject({ 'virtual-size': 16 * 1024 * 1024, 'cluster-size': 16384 });
    expect(await compareImages(sq, 'qed', references.s, 'raw')).toBe(0);
    for (const [file, fmt] of [
      [join(dir, 'out/c.qcow2'), 'qcow2'],
      [sq, 'qed'],
    ] as const) {
      expect(await checkImage(file, fmt)).toBe(0);
    }
    expect(await checksums([big, src])).toEqual(before);
    // qed records no backing format but raw's: its link to a qcow2 backing is as exact as it
    // gets, and the manifest vouches for the format. A qed file it does not declare on its
    // backing (a source here) is still warned about: qemu guesses that backing's format.
    const again = await chainform(dir, 'plan', 'manifest.yaml', '--json');
    expect(JSON.parse(again.stdout).steps).toEqual([]);
    expect(again.stderr).not.toContain('backing-format-missing');
    await qemuImg('create', '-q', '-f', 'qed', '-b', 'big.qcow2', '-F', 'qcow2', join(dir, 'u.qed'));
    await writeFile(
      join(dir, 'manifest.yaml'),
      'version: 1\nimages:\n  u: { path: out/u.qcow2, from: { path: u.qed, format: qed } }\n',
    );
    const warned = await chainform(dir, 'plan', 'manifest.yaml');
    expect(warned.exitCode, warned.stderr).toBe(0);
    expect(warned.stderr).toContain(`${join(dir, 'u.qed')} does not record the format of its backing big.qcow2`);
    expect(warned.stderr).toContain('hint: qed records no backing format but raw');
  });

  it('keeps the settings the manifest does not name when it rewrites an image in place', async () => {
    const { dir } = ws;
    const reference = await makeOverlay(dir, 'cluster_size=4096,lazy_refcounts=on,refcount_bits=32');
    // No backing: vm is flattened into a new file, which keeps its cluster size and refcounts.
    await writeFile(join(dir, 'manifest.yaml'), 'version: 1\nimages:\n  vm: { path: vm.qcow2 }\n');
    expect(await planKinds(dir)).toEqual(['convert']);
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect(await format(dir)).toMatchObject({ cluster: 4096, 'lazy-refcounts': true, 'refcount-bits': 32 });
    expect((await imageInfo(join(dir, 'vm.qcow2'), 'qcow2'))['backing-filename']).toBeUndefined();
    expect(await compareImages(join(dir, 'vm.qcow2'), 'qcow2', reference, 'raw')).toBe(0);
    expect(await planKinds(dir)).toEqual([]);
  });

  it('keeps a qed cluster size on a rewrite only while the image fits the default qed tables', async () => {
    const { dir } = ws;
    // 4 KiB clusters with qed's default table size cover less than 16 GiB; this image is 32 GiB
    // (made with larger tables, which a manifest cannot name). Kept, the convert failed midway.
    await qemuImg('create', '-q', '-f', 'qed', join(dir, 'b.qed'), '32G');
    const top = join(dir, 'top.qed');
    await qemuImg(
      'create',
      '-q',
      '-f',
      'qed',
      '-o',
      'cluster_size=4096,table_size=16',
      '-b',
      'b.qed',
      '-F',
      'qed',
      top,
    );
    await qemuIo('qed', top, 'write -P 0x0b 1M 64k');
    await writeFile(join(dir, 'manifest.yaml'), 'version: 1\nimages:\n  top: { path: top.qed, format: qed }\n');
    const plan = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    expect(plan.steps.map((s: { kind: string }) => s.kind)).toEqual(['convert']);
    expect(plan.steps[0].commands[0].argv.join(' ')).not.toContain('cluster_size');
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect(await imageInfo(top, 'qed')).toMatchObject({ 'virtual-size': 32 * 1024 ** 3 });
    await qemuIo('qed', top, 'read -P 0x0b 1M 64k');
  });

  it('grows a compat 0.10 image on a backing the manifest also grows, whichever grows first', async () => {
    const { dir } = ws;
    const b = join(dir, 'b.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', b, '8M');
    await qemuIo('qcow2', b, 'write -P 0x09 0 8M');
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'old.qcow2'), '8M');
    const v = join(dir, 'v.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'old.qcow2', '-F', 'qcow2', v);
    await qemuIo('qcow2', v, 'write -P 0x0a 4M 1M');
    const reference = await paddedContent(dir, v, 'qcow2', '16M');
    await writeFile(
      join(dir, 'manifest.yaml'),
      'version: 1\nimages:\n  b: { path: b.qcow2, size: 16M }\n  v: { path: v.qcow2, backing: { path: b.qcow2, format: qcow2 }, size: 16M }\n',
    );
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect(await format(v)).toMatchObject({ compat: '0.10', size: 16 * 1024 * 1024 });
    expect(await compareImages(v, 'qcow2', reference, 'raw')).toBe(0);
    expect(await checkImage(v, 'qcow2')).toBe(0);
    expect(await planKinds(dir)).toEqual([]);
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

  it('keeps a compat 0.10 image compat 0.10 when it rewrites it, as an amend does, and refuses 1.1 features on it', async () => {
    const { dir } = ws;
    const reference = await makeOverlay(dir, 'compat=0.10,cluster_size=512');
    // Only the cluster size is asked for: the new file keeps the image's compat level.
    await writeFile(join(dir, 'manifest.yaml'), manifest('    options: { cluster_size: 65536 }\n'));
    const plan = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    expect(plan.steps.map((s: { kind: string }) => s.kind)).toEqual(['convert-keep-backing']);
    const argv: string[] = plan.steps[0].commands[0].argv;
    expect(argv[argv.indexOf('-o') + 1]?.split(',').sort()).toEqual(['cluster_size=65536', 'compat=0.10']);
    expect((await chainform(dir, 'apply', 'manifest.yaml', '--yes')).exitCode).toBe(0);
    expect(await format(dir)).toMatchObject({ compat: '0.10', cluster: 65536 });
    // Zeros over base data stay zeros: compat 0.10 stores them as data.
    expect(await compareImages(join(dir, 'vm.qcow2'), 'qcow2', reference, 'raw')).toBe(0);
    expect(await checkImage(join(dir, 'vm.qcow2'), 'qcow2')).toBe(0);
    expect(await planKinds(dir)).toEqual([]);
    // A feature only compat 1.1 has, asked of the image without a compat: refused, nothing written.
    const before = await checksums([join(dir, 'vm.qcow2')]);
    await writeFile(
      join(dir, 'manifest.yaml'),
      manifest('    options: { cluster_size: 16384, extended_l2: true, data_file: vm.data }\n'),
    );
    const refused = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(
      `error: "vm" is a compat 0.10 image, and extended_l2: true and data_file: ${join(dir, 'vm.data')} need compat 1.1 [needs-compat-1.1]`,
    );
    expect(await checksums([join(dir, 'vm.qcow2')])).toEqual(before);
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
    // vm declares its size already: "grow it first" would not help.
    expect(refused.stderr).toContain(
      'hint: declare a size of at least 134217728 bytes, or back it with an image no larger than 100663296 bytes',
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
