// Scenario: planning at scale, measured by bench/planner-scale.mjs (run as a child process) and
// read back from the bench-planner-results.json it writes in its working folder.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { spread } from '../lib/stats.mjs';

export const name = 'planner';
export const title = 'Planner at scale: validate + plan of many in-sync chains (bench/planner-scale.mjs)';

const SCRIPT = new URL('../planner-scale.mjs', import.meta.url).pathname;

export async function run({ runs, plannerChains, workdir, log }) {
  const args = [SCRIPT, '--runs', String(runs), ...(plannerChains ? ['--chains', String(plannerChains)] : [])];
  log(`node bench/planner-scale.mjs ${args.slice(1).join(' ')}`);
  const child = await execa(process.execPath, args, { cwd: workdir, stderr: 'inherit' });
  const { summary, results } = JSON.parse(await readFile(join(workdir, 'bench-planner-results.json'), 'utf8'));
  const seconds = results.map((r) => r.ms / 1000);
  const peak = spread(results.map((r) => r.peakMiB));
  return {
    rows: [{ variant: `validate + plan, ${summary.images} images`, wallSeconds: spread(seconds) }],
    notes: [
      `${summary.images} images (${summary.clusterSize}-byte clusters) in ${summary.chains} chains of ${summary.depth}, all in sync; ${summary.steps} steps planned`,
      `wall time is validate + plan inside the child (not process start-up); peak RSS ${peak.median.toFixed(0)} MiB (${peak.min.toFixed(0)}-${peak.max.toFixed(0)})`,
      `qemu-img processes the inspection would spawn: ${summary.qemuImgCalls} (${summary.qemuImgCallsPerChain} per chain; answered from recorded JSON, none run)`,
    ],
    raw: { summary, results, output: child.stdout },
  };
}
