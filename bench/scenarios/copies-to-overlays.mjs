// Scenario: full raw copies of a template turned into thin qcow2 overlays on it, against the
// hand-typed qemu-img recipe; checks what each overlay stores against what its copy changed.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkOverlays, makeCopies, overlaysManifest } from '../lib/copies.mjs';
import { MiB } from '../lib/images.mjs';
import { measurePasses, minimumRow, processesNote, rowOf } from '../lib/measure.mjs';
import { chainformLine, quote } from '../lib/shell.mjs';
import { median, positionMatchedRatio, ratioText } from '../lib/stats.mjs';

export const name = 'copies-to-overlays';
export const title = 'Copies to overlays: two full raw copies -> thin qcow2 overlays on the raw template';

const TARGET_STORED = 1.1;

/** The hand-typed recipe per copy: overlay on the copy, safe rebase onto the template; then fsync. */
function recipe({ template, copies }) {
  const lines = ['mkdir -p out'];
  for (const c of copies) {
    const out = `out/${c.id}.qcow2`;
    lines.push(`qemu-img create -f qcow2 -b ${quote(c.path)} -F raw ${out} >/dev/null`);
    lines.push(`qemu-img rebase -f qcow2 -b ${quote(template)} -F raw ${out}`);
    lines.push(`sync ${out}`);
  }
  return lines.join('\n');
}

/**
 * Every pass turns the two copies into overlays from two fresh folders, with chainform and with
 * the recipe; every output is compared with its copy and what it stores is measured.
 */
export async function run({ sizeMiB, runs, changePercent, chainform, workdir, io, log }) {
  log(`making a ${sizeMiB} MiB raw template and 2 full copies with ${changePercent}% of clusters changed`);
  const inputs = await makeCopies(join(workdir, 'in'), { sizeMiB, percent: changePercent, count: 2 });
  const stored = { chainform: [], recipe: [] };
  const { accounting, timed, orders } = await measurePasses({
    runs,
    io,
    inputs: join(workdir, 'in'),
    workdir,
    log,
    async setup(_pass, passDir) {
      const dirs = { chainform: join(passDir, 'chainform'), recipe: join(passDir, 'recipe') };
      for (const dir of Object.values(dirs)) await mkdir(dir, { recursive: true });
      await writeFile(join(dirs.chainform, 'm.yaml'), overlaysManifest(inputs));
      return {
        chainform: {
          script: `${chainformLine(chainform, 'apply', 'm.yaml', '--yes', '--quiet')} >/dev/null`,
          cwd: dirs.chainform,
        },
        recipe: { script: recipe(inputs), cwd: dirs.recipe },
      };
    },
    async after(_pass, variants) {
      for (const [variant, { cwd }] of Object.entries(variants)) {
        stored[variant].push(await checkOverlays(cwd, inputs.copies));
      }
    },
  });

  const changedTotal = inputs.copies.reduce((sum, c) => sum + c.changed, 0);
  const storedNotes = inputs.copies.map((c) => {
    const bytes = stored.chainform[0][c.id];
    const same = stored.chainform.every((s) => s[c.id] === bytes) ? '' : ' (differs between runs: see raw)';
    return `${c.id}: chainform's overlay stores ${(bytes / MiB).toFixed(1)} MiB for ${(c.changed / MiB).toFixed(1)} MiB changed (${(bytes / c.changed).toFixed(3)}x, target <= ${TARGET_STORED})${same}; the recipe's ${(stored.recipe[0][c.id] / MiB).toFixed(1)} MiB`;
  });
  const seconds = (variant) => median(timed[variant].map((m) => m.seconds));
  return {
    rows: [
      rowOf('chainform apply', timed.chainform, accounting.chainform),
      rowOf('recipe (create + rebase, per copy)', timed.recipe, accounting.recipe),
      minimumRow('the changed clusters', changedTotal),
    ],
    notes: [
      `template: ${sizeMiB} MiB raw, all written; 2 full copies, ${changePercent}% of clusters changed in each (scattered 64 KiB writes, disjoint sets)`,
      'recipe per copy: qemu-img create -f qcow2 -b COPY -F raw OUT; qemu-img rebase -f qcow2 -b TEMPLATE -F raw OUT; sync OUT (the fsync chainform does too)',
      ...storedNotes,
      ...processesNote('chainform apply', accounting.chainform),
      `wall time chainform / recipe: ${(seconds('chainform') / seconds('recipe')).toFixed(3)} (medians); at the same place in the pass (positionMatchedRatio): ${ratioText(positionMatchedRatio(timed, orders, 'chainform', 'recipe'), 3)}`,
      'reads: finding the changes of a raw copy needs the whole copy and the template read; "read/min" is against the changed clusters all the same',
      'every output of every pass compared with its copy (qemu-img compare): identical',
    ],
    raw: {
      changedPerCopy: Object.fromEntries(inputs.copies.map((c) => [c.id, c.changed])),
      orders,
      stored,
      accounting,
      timed,
    },
  };
}
