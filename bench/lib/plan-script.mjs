// A chainform plan (`plan --json`) as a plain sh script: the plan's own argv in the plan's order,
// with the durability `chainform apply` gives each step and nothing else (no ledger, journal or
// checks). Used to measure what chainform adds around the same qemu-img work.
import { dirname } from 'node:path';
import { execa } from 'execa';
import { quote, shellLine } from './shell.mjs';

/** What the script does besides the qemu-img commands, for the notes of a scenario. */
export const PLAN_SCRIPT_DOES =
  'plain sh, the plan --json argv in order; per step, as chainform: mkdir -p, the commands, `sync FILE` ' +
  '(fsync) of each output, `mv` of a temporary name to its final one and `sync DIR` (fsync of the folder)';

/** The steps' outputs under the names they are written to, with their final names. */
function outputsOf(step) {
  return [
    ...(step.extraTemporaries ?? []),
    ...(step.temporaryPath ? [{ temporaryPath: step.temporaryPath, path: step.path }] : []),
  ];
}

/**
 * The script for `plan`. Steps with qemu-nbd helpers or `compare` checks are refused: a plain
 * script would have to re-implement chainform's helper and branch handling to run them.
 */
export function planScript(plan) {
  const lines = ['set -eu'];
  for (const step of plan.steps) {
    if (step.helpers?.length || step.commands.some((c) => c.check)) {
      throw new Error(`${step.id}: the plain script runs no helpers or checks`);
    }
    const renames = outputsOf(step);
    for (const dir of new Set(renames.map((r) => dirname(r.path)))) lines.push(`mkdir -p ${quote(dir)}`);
    for (const command of step.commands) lines.push(shellLine(command.argv));
    if (renames.length === 0) lines.push(`sync ${quote(step.path)}`);
    for (const r of renames) lines.push(`sync ${quote(r.temporaryPath)}`);
    for (const r of renames) lines.push(`mv -f ${quote(r.temporaryPath)} ${quote(r.path)}`);
    for (const dir of new Set(renames.map((r) => dirname(r.path)))) lines.push(`sync ${quote(dir)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** `chainform plan --json` of `manifest`, parsed. */
export async function planOf(cli, manifest) {
  const { stdout } = await execa(process.execPath, [cli, 'plan', manifest, '--json']);
  return JSON.parse(stdout);
}
