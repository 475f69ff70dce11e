// After an apply, the next plan has nothing to do, also when the plan rewrote in place a file
// that outputs were built from: a repoint of their source to an identical base keeps their
// content, so their ledger entries follow the new chain instead of making them stale.
import { readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { apply, plan } from '../../src/api.js';
import { type CommandRunner, ExecaRunner } from '../../src/qemu/runner.js';
import { chainform, checksums, compareImages, imageInfo, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

/** base.qcow2 and its copy base2.qcow2; vm.qcow2 on base.qcow2 (reshaped in place by the tests, so not guarded). */
async function makeImages(dir: string): Promise<string[]> {
  const base = join(dir, 'base.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', base, '8M');
  await qemuIo('qcow2', base, 'write -P 0x01 0 4M');
  await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', base, join(dir, 'base2.qcow2'));
  const vm = join(dir, 'vm.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', vm);
  await qemuIo('qcow2', vm, 'write -P 0x02 1M 1M');
  return [base, join(dir, 'base2.qcow2')];
}

const ws = useWorkspace(makeImages);

const manifest = (base: string) =>
  `version: 1\nimages:\n  vm: { path: vm.qcow2, backing: { path: ${base}, format: qcow2 } }\n  c1: { path: out/c1.qcow2, from: { path: vm.qcow2, format: qcow2 } }\n  c2: { path: out/c2.qcow2, from: { path: vm.qcow2, format: qcow2 } }\n`;

/** The steps each copy's step waits for, by image id, from `plan --json` of m.yaml. */
async function stepsBeforeCopy(dir: string): Promise<Record<string, string[]>> {
  const planned = JSON.parse((await chainform(dir, 'plan', 'm.yaml', '--json')).stdout);
  const copies = planned.steps.filter((step: { image: string }) => step.image !== 'vm');
  return Object.fromEntries(copies.map((step: { image: string; dependsOn: string[] }) => [step.image, step.dependsOn]));
}

/**
 * Plans m.yaml (one step, `stepId`), writes 64 KiB into `image` as another process would, then
 * applies the plan: the step must fail. Its message.
 */
async function failedAfterWrite(dir: string, stepId: string, image: string): Promise<string | undefined> {
  const planned = await plan(join(dir, 'm.yaml'));
  if (!planned.ok) throw new Error(JSON.stringify(planned.diagnostics));
  expect(planned.plan.steps.map((s) => s.id)).toEqual([stepId]);
  await qemuIo('qcow2', image, 'write -P 0x77 2M 64k');
  const summary = await apply(planned, {});
  expect(summary.failed.map((f) => f.stepId)).toEqual([stepId]);
  return summary.failed[0]?.message;
}

/**
 * Applies a manifest of `images` once: out/c1.qcow2 must then present `source`, and the next
 * plan must have nothing to do.
 */
async function settlesInOneApply(dir: string, images: string, source: string): Promise<void> {
  await writeFile(join(dir, 'm.yaml'), `version: 1\nimages:\n${images}`);
  const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
  expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
  expect(await compareImages(join(dir, 'out/c1.qcow2'), 'qcow2', source, 'qcow2')).toBe(0);
  const again = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
  expect(again.exitCode, again.stdout).toBe(0);
}

describe('ledger entries follow files rewritten in place', () => {
  it('plans nothing after an apply that built copies of a source, then repointed it', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm.qcow2');
    const reference = join(dir, 'vm.ref.raw');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', vm, reference);
    await writeFile(join(dir, 'm.yaml'), manifest('base2.qcow2'));
    const planned = await chainform(dir, 'plan', 'm.yaml');
    // The copies read vm.qcow2 as it is: they run before the repoint rewrites its header.
    expect(planned.stdout).toContain('after: c1:convert, c2:convert');

    for (const base of ['base2.qcow2', 'base.qcow2']) {
      await writeFile(join(dir, 'm.yaml'), manifest(base));
      const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
      expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
      expect((await imageInfo(vm, 'qcow2'))['backing-filename']).toBe(base);
      const again = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
      expect(again.exitCode, again.stdout).toBe(0);
      expect((await chainform(dir, 'status', 'm.yaml')).exitCode).toBe(0);
      for (const copy of ['out/c1.qcow2', 'out/c2.qcow2'])
        expect(await compareImages(join(dir, copy), 'qcow2', reference, 'raw'), copy).toBe(0);
      expect(await compareImages(vm, 'qcow2', reference, 'raw')).toBe(0);
    }
  });

  it('copies a source the same plan grows after it grew: one apply reaches the layout', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm.qcow2');
    const grown = `version: 1\nimages:\n  vm: { path: vm.qcow2, size: 16777216 }\n  c1: { path: out/c1.qcow2, from: { path: vm.qcow2, format: qcow2 } }\n`;
    await writeFile(join(dir, 'm.yaml'), grown);
    // vm is flattened (no backing declared) and grown by one convert; c1 copies the result.
    expect(await stepsBeforeCopy(dir)).toEqual({ c1: ['vm:convert'] });
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect((await imageInfo(join(dir, 'out/c1.qcow2'), 'qcow2'))['virtual-size']).toBe(16 * 1024 * 1024);
    expect(await compareImages(join(dir, 'out/c1.qcow2'), 'qcow2', vm, 'qcow2')).toBe(0);
    const again = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
    expect(again.exitCode, again.stdout).toBe(0);
  });

  it('copies a source the plan grows after it grew also when the copy names it through a symlink', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm.qcow2');
    await symlink('vm.qcow2', join(dir, 'vmlink.qcow2'));
    // Matched by path, the copy was made first (it then failed its guard once vm had grown).
    await settlesInOneApply(
      dir,
      '  vm: { path: vm.qcow2, backing: { path: base.qcow2, format: qcow2 }, size: 16M }\n  c1: { path: out/c1.qcow2, from: { path: vmlink.qcow2, format: qcow2 } }\n',
      vm,
    );
    expect((await imageInfo(join(dir, 'out/c1.qcow2'), 'qcow2'))['virtual-size']).toBe(16 * 1024 * 1024);
  });

  it('rebuilds an up-to-date copy after its source grows in the same plan, never calling the old copy a copy of the grown one', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm.qcow2');
    const copy = (extra: string) =>
      `version: 1\nimages:\n  vm: { path: vm.qcow2${extra} }\n  c1: { path: out/c1.qcow2, from: { path: vm.qcow2, format: qcow2 }${extra ? ', options: { lazy_refcounts: true }' : ''} }\n`;
    await writeFile(join(dir, 'm.yaml'), copy(''));
    expect((await chainform(dir, 'apply', 'm.yaml', '--yes')).exitCode).toBe(0);
    // vm grows; c1, up to date until then, would otherwise only get an amend of its own.
    await writeFile(join(dir, 'm.yaml'), copy(', size: 16777216'));
    const planned = await chainform(dir, 'plan', 'm.yaml');
    expect(planned.stdout).toContain('-/+ c1  out/c1.qcow2  (replace)');
    expect(planned.stdout).toContain('made once "vm" has grown, so that it presents the grown image');
    expect(await stepsBeforeCopy(dir)).toEqual({ c1: ['vm:resize'] });
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    const info = await imageInfo(join(dir, 'out/c1.qcow2'), 'qcow2');
    expect(info['virtual-size']).toBe(16 * 1024 * 1024);
    expect(info['format-specific']).toMatchObject({ data: { 'lazy-refcounts': true } });
    expect(await compareImages(join(dir, 'out/c1.qcow2'), 'qcow2', vm, 'qcow2')).toBe(0);
    expect((await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode')).exitCode).toBe(0);
  });

  it('copies a grown source with an external data file in one apply (the resize writes that file too)', async () => {
    const { dir } = ws;
    const image = join(dir, 'd.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'd.raw')}`, image, '8M');
    await qemuIo('qcow2', image, 'write -P 0x07 0 2M');
    const images =
      '  d: { path: d.qcow2, size: 16M }\n  c1: { path: out/c1.qcow2, from: { path: d.qcow2, format: qcow2 } }\n';
    await settlesInOneApply(dir, images, image);
  });

  it('records the new backing of a built copy that the same apply repoints and grows in place', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm.qcow2');
    const copyOn = (base: string, size: string) =>
      `  c1: { path: out/c1.qcow2, from: { path: vm.qcow2, format: qcow2 }, backing: { path: ${base}, format: qcow2 }${size} }\n`;
    await settlesInOneApply(dir, copyOn('base.qcow2', ''), vm);
    // A repoint to the identical base2.qcow2, then a plain resize: the resize step runs last, and
    // the ledger entry it writes must name base2's chain, or the next plan rebuilds c1.
    await writeFile(join(dir, 'm.yaml'), `version: 1\nimages:\n${copyOn('base2.qcow2', ', size: 16M')}`);
    const planned = JSON.parse((await chainform(dir, 'plan', 'm.yaml', '--json')).stdout);
    expect(planned.steps.map((step: { kind: string }) => step.kind)).toEqual(['verified-repoint', 'resize']);
    await settlesInOneApply(dir, copyOn('base2.qcow2', ', size: 16M'), vm);
    const info = await imageInfo(join(dir, 'out/c1.qcow2'), 'qcow2');
    expect(info['backing-filename']).toContain('base2.qcow2');
    expect(info['virtual-size']).toBe(16 * 1024 * 1024);
  });

  it('keeps a copy up to date when a layer below its source grows: the source presents the same', async () => {
    const { dir } = ws;
    // x.qcow2 -> mid.qcow2 (not in the manifest) -> vm.qcow2 (grows) -> base.qcow2
    const x = join(dir, 'x.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'vm.qcow2', '-F', 'qcow2', join(dir, 'mid.qcow2'), '8M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', x, '8M');
    await qemuIo('qcow2', x, 'write -P 0x09 6M 64k');
    const images =
      '  vm: { path: vm.qcow2, backing: { path: base.qcow2, format: qcow2 }, size: 12M }\n' +
      '  x: { path: x.qcow2, backing: { path: mid.qcow2, format: qcow2 }, size: 16M }\n' +
      '  c1: { path: out/c1.qcow2, from: { path: x.qcow2, format: qcow2 } }\n';
    await settlesInOneApply(dir, images, x);
  });

  it('records the source chain as the plan leaves it when the copy is built after its source was flattened', async () => {
    const { dir } = ws;
    // vm is flattened (no backing declared); c1, an overlay on it, must wait for that, and
    // then its source (vm) is one file, no longer vm -> base.
    const images =
      '  vm: { path: vm.qcow2 }\n  c1: { path: out/c1.qcow2, from: { path: vm.qcow2, format: qcow2 }, backing: vm }\n';
    await settlesInOneApply(dir, images, join(dir, 'vm.qcow2'));
  });

  it('records a backing named by path as the plan leaves it when the manifest flattens that image', async () => {
    const { dir } = ws;
    const full = join(dir, 'full.qcow2');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', join(dir, 'vm.qcow2'), full);
    await qemuIo('qcow2', full, 'write -P 0x5a 5M 64k');
    // c1 is built on vm.qcow2 before vm is flattened (readers first): its entry must name vm's
    // new chain (one file), or the next plan rebuilds it.
    const images =
      '  vm: { path: vm.qcow2 }\n  c1: { path: out/c1.qcow2, from: { path: full.qcow2, format: qcow2 }, backing: { path: vm.qcow2, format: qcow2 } }\n';
    await settlesInOneApply(dir, images, full);
  });

  it('refreshes a copy whose backing names the flattened image through a symlink', async () => {
    const { dir } = ws;
    const full = join(dir, 'full.qcow2');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', join(dir, 'vm.qcow2'), full);
    await qemuIo('qcow2', full, 'write -P 0x5a 5M 64k');
    await symlink('vm.qcow2', join(dir, 'vmlink.qcow2'));
    // The flatten writes vm.qcow2; c1's chain names vmlink.qcow2, the same file (a review saw the
    // next plan rebuild c1 when writers were matched by path).
    const images =
      '  vm: { path: vm.qcow2 }\n  c1: { path: out/c1.qcow2, from: { path: full.qcow2, format: qcow2 }, backing: { path: vmlink.qcow2, format: qcow2 } }\n';
    await settlesInOneApply(dir, images, full);
  });

  it('refuses to rebuild an image that a copy or an overlay reads through a symlink, as when named directly', async () => {
    const { dir } = ws;
    const src = join(dir, 'src.raw');
    await qemuImg('create', '-q', '-f', 'raw', src, '8M');
    await qemuIo('raw', src, 'write -P 0x11 0 1M');
    const out = '  out: { path: out.qcow2, from: { path: src.raw, format: raw } }\n';
    await writeFile(join(dir, 'm.yaml'), `version: 1\nimages:\n${out}`);
    expect((await chainform(dir, 'apply', 'm.yaml', '--yes')).exitCode).toBe(0);
    await symlink('out.qcow2', join(dir, 'link.qcow2'));
    const top = join(dir, 'top.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'link.qcow2', '-F', 'qcow2', top);
    await qemuIo('raw', src, 'write -P 0x22 0 1M');
    const before = await checksums([join(dir, 'out.qcow2'), top]);
    // out is rebuilt from the changed source. A review saw a copy read through link.qcow2 called
    // up to date, and an overlay whose header names link.qcow2 repointed onto the new out, its
    // content changed: each is refused as it is when it names out.qcow2.
    const cases = [
      ['overwrites-input', '  copy: { path: copy.qcow2, from: { path: link.qcow2, format: qcow2 } }\n'],
      [
        'overwrites-input',
        '  o2: { path: o2.qcow2, from: { path: src.raw, format: raw }, backing: { path: link.qcow2, format: qcow2 } }\n',
      ],
      ['backing-rebuilt', '  top: { path: top.qcow2, backing: out }\n'],
    ];
    for (const [code, image] of cases) {
      await writeFile(join(dir, 'm.yaml'), `version: 1\nimages:\n${out}${image}`);
      const refused = await chainform(dir, 'apply', 'm.yaml', '--yes');
      expect(refused.exitCode, refused.stdout).toBe(1);
      expect(refused.stderr).toContain(`[${code}]`);
      expect(await checksums([join(dir, 'out.qcow2'), top])).toEqual(before);
    }
  });

  it('records a chain through an image on such a backing as the plan leaves it (found by the convergence test)', async () => {
    const { dir } = ws;
    const full = join(dir, 'full.qcow2');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', join(dir, 'vm.qcow2'), full);
    await qemuIo('qcow2', full, 'write -P 0x5a 5M 64k');
    // c1 sits on vm.qcow2 named by path, and c2 on c1: both are built before vm is repointed to
    // base2.qcow2, so c2's entry must name base2 below vm too, or the next plan rebuilds c2.
    const images =
      '  vm: { path: vm.qcow2, backing: { path: base2.qcow2, format: qcow2 } }\n  c1: { path: out/c1.qcow2, from: { path: full.qcow2, format: qcow2 }, backing: { path: vm.qcow2, format: qcow2 } }\n  c2: { path: out/c2.qcow2, from: { path: vm.qcow2, format: qcow2 }, backing: c1 }\n';
    await settlesInOneApply(dir, images, full);
    expect(await compareImages(join(dir, 'out/c2.qcow2'), 'qcow2', join(dir, 'vm.qcow2'), 'qcow2')).toBe(0);
  });

  it("refuses a copy's declared size below its grown source's, saying the source grows", async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  vm: { path: vm.qcow2, backing: { path: base.qcow2, format: qcow2 }, size: 16M }\n  c1: { path: out/c1.qcow2, from: { path: vm.qcow2, format: qcow2 }, size: 8M }\n',
    );
    const refused = await chainform(dir, 'plan', 'm.yaml');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain('"c1" would shrink from 16777216 to 8388608 bytes');
    expect(refused.stderr).toContain('hint: its source grows to 16777216 bytes in this plan');
  });

  it('copies a grown image before it grows when the image is to sit on the copy (no dependency cycle)', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  vm: { path: vm.qcow2, backing: c1, size: 16M }\n  c1: { path: out/c1.qcow2, from: { path: vm.qcow2, format: qcow2 } }\n',
    );
    const planned = await chainform(dir, 'plan', 'm.yaml', '--json');
    expect(planned.exitCode, planned.stderr).toBe(0);
    expect(JSON.parse(planned.stdout).steps.map((step: { id: string }) => step.id)).toEqual([
      'c1:convert',
      'vm:verified-repoint',
      'vm:resize',
    ]);
  });

  it('keeps an undeclared data file in the chains it records: copies of and overlays on such an image settle', async () => {
    const { dir } = ws;
    const image = join(dir, 'd.qcow2');
    // Absolute: qemu 7.2 takes a relative data file name from the working directory.
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'd.raw')}`, image, '8M');
    await qemuIo('qcow2', image, 'write -P 0x07 0 2M');
    const full = join(dir, 'full.qcow2');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', image, full);
    await qemuIo('qcow2', full, 'write -P 0x08 1M 64k');
    const layout = (options: string) =>
      `version: 1\nimages:\n  d: { path: d.qcow2${options} }\n  c1: { path: out/c1.qcow2, from: { path: d.qcow2, format: qcow2 } }\n  ov: { path: out/ov.qcow2, from: { path: full.qcow2, format: qcow2 }, backing: d }\n`;
    for (const options of ['', ', options: { lazy_refcounts: true }']) {
      await writeFile(join(dir, 'm.yaml'), layout(options));
      const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
      expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
      expect((await imageInfo(image, 'qcow2'))['format-specific']).toMatchObject({
        data: { 'data-file': join(dir, 'd.raw') },
      });
      const again = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
      expect(again.exitCode, again.stdout).toBe(0);
      expect(await compareImages(join(dir, 'out/c1.qcow2'), 'qcow2', image, 'qcow2')).toBe(0);
      expect(await compareImages(join(dir, 'out/ov.qcow2'), 'qcow2', full, 'qcow2')).toBe(0);
    }
  });

  it('refuses to record a copy when its source was written after planning, so the copy is rebuilt', async () => {
    const { dir } = ws;
    const vm = join(dir, 'vm.qcow2');
    const layout = (options: string) =>
      `version: 1\nimages:\n  vm: { path: vm.qcow2 }\n  c1: { path: out/c1.qcow2, from: { path: vm.qcow2, format: qcow2 }${options} }\n`;
    await writeFile(join(dir, 'm.yaml'), layout(''));
    expect((await chainform(dir, 'apply', 'm.yaml', '--yes')).exitCode).toBe(0);
    await writeFile(join(dir, 'm.yaml'), layout(', options: { lazy_refcounts: true }'));
    // Another process writes to vm.qcow2 between the plan and its step (e.g. at the prompt).
    const failure = await failedAfterWrite(dir, 'c1:amend', vm);
    expect(failure).toContain(`${vm} cannot be used as planned: it was modified since the plan was made`);
    // Nothing vouches for c1 now: the next plan copies vm again.
    expect((await chainform(dir, 'plan', 'm.yaml')).stdout).toContain('-/+ c1  out/c1.qcow2  (replace)');
    expect((await chainform(dir, 'apply', 'm.yaml', '--yes')).exitCode).toBe(0);
    expect(await compareImages(join(dir, 'out/c1.qcow2'), 'qcow2', vm, 'qcow2')).toBe(0);
  });

  it('refuses to build an overlay when its base was written after planning, and leaves nothing behind', async () => {
    const { dir } = ws;
    // A base of the test's own: the workspace's inputs must stay as they are.
    const base = join(dir, 'own-base.qcow2');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', join(dir, 'base.qcow2'), base);
    const full = join(dir, 'full.qcow2');
    await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', join(dir, 'vm.qcow2'), full);
    await writeFile(
      join(dir, 'm.yaml'),
      `version: 1\nimages:\n  ov: { path: out/ov.qcow2, from: { path: full.qcow2, format: qcow2 }, backing: { path: own-base.qcow2, format: qcow2 } }\n`,
    );
    // Another process writes to the base between the plan and its step: an overlay computed on
    // it would not present full.qcow2, yet its ledger entry would record the base as it is then.
    const failure = await failedAfterWrite(dir, 'ov:diff', base);
    expect(failure).toContain(`${base} cannot be used as planned: it was modified since the plan was made`);
    expect(await readdir(join(dir, 'out')).catch(() => [])).toEqual([]);
    // Planned again, the overlay is built on the base as it is now.
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect(await compareImages(join(dir, 'out/ov.qcow2'), 'qcow2', full, 'qcow2')).toBe(0);
  });

  it('leaves an output that fails --verify to be rebuilt, not recorded as finished', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  c1: { path: out/c1.qcow2, from: { path: vm.qcow2, format: qcow2 } }\n',
    );
    const planned = await plan(join(dir, 'm.yaml'));
    if (!planned.ok) throw new Error(JSON.stringify(planned.diagnostics));
    // Real qemu-img throughout, except that the verify's compare reports a difference (as it
    // would if a step had produced wrong content that the ledger's fingerprints cannot see).
    const real = new ExecaRunner();
    const runner: CommandRunner = {
      run: (argv, options) =>
        argv[1] === 'compare'
          ? Promise.resolve({ exitCode: 1, stdout: 'Content mismatch at offset 0!', stderr: '' })
          : real.run(argv, options),
    };
    const summary = await apply(planned, { runner, verify: true });
    expect(summary.ok).toBe(false);
    expect(summary.failed.map((f) => f.stepId)).toEqual(['verify']);
    const next = await chainform(dir, 'plan', 'm.yaml');
    expect(next.stdout).toContain('-/+ c1  out/c1.qcow2  (replace)');
  });
});
