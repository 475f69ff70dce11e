// Issue 3: internal snapshots into an external chain where every link holds only its delta.
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { apply, plan } from '../../src/api.js';
import { type CommandRunner, ExecaRunner } from '../../src/qemu/runner.js';
import { chainform, checkImage, compareImages, imageInfo, MiB, qemuImg, topLayerDataBytes } from '../helpers/qemu.js';
import { LINKS, linearManifest, makeRfcChain } from '../helpers/rfc-chain.js';
import { useWorkspace } from '../helpers/workspace.js';

const ws = useWorkspace(makeRfcChain);

async function helpersServing(dir: string): Promise<string> {
  const result = await execa('pgrep', ['-af', `qemu-nbd.*${dir}`], { reject: false });
  return String(result.stdout);
}

/**
 * Every link of export/ presents its snapshot (against qemu-img's own export of it), is clean,
 * stores exactly its delta and sits on the link below it.
 */
async function expectRfcLinks(dir: string): Promise<void> {
  for (const [i, link] of LINKS.entries()) {
    const out = join(dir, `export/${link.id}.qcow2`);
    const reference = join(dir, `${link.id}.ref.raw`);
    const select = link.snapshot ? ['-l', `snapshot.name=${link.snapshot}`] : [];
    await qemuImg('convert', '-f', 'qcow2', ...select, '-O', 'raw', join(dir, `${link.image}.qcow2`), reference);
    expect(await compareImages(out, 'qcow2', reference, 'raw'), link.id).toBe(0);
    expect(await checkImage(out, 'qcow2'), link.id).toBe(0);
    expect(await topLayerDataBytes(out, 'qcow2'), link.id).toBe(link.dataBytes);
    const info = await imageInfo(out, 'qcow2');
    const below = LINKS[i - 1];
    expect(info['backing-filename'], link.id).toBe(below ? `${below.id}.qcow2` : undefined);
  }
}

