// Scenario: what `chainform apply` costs over a plain sh script running the same plan's commands,
// on two jobs: one convert (the least work a plan can hold, so the fixed cost weighs most) and
// the linearisation of an image with two internal snapshots (three steps, one of them served by
// a qemu-nbd helper).
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { assertIdentical, emptyOverlay, filledImage, imageWithSnapshots, MiB, scatterWrites } from '../lib/images.mjs';
import { convertKeepingBacking } from '../lib/manifests.mjs';
import { measurePasses, minimumRow, processesNote, rowOf } from '../lib/measure.mjs';
import { PLAN_SCRIPT_DOES, planOf, planScript } from '../lib/plan-script.mjs';
import { chainformLine } from '../lib/shell.mjs';
import {
  intervalText,
  median,
  positionMatchedInterval,
  positionMatchedRatio,
  ratioText,
  secondsByPosition,
  spread,
} from '../lib/stats.mjs';

export const name = 'apply-overhead';
export const title = 'Apply overhead: chainform apply vs a plain script of the same plan';

/** Share of the overlay's clusters it stores itself: what the convert has to copy. */
const TOP_PERCENT = 50;
const TARGET_RATIO = 1.05;

/**
 * The convert job: a 2-link chain, base.qcow2 fully written and disk.qcow2 (compat 0.10) on it
 * with TOP_PERCENT% of its clusters rewritten; the manifest converts it to compat 1.1 keeping the
 * base, which chainform plans as one `qemu-img convert -B` of the top layer.
 */
function convertJob({ sizeMiB }) {
  let base;
  let disk;
  let topBytes;
  return {
    name: 'convert',
    describe: `${sizeMiB} MiB qcow2 base <- overlay (compat 0.10) storing ${TOP_PERCENT}% of its clusters; manifest: convert it to compat 1.1 keeping the base (one qemu-img convert -B)`,
    async makeInputs(inputs, log) {
      base = join(inputs, 'base.qcow2');
      disk = join(inputs, 'disk.qcow2');
      log(`convert: making a ${sizeMiB} MiB qcow2 base and an overlay storing ${TOP_PERCENT}% of its clusters`);
      await filledImage(base, 'qcow2', sizeMiB, 0x11);
      await emptyOverlay(disk, base, 'qcow2', ['-o', 'compat=0.10']);
      topBytes = await scatterWrites(disk, 'qcow2', { sizeMiB, percent: TOP_PERCENT, first: 0, pattern: 0x22 });
    },
    async writeManifest(dir) {
      const options = '{ cluster_size: 65536, compat: "1.1" }';
      await writeFile(join(dir, 'm.yaml'), convertKeepingBacking({ disk, base, options }));
    },
    async check(dir) {
      await assertIdentical(join(dir, 'out/disk.qcow2'), 'qcow2', disk, 'qcow2');
    },
    links: ['disk'],
    minimum: () => minimumRow(`the top layer's ${TOP_PERCENT}% of clusters`, topBytes),
  };
}

/**
 * The linearisation job of the linearize scenario: an image with snapshots sn0 and sn1, each
 * state `changePercent`% apart, becomes image_sn0 (full) <- image_sn1 <- image (deltas). The
 * manifest is what `chainform import --linearize` writes (made before the clock starts).
 */
function linearizeJob({ sizeMiB, changePercent, cli }) {
  let image;
  let changed;
  return {
    name: 'linearise',
    describe: `${sizeMiB} MiB qcow2 with snapshots sn0, sn1 (${changePercent}% changed per snapshot); manifest from import --linearize (a convert, then two diffs, one through a qemu-nbd export of sn1)`,
    async makeInputs(inputs, log) {
      image = join(inputs, 'image.qcow2');
      log(`linearise: making a ${sizeMiB} MiB qcow2 image with snapshots sn0, sn1`);
      changed = await imageWithSnapshots(image, sizeMiB, changePercent);
    },
    async writeManifest(dir) {
      const args = ['import', '--linearize', '--out-dir', 'out', image, '-f', 'qcow2', '-o', 'm.yaml'];
      await execa(process.execPath, [cli, ...args], { cwd: dir });
    },
    async check(dir) {
      // The top link presents the source's active state whatever the links below it hold; those
      // are compared with the other variant's (see measureJob) and, in the linearize scenario,
      // with qemu-img's own exports of the snapshots.
      await assertIdentical(join(dir, 'out/image.qcow2'), 'qcow2', image, 'qcow2');
    },
    links: ['image_sn0', 'image_sn1', 'image'],
    minimum: () =>
      minimumRow('one full copy + the changed clusters', sizeMiB * MiB + changed.image_sn1 + changed.image),
  };
}

