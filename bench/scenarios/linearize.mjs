// Scenario: linearising internal snapshots, chainform (`import --linearize` + `apply`) against the
// internal-snapshot RFC's two-step procedure (full exports with `convert -l`, then an overlay and
// a safe rebase per delta), as typed and followed by a sync. Ported from the former
// bench/linearize.mjs: bytes written (GNU time block output), wall time, bytes per delta link and
// the data each delta stores, plus the bytes the qemu processes read and wrote (I/O shim).
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_JOBS } from '../../dist/executor/execute-plan.js';
import { assertIdentical, imageWithSnapshots, MiB, ownDataBytes } from '../lib/images.mjs';
import { measurePasses, minimumRow, processesNote, rowOf } from '../lib/measure.mjs';
import { chainformLine, quote } from '../lib/shell.mjs';
import { median, positionMatchedRatio, ratioText, spread } from '../lib/stats.mjs';

export const name = 'linearize';
export const title = 'Linearise internal snapshots: chainform vs the two-step RFC procedure';

/** Jobs of the parallel chainform variant: the bottom copy and both delta links at once. */
const JOBS = 3;

/**
 * The RFC's two-step procedure into `out`: every state exported in full, then each later export
 * made a delta. `durable` ends it with a `sync` of its outputs (fsync), the guarantee chainform
 * gives before it calls a link done; as typed in the RFC it leaves them in the page cache.
 */
function twoStep(image, out, durable) {
  const src = quote(image);
  return `mkdir -p ${out}
qemu-img convert -f qcow2 -l snapshot.name=sn0 -O qcow2 ${src} ${out}/image_sn0.qcow2
qemu-img convert -f qcow2 -l snapshot.name=sn1 -O qcow2 ${src} ${out}/full_sn1.qcow2
qemu-img convert -f qcow2 -O qcow2 ${src} ${out}/full_active.qcow2
qemu-img create -q -f qcow2 -b full_sn1.qcow2 -F qcow2 ${out}/image_sn1.qcow2
qemu-img rebase -f qcow2 -b image_sn0.qcow2 -F qcow2 ${out}/image_sn1.qcow2
qemu-img create -q -f qcow2 -b full_active.qcow2 -F qcow2 ${out}/image.qcow2
qemu-img rebase -f qcow2 -b image_sn1.qcow2 -F qcow2 ${out}/image.qcow2
rm ${out}/full_sn1.qcow2 ${out}/full_active.qcow2${durable ? `\nsync ${out}/image_sn0.qcow2 ${out}/image_sn1.qcow2 ${out}/image.qcow2 ${out}` : ''}`;
}

/** Bytes on disk of a file (its allocated blocks). */
const onDisk = async (file) => (await stat(file)).blocks * 512;

/**
 * Every pass linearises the same image twice from one fresh folder: the two-step procedure into
 * naive/ and synced/, chainform into out/ and (with --jobs) out-jobs/. Every link is compared with the two-step one.
 */
