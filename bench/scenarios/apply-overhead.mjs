// Scenario: what `chainform apply` costs over a plain sh script running the same plan's commands.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertIdentical, emptyOverlay, filledImage, scatterWrites, yamlString } from '../lib/images.mjs';
import { measurePasses, minimumRow, processesNote, rowOf } from '../lib/measure.mjs';
import { PLAN_SCRIPT_DOES, planOf, planScript } from '../lib/plan-script.mjs';
import { nodeLine } from '../lib/shell.mjs';
import { median, spread } from '../lib/stats.mjs';

export const name = 'apply-overhead';
export const title = 'Apply overhead: chainform apply vs a plain script of the same plan';

/** Share of the overlay's clusters it stores itself: what the convert has to copy. */
const TOP_PERCENT = 50;
const TARGET_RATIO = 1.05;

/** Converts disk.qcow2 to compat 1.1 into out/, keeping it on base.qcow2. */
function manifest(base, disk) {
  return `version: 1
images:
  disk:
    path: out/disk.qcow2
    from: { path: ${yamlString(disk)}, format: qcow2 }
    backing: { path: ${yamlString(base)}, format: qcow2 }
    options: { cluster_size: 65536, compat: "1.1" }
`;
}

/**
 * A 2-link chain: base.qcow2 fully written, disk.qcow2 (compat 0.10) on it with TOP_PERCENT% of
 * its clusters rewritten. chainform plans the manifest as one `qemu-img convert -B` of the top
 * layer. Every pass applies it from two fresh folders, with chainform and with the plan's script.
 */
export async function run({ sizeMiB, runs, cli, workdir, io, log }) {
  const inputs = join(workdir, 'in');
  await mkdir(inputs, { recursive: true });
  const base = join(inputs, 'base.qcow2');
  const disk = join(inputs, 'disk.qcow2');
  log(`making a ${sizeMiB} MiB qcow2 base and an overlay storing ${TOP_PERCENT}% of its clusters`);
  await filledImage(base, 'qcow2', sizeMiB, 0x11);
  await emptyOverlay(disk, base, 'qcow2', ['-o', 'compat=0.10']);
  const topBytes = await scatterWrites(disk, 'qcow2', { sizeMiB, percent: TOP_PERCENT, first: 0, pattern: 0x22 });

  let script = '';
  const { accounting, timed, orders } = await measurePasses({
    runs,
    io,
    workdir,
    log,
    async setup(_pass, passDir) {
      const dirs = { chainform: join(passDir, 'chainform'), script: join(passDir, 'script') };
      for (const dir of Object.values(dirs)) {
        await mkdir(dir, { recursive: true });
        await writeFile(join(dir, 'm.yaml'), manifest(base, disk));
      }
      script = planScript(await planOf(cli, join(dirs.script, 'm.yaml')));
      await writeFile(join(dirs.script, 'plan.sh'), script);
      return {
        chainform: {
          script: `${nodeLine(cli, 'apply', 'm.yaml', '--yes', '--quiet')} >/dev/null`,
          cwd: dirs.chainform,
        },
        script: { script: 'sh ./plan.sh', cwd: dirs.script },
      };
    },
    async after(_pass, variants) {
      for (const { cwd } of Object.values(variants)) {
        await assertIdentical(join(cwd, 'out/disk.qcow2'), 'qcow2', disk, 'qcow2');
      }
    },
  });

  const seconds = (variant) => timed[variant].map((m) => m.seconds);
  const ratio = median(seconds('chainform')) / median(seconds('script'));
  const paired = spread(timed.chainform.map((m, i) => m.seconds / timed.script[i].seconds));
  return {
    rows: [
      rowOf('chainform apply', timed.chainform, accounting.chainform),
      rowOf('plain script', timed.script, accounting.script),
      minimumRow(`the top layer's ${TOP_PERCENT}% of clusters`, topBytes),
    ],
    notes: [
      `chain: ${sizeMiB} MiB qcow2 base <- overlay (compat 0.10) storing ${TOP_PERCENT}% of its clusters; manifest: convert it to compat 1.1 keeping the base (qemu-img convert -B)`,
      `script: ${PLAN_SCRIPT_DOES}`,
      `chainform's wall time / the script's: ${ratio.toFixed(3)} (medians; per-run ratios ${paired.min.toFixed(3)}-${paired.max.toFixed(3)}); target <= ${TARGET_RATIO}`,
      ...processesNote('chainform apply', accounting.chainform),
      ...processesNote('the script', accounting.script),
      'every output compared with the source overlay (qemu-img compare): identical',
    ],
    raw: { topBytes, topPercent: TOP_PERCENT, ratio, pairedRatios: paired, script, orders, accounting, timed },
  };
}