describe('linearising internal snapshots', () => {
  it('builds the RFC chain: each link presents its snapshot and stores only its delta', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'manifest.yaml'), linearManifest('export'));
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes', '--jobs', '2', '--verify');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    // --verify compares each link with its snapshot through a read-only qemu-nbd export.
    for (const link of LINKS) {
      expect(applied.stdout).toContain(`verified ${link.id}: matches its source; check clean`);
    }

    await expectRfcLinks(dir);
    // imageC's zeroed megabyte over base data is a zero cluster, not data.
    const map = JSON.parse(await qemuImg('map', '--output=json', '-f', 'qcow2', join(dir, 'export/imageC.qcow2')));
    expect(map).toContainEqual(expect.objectContaining({ start: 2 * 1024 * 1024, depth: 0, zero: true, data: false }));

    expect(await helpersServing(dir)).toBe('');
    expect((await chainform(dir, 'plan', 'manifest.yaml', '--detailed-exitcode')).exitCode).toBe(0);
  });

  it('names a missing snapshot at its line and lists the ones that exist', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'manifest.yaml'),
      'version: 1\nimages:\n  x:\n    path: out/x.qcow2\n    from: { path: imageB.qcow2, format: qcow2, snapshot: sn9 }\n',
    );
    const checked = await chainform(dir, 'validate', 'manifest.yaml');
    expect(checked.exitCode).toBe(1);
    expect(checked.stderr).toContain('manifest.yaml:5:58: error:');
    const r = await chainform(dir, 'plan', 'manifest.yaml');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('manifest.yaml:5:58: error:');
    expect(r.stderr).toContain('has no internal snapshot "sn9"');
    expect(r.stderr).toContain('hint: it has: sn0 (id 1), sn1 (id 2)');
  });

  it('stops its qemu-nbd exports and removes the temporary file when a step fails', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'manifest.yaml'), linearManifest('export'));
    const real = new ExecaRunner();
    // Real qemu-img, except that linking imageB_sn1 onto imageB_sn0 fails while the export serves.
    const failing: CommandRunner = {
      run: async (argv, options) => {
        if (argv[1] === 'rebase' && argv.includes('imageB_sn0.qcow2')) {
          expect(await helpersServing(dir)).toContain('snapshot.name=sn1');
          return { exitCode: 1, stdout: '', stderr: 'qemu-img: injected failure\n' };
        }
        return real.run(argv, options);
      },
    };
    const planned = await plan(join(dir, 'manifest.yaml'));
    if (!planned.ok) throw new Error(JSON.stringify(planned.diagnostics));
    // One step at a time: with more, imageB's delta runs beside it and fails too (it finishes
    // after imageB_sn1), which is right, but the failure asserted here is the injected one.
    const summary = await apply(planned, { runner: failing, jobs: 1 });
    expect(summary.failed.map((f) => f.stepId)).toEqual(['imageB_sn1:delta']);
    expect(await helpersServing(dir)).toBe('');
    expect((await readdir(join(dir, 'export'))).filter((f) => f.includes('chainform-tmp'))).toEqual([]);
  });

  it('links between states of one file copy only the clusters whose tables differ, and refuse a changed file', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'manifest.yaml'), linearManifest('export'));
    const planned = await plan(join(dir, 'manifest.yaml'));
    if (!planned.ok) throw new Error(JSON.stringify(planned.diagnostics));
    const deltas = planned.plan.steps.filter((s) => s.kind === 'delta');
    // Links on a state of the same file; imageB_sn0 and imageC_sn0 sit on another file's link.
    expect(deltas.map((s) => s.id)).toEqual(['imageA:delta', 'imageB_sn1:delta', 'imageB:delta', 'imageC:delta']);
    // Each copies what was written after the state below it, and expects to write what the link
    // stores: imageC's zeroed megabyte is copied too, as a zero cluster (metadata only).
    expect(deltas.map((s) => s.expectedWriteBytes / MiB)).toEqual([1, 1, 1, 1]);
    expect(deltas.map((s) => s.expectedWriteBytes)).toEqual(
      deltas.map((s) => LINKS.find((link) => `${link.id}:delta` === s.id)?.dataBytes),
    );
    expect(deltas.at(-1)?.reason).toContain('(2 ranges, 2.0 MiB, 1.0 MiB of them zeroed;');

    // imageB is written after planning (as a VM would): its links must not be built from stale tables.
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x09 30M 64k', join(dir, 'imageB.qcow2')]);
    await ws.acceptInputChanges();
    const summary = await apply(planned, {});
    expect(summary.ok).toBe(false);
    // The first link copied from imageB refuses too: the ledger would record imageB as planned.
    // (It and imageB_sn1's delta start together: either may be the first to fail.)
    const first = summary.failed.find((failure) => failure.stepId === 'imageB_sn0:convert-keep-backing');
    expect(first?.message).toContain('imageB.qcow2 cannot be used as planned: it was modified');
    for (const failure of summary.failed) expect(failure.message).toContain('cannot be used as planned');
    expect((await readdir(join(dir, 'export'))).filter((f) => f.includes('imageB'))).toEqual([]);
  });

  it('expects compat 0.10 links, which have no zero clusters, to store zeroed ranges as data', async () => {
    const { dir } = ws;
    const manifest = linearManifest('export').replace(/ \}$/gm, ', options: { compat: "0.10" } }');
    await writeFile(join(dir, 'manifest.yaml'), manifest);
    const planned = await plan(join(dir, 'manifest.yaml'));
    if (!planned.ok) throw new Error(JSON.stringify(planned.diagnostics));
    const deltas = planned.plan.steps.filter((s) => s.kind === 'delta');
    expect(deltas.map((s) => s.expectedWriteBytes / MiB)).toEqual([1, 1, 1, 2]);
    const summary = await apply(planned, {});
    expect(summary.ok, JSON.stringify(summary.failed)).toBe(true);
    for (const step of deltas) {
      const out = join(dir, `export/${step.image}.qcow2`);
      expect((await imageInfo(out, 'qcow2'))['format-specific']).toMatchObject({ data: { compat: '0.10' } });
      expect(await topLayerDataBytes(out, 'qcow2'), step.id).toBe(step.expectedWriteBytes);
    }
  });

  it('builds delta links beside the links they sit on with --jobs, each still exact', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'manifest.yaml'), linearManifest('export'));
    const planned = await plan(join(dir, 'manifest.yaml'));
    if (!planned.ok) throw new Error(JSON.stringify(planned.diagnostics));
    const order: string[] = [];
    const summary = await apply(planned, {
      jobs: 4,
      onEvent: (e) => {
        if (e.type === 'step-started' || e.type === 'step-finished') order.push(`${e.type} ${e.step.id}`);
      },
    });
    expect(summary.ok, JSON.stringify(summary.failed)).toBe(true);
    // imageB_sn1's copies start while imageB_sn0, the link it sits on, is still being written.
    const waits = planned.plan.steps.find((s) => s.id === 'imageB_sn1:delta')?.finishAfter;
    expect(waits?.steps).toEqual(['imageB_sn0:convert-keep-backing']);
    expect(order.indexOf('step-started imageB_sn1:delta')).toBeLessThan(
      order.indexOf('step-finished imageB_sn0:convert-keep-backing'),
    );
    await expectRfcLinks(dir);
    expect(await helpersServing(dir)).toBe('');
  });
});
