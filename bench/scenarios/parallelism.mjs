// Scenario: four independent chains (copies to overlays) applied with --jobs 1 and with --jobs 4.
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { checkOverlays, makeCopies, overlaysManifest } from '../lib/copies.mjs';
import { measurePasses, minimumRow, rowOf } from '../lib/measure.mjs';
import { chainformLine } from '../lib/shell.mjs';
import { median, positionMatchedRatio, ratioText } from '../lib/stats.mjs';

export const name = 'parallelism';
export const title = 'Parallelism: four independent copies -> overlays, apply --jobs 1 vs --jobs 4';

const CHAINS = 4;

/**
 * A raw template and four full copies of it, each with its own changes: four steps with no
 * dependency between them. Every pass applies the manifest from two fresh folders, with --jobs 1
 * and --jobs 4; the outputs of the accounting pass are compared with their copies.
 */
export async function run({ sizeMiB, runs, changePercent, chainform, workdir, io, log }) {
  log(`making a ${sizeMiB} MiB raw template and ${CHAINS} full copies with ${changePercent}% of clusters changed`);
  const inputs = await makeCopies(join(workdir, 'in'), { sizeMiB, percent: changePercent, count: CHAINS });
  const jobs = { 'apply --jobs 1': 1, [`apply --jobs ${CHAINS}`]: CHAINS };
  const { accounting, timed, orders } = await measurePasses({
    runs,
    io,
    inputs: join(workdir, 'in'),
    workdir,
    log,
    async setup(_pass, passDir) {
      const variants = {};
      for (const [variant, n] of Object.entries(jobs)) {
        const cwd = join(passDir, `jobs${n}`);
        await mkdir(cwd, { recursive: true });
        await writeFile(join(cwd, 'm.yaml'), overlaysManifest(inputs));
        const apply = chainformLine(chainform, 'apply', 'm.yaml', '--yes', '--quiet', '--jobs', String(n));
        variants[variant] = { script: `${apply} >/dev/null`, cwd };
      }
      return variants;
    },
    async after(pass, variants) {
      if (pass === 0) for (const { cwd } of Object.values(variants)) await checkOverlays(cwd, inputs.copies);
    },
  });
  const seconds = (variant) => median(timed[variant].map((m) => m.seconds));
  const speedup = seconds('apply --jobs 1') / seconds(`apply --jobs ${CHAINS}`);
  return {
    rows: [
      ...Object.keys(jobs).map((v) => rowOf(`chainform ${v}`, timed[v], accounting[v])),
      minimumRow(
        'the changed clusters',
        inputs.copies.reduce((sum, c) => sum + c.changed, 0),
      ),
    ],
    notes: [
      `template: ${sizeMiB} MiB raw, all written; ${CHAINS} full copies, ${changePercent}% of clusters changed in each; each step reads its copy and the template in full (safe rebase)`,
      `speed-up of --jobs ${CHAINS} over --jobs 1: ${speedup.toFixed(2)}x (medians) on ${cpus().length} CPUs; at the same place in the pass (positionMatchedRatio): ${ratioText(positionMatchedRatio(timed, orders, 'apply --jobs 1', `apply --jobs ${CHAINS}`))}`,
      'outputs of the accounting pass compared with their copies (qemu-img compare): identical',
    ],
    raw: { chains: CHAINS, orders, accounting, timed },
  };
}
