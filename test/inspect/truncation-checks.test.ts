// The truncation checks a large plan hands to a worker thread (src/inspect/truncation-checks.ts,
// which runs the built dist/inspect/truncation-worker.js): a plan made with them must be exactly
// the plan made without them, also when a file is cut short, which the worker finds.
import { truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { plan } from '../../src/api.js';
import { readImageFile } from '../../src/inspect/image-file.js';
import { deferredTruncationChecks } from '../../src/inspect/truncation-checks.js';
import { ExecaRunner, type RunOptions } from '../../src/qemu/runner.js';
import { qcow2Chain, qemuIo, tempFolder } from '../helpers/qemu.js';

let dir = '';
let cleanup: () => Promise<void> = async () => undefined;
beforeEach(async () => {
  ({ dir, cleanup } = await tempFolder());
});
afterEach(() => cleanup());

/** Chains a0 <- a1 <- a2 and b0 <- b1 <- b2, 2 MiB written into a1, and a manifest keeping all six. */
async function twoChains(): Promise<string> {
  await qcow2Chain(dir, ['a0', 'a1', 'a2']);
  await qcow2Chain(dir, ['b0', 'b1', 'b2']);
  await qemuIo('qcow2', join(dir, 'a1.qcow2'), 'write -P 0x0a 0 2M');
  const lines = ['version: 1', 'images:'];
  for (const chain of ['a', 'b']) {
    lines.push(`  ${chain}0: { path: ${chain}0.qcow2 }`);
    for (const d of [1, 2]) lines.push(`  ${chain}${d}: { path: ${chain}${d}.qcow2, backing: ${chain}${d - 1} }`);
  }
  await writeFile(join(dir, 'm.yaml'), `${lines.join('\n')}\n`);
  return join(dir, 'm.yaml');
}

/** A plan result without its lazily computed parts, comparable with toEqual. */
async function planned(manifest: string, checksBeforeWorker: number | null) {
  const result = await plan(manifest, { checksBeforeWorker });
  return result.ok
    ? { ok: true, plan: result.plan, warnings: result.warnings, files: result.files }
    : { ok: false, diagnostics: result.diagnostics };
}

describe('truncation checks on a worker thread', () => {
  it('answer whole for whole files, and plan again for a file cut short or changed since it was read', async () => {
    await twoChains();
    const paths = ['a0', 'a1', 'a2'].map((name) => join(dir, `${name}.qcow2`));
    const whole = deferredTruncationChecks(0);
    for (const path of paths) expect(readImageFile(path, whole).pastEnd).toBeUndefined();
    expect(await whole.settle()).toBe('whole');

    // The first files are checked by the caller: no worker for a small plan.
    const firstHere = deferredTruncationChecks(2);
    expect(paths.map((path) => firstHere.defer({ path, fingerprint: readImageFile(path).fingerprint! }))).toEqual([
      false,
      false,
      true,
    ]);
    expect(await firstHere.settle()).toBe('whole');

    const changed = deferredTruncationChecks(0);
    readImageFile(paths[1]!, changed);
    await qemuIo('qcow2', paths[1]!, 'write -P 0x0b 0 64k');
    expect(await changed.settle()).toBe('plan-again');

    // Cut short: the check read here says so; deferred, it is left unset, and the worker says so.
    await truncate(paths[1]!, 1024 * 1024);
    expect(readImageFile(paths[1]!).pastEnd).toMatch(/past the end of the file/);
    const cut = deferredTruncationChecks(0);
    expect(readImageFile(paths[1]!, cut).pastEnd).toBeUndefined();
    expect(await cut.settle()).toBe('plan-again');
  });

  it('give the plan made without them, for whole files and for a layer cut short deep in a chain', async () => {
    const manifest = await twoChains();
    const withWorker = await planned(manifest, 0);
    expect(withWorker.ok).toBe(true);
    expect(withWorker).toEqual(await planned(manifest, null));
    // Made once: a worker that failed would have it made again, running qemu-img twice.
    const counted = async (checksBeforeWorker: number | null) => {
      let calls = 0;
      const real = new ExecaRunner();
      await plan(manifest, {
        checksBeforeWorker,
        runner: {
          run(argv, options) {
            calls++;
            return real.run(argv, options);
          },
        },
      });
      return calls;
    };
    expect(await counted(0)).toBe(await counted(null));

    // a1's data clusters cut off: only the refcounts say so, which the worker reads.
    await truncate(join(dir, 'a1.qcow2'), 1024 * 1024);
    const refused = await planned(manifest, 0);
    expect(refused).toEqual(await planned(manifest, null));
    expect(refused.ok).toBe(false);
    expect(refused.diagnostics?.map((d) => d.code)).toContain('image-truncated');
  });

  it('plan again, without running anything the refused plan would not, when a layer of a copied chain is cut short', async () => {
    const manifest = await twoChains();
    await writeFile(
      manifest,
      'version: 1\nimages:\n  copy: { path: out/copy.qcow2, from: { path: a2.qcow2, format: qcow2 } }\n',
    );
    await truncate(join(dir, 'a1.qcow2'), 1024 * 1024);
    // qemu-img measure of the copy's chain is what the speculative plan would run next.
    const commands: string[][] = [];
    const real = new ExecaRunner();
    const runner = {
      run(argv: readonly string[], options?: RunOptions) {
        commands.push([...argv]);
        if (argv[1] === 'measure') return Promise.reject(new Error('measured a chain with a layer cut short'));
        return real.run(argv, options);
      },
    };
    const result = await plan(manifest, { checksBeforeWorker: 0, runner });
    expect(result.ok).toBe(false);
    expect(!result.ok && result.diagnostics.map((d) => d.code)).toContain('image-truncated');
    expect(commands.filter((argv) => argv[1] === 'measure')).toEqual([]);
  });

  it('plan once from a process started with flags a worker cannot take, or where no worker may start', async () => {
    const manifest = await twoChains();
    const api = new URL('../../dist/api.js', import.meta.url).href;
    const runnerModule = new URL('../../dist/qemu/runner.js', import.meta.url).href;
    // qemu-img processes of a plan with the worker and of one without: a failed worker doubles them.
    const script = [
      `const { plan } = await import(${JSON.stringify(api)});`,
      `const { ExecaRunner } = await import(${JSON.stringify(runnerModule)});`,
      'const real = new ExecaRunner();',
      'const counted = async (checksBeforeWorker) => { let calls = 0; const r = await plan(' +
        JSON.stringify(manifest) +
        ', { checksBeforeWorker, runner: { run: (a, o) => { calls++; return real.run(a, o); } } }); return { ok: r.ok, calls }; };',
      'console.log(JSON.stringify([await counted(0), await counted(null)]));',
    ].join('\n');
    // --input-type is an option a worker refuses; the permission model allows no worker at all.
    for (const flags of [[], ['--experimental-permission', '--allow-fs-read=*', '--allow-child-process']]) {
      const run = await execa(process.execPath, [...flags, '--input-type=module', '-e', script], { reject: false });
      expect(run.stderr, flags.join(' ')).not.toMatch(/ERR_|Access to this API/);
      const [withWorker, without] = JSON.parse(run.stdout);
      expect(withWorker, flags.join(' ')).toEqual(without);
      expect(without.ok).toBe(true);
    }
  });

  it('answer once however often they are settled, and take no file once settling', async () => {
    await twoChains();
    const paths = ['a0', 'a1', 'a2'].map((name) => join(dir, `${name}.qcow2`));
    const checks = deferredTruncationChecks(0);
    for (const path of paths) readImageFile(path, checks);
    expect(await Promise.all([checks.settle(), checks.settle()])).toEqual(['whole', 'whole']);
    expect(checks.defer({ path: paths[0]!, fingerprint: readImageFile(paths[0]!).fingerprint! })).toBe(false);
    expect(await checks.settle()).toBe('whole');
  });
});