/** One job measured: chainform apply and the plan's script from two fresh folders per pass. */
async function measureJob(job, { runs, cli, chainform, workdir, io, log }) {
  const inputs = join(workdir, job.name, 'in');
  await mkdir(inputs, { recursive: true });
  await job.makeInputs(inputs, log);
  let script = '';
  const measured = await measurePasses({
    runs,
    io,
    inputs,
    workdir: join(workdir, job.name),
    log: (line) => log(`${job.name}: ${line}`),
    async setup(_pass, passDir) {
      const dirs = { chainform: join(passDir, 'chainform'), script: join(passDir, 'script') };
      for (const dir of Object.values(dirs)) {
        await mkdir(dir, { recursive: true });
        await job.writeManifest(dir);
      }
      script = planScript(await planOf(cli, join(dirs.script, 'm.yaml')), join(dirs.script, 'runtime'));
      await writeFile(join(dirs.script, 'plan.sh'), script);
      return {
        chainform: {
          script: `${chainformLine(chainform, 'apply', 'm.yaml', '--yes', '--quiet')} >/dev/null`,
          cwd: dirs.chainform,
        },
        script: { script: 'sh ./plan.sh >/dev/null', cwd: dirs.script },
      };
    },
    async after(_pass, variants) {
      for (const { cwd } of Object.values(variants)) await job.check(cwd);
      // Both ran the same plan: every output must be the same, link by link.
      for (const link of job.links) {
        const [a, b] = [variants.chainform.cwd, variants.script.cwd].map((d) => join(d, 'out', `${link}.qcow2`));
        await assertIdentical(a, 'qcow2', b, 'qcow2');
      }
    },
  });
  return { ...measured, script };
}

export async function run(context) {
  const rows = [];
  const notes = [];
  const raw = { topPercent: TOP_PERCENT, jobs: {} };
  for (const job of [convertJob(context), linearizeJob(context)]) {
    const { accounting, timed, orders, script } = await measureJob(job, context);
    const seconds = (variant) => timed[variant].map((m) => m.seconds);
    const ratio = median(seconds('chainform')) / median(seconds('script'));
    const paired = spread(timed.chainform.map((m, i) => m.seconds / timed.script[i].seconds));
    const matched = positionMatchedRatio(timed, orders, 'chainform', 'script');
    const interval = positionMatchedInterval(timed, orders, 'chainform', 'script');
    /** "first: chainform 0.65 s (4 runs), script 0.63 s (5 runs); second: ..." */
    const byPlace = Object.fromEntries(['chainform', 'script'].map((v) => [v, secondsByPosition(timed, orders, v)]));
    const places = ['first', 'second'].map((place, p) => {
      const shown = (variant) => {
        const runs = byPlace[variant][p] ?? [];
        return runs.length > 0 ? `${variant} ${median(runs).toFixed(2)} s (${runs.length} runs)` : `${variant}: none`;
      };
      return `${place}: ${shown('chainform')}, ${shown('script')}`;
    });
    rows.push(
      rowOf(`${job.name}: chainform apply`, timed.chainform, accounting.chainform),
      rowOf(`${job.name}: plain script`, timed.script, accounting.script),
      { ...job.minimum(), variant: `${job.name}: ${job.minimum().variant}` },
    );
    notes.push(
      `${job.name}: ${job.describe}`,
      `${job.name}: chainform's wall time / the script's, runs compared at the same place in their pass (see positionMatchedRatio): ${ratioText(matched, 3)}${intervalText(interval, 3)}; target <= ${TARGET_RATIO}`,
      `${job.name}: medians by place in the pass: ${places.join('; ')}`,
      `${job.name}: medians over all runs, places mixed: ${ratio.toFixed(3)} (per-run ratios ${paired.min.toFixed(3)}-${paired.max.toFixed(3)})`,
      ...processesNote(`${job.name}: chainform apply`, accounting.chainform),
      ...processesNote(`${job.name}: the script`, accounting.script),
    );
    raw.jobs[job.name] = {
      ratio,
      pairedRatios: paired,
      positionMatchedRatio: matched,
      positionMatchedInterval: interval,
      script,
      orders,
      accounting,
      timed,
    };
  }
  notes.push(
    `script: ${PLAN_SCRIPT_DOES}`,
    "every output compared with the other variant's, link by link, and each top image with its source (qemu-img compare): identical",
  );
  return { rows, notes, raw };
}