export async function run({ sizeMiB, runs, changePercent, chainform, workdir, io, log }) {
  const image = join(workdir, 'in', 'image.qcow2');
  await mkdir(join(workdir, 'in'));
  log(`making a ${sizeMiB} MiB qcow2 image with snapshots sn0, sn1 (${changePercent}% changed per snapshot)`);
  const changed = await imageWithSnapshots(image, sizeMiB, changePercent);

  const deltaLinkBytes = { twoStep: [], twoStepSynced: [], chainform: [], chainformJobs: [] };
  const deltaData = [];
  const linearize = (out, manifest) => ['--linearize', '--out-dir', out, image, '-f', 'qcow2', '-o', manifest];
  /** chainform's two commands, the apply with `flags`. */
  const chainformScript = (out, manifest, flags) =>
    `${chainformLine(chainform, 'import', ...linearize(out, manifest))} 2>/dev/null\n${chainformLine(chainform, 'apply', manifest, '--yes', '--quiet', ...flags)} >/dev/null`;
  const { accounting, timed, orders } = await measurePasses({
    runs,
    io,
    inputs: join(workdir, 'in'),
    workdir,
    log,
    async setup(_pass, cwd) {
      return {
        twoStep: { script: twoStep(image, 'naive', false), cwd },
        twoStepSynced: { script: twoStep(image, 'synced', true), cwd },
        chainform: { script: chainformScript('out', 'linear.yaml', []), cwd },
        // The delta links' copies beside the bottom link's full copy (Step.finishAfter).
        chainformJobs: { script: chainformScript('out-jobs', 'linear-jobs.yaml', ['--jobs', String(JOBS)]), cwd },
      };
    },
    async after(pass, variants, results) {
      const { cwd } = variants.chainform;
      // The bottom link is a full copy in both procedures; what differs is the delta links.
      for (const [variant, bottom] of [
        ['twoStep', 'naive/image_sn0.qcow2'],
        ['twoStepSynced', 'synced/image_sn0.qcow2'],
        ['chainform', 'out/image_sn0.qcow2'],
        ['chainformJobs', 'out-jobs/image_sn0.qcow2'],
      ]) {
        if (pass > 0) deltaLinkBytes[variant].push(results[variant].blockOutBytes - (await onDisk(join(cwd, bottom))));
      }
      const data = {};
      for (const link of ['image_sn1', 'image']) data[link] = await ownDataBytes(join(cwd, 'out', `${link}.qcow2`));
      deltaData.push(data);
      // The two-step links come straight from qemu-img's own exports: every link must match.
      for (const link of ['image_sn0', 'image_sn1', 'image']) {
        for (const other of ['naive', 'synced', 'out-jobs'])
          await assertIdentical(join(cwd, `out/${link}.qcow2`), 'qcow2', join(cwd, `${other}/${link}.qcow2`), 'qcow2');
      }
    },
  });

  const minimum = sizeMiB * MiB + changed.image_sn1 + changed.image;
  const ratio = (f, baseline = 'twoStep', variant = 'chainform') => median(f(baseline)) / median(f(variant));
  /** `baseline`'s wall time over `variant`'s at the same place in their passes, as text. */
  const matched = (baseline, variant) => ratioText(positionMatchedRatio(timed, orders, baseline, variant));
  const block = (v) => timed[v].map((m) => m.blockOutBytes);
  const secs = (v) => timed[v].map((m) => m.seconds);
  const perLink = (v) => median(deltaLinkBytes[v]) / 2 / MiB;
  const dataNotes = Object.entries(deltaData[0]).map(
    ([link, bytes]) =>
      `delta link ${link}: stores ${(bytes / MiB).toFixed(1)} MiB of data for ${(changed[link] / MiB).toFixed(1)} MiB changed (${(bytes / changed[link]).toFixed(2)}x)`,
  );
  return {
    rows: [
      rowOf('two-step (RFC)', timed.twoStep, accounting.twoStep),
      rowOf('two-step (RFC), then sync', timed.twoStepSynced, accounting.twoStepSynced),
      rowOf(`chainform import + apply (default --jobs ${DEFAULT_JOBS})`, timed.chainform, accounting.chainform),
      rowOf(`chainform import + apply --jobs ${JOBS}`, timed.chainformJobs, accounting.chainformJobs),
      minimumRow('one full copy + the changed clusters', minimum),
    ],
    notes: [
      `image: ${sizeMiB} MiB qcow2, all written; ${changePercent}% of clusters changed before sn1 and again after it`,
      `two-step / chainform (default --jobs ${DEFAULT_JOBS}): block output ${ratio(block).toFixed(1)}x, wall time ${ratio(secs).toFixed(2)}x`,
      `two-step then sync (durable, as chainform's links are) / chainform (default --jobs ${DEFAULT_JOBS}): wall time ${ratio(secs, 'twoStepSynced').toFixed(2)}x`,
      `wall time at the same place in the pass (positionMatchedRatio; every place needs --runs 4 or more): two-step / chainform ${matched('twoStep', 'chainform')}, two-step then sync / chainform ${matched('twoStepSynced', 'chainform')}; with --jobs ${JOBS} ${matched('twoStep', 'chainformJobs')} and ${matched('twoStepSynced', 'chainformJobs')}`,
      `with --jobs ${JOBS}: two-step / chainform wall time ${ratio(secs, 'twoStep', 'chainformJobs').toFixed(2)}x, two-step then sync / chainform ${ratio(secs, 'twoStepSynced', 'chainformJobs').toFixed(2)}x`,
      `per delta link (block output minus the bottom full copy, over 2 links): two-step ${perLink('twoStep').toFixed(1)} MiB, chainform ${perLink('chainform').toFixed(1)} MiB (${ratio((v) => deltaLinkBytes[v]).toFixed(1)}x fewer)`,
      ...dataNotes,
      ...processesNote('chainform', accounting.chainform),
      'qemu read: chainform reads snapshots through qemu-nbd; the file reads count (in qemu-nbd), the socket transfer does not',
      'every link of every pass compared with the two-step one (qemu-img compare): identical',
    ],
    raw: {
      changedBytes: changed,
      orders,
      accounting,
      timed,
      deltaLinkBytes: Object.fromEntries(Object.entries(deltaLinkBytes).map(([v, bytes]) => [v, spread(bytes)])),
      deltaData,
    },
  };
}
