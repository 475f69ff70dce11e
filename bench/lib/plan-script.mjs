// A chainform plan (`plan --json`) as a plain sh script: the plan's own argv in the plan's order,
// with the durability `chainform apply` gives each step and nothing else (no ledger, journal or
// checks). Used to measure what chainform adds around the same qemu-img work.
import { dirname } from 'node:path';
import { execa } from 'execa';
import { quote, shellLine } from './shell.mjs';

/** What the script does besides the qemu-img commands, for the notes of a scenario. */
export const PLAN_SCRIPT_DOES =
  'plain sh, the plan --json argv in order; per step, as chainform: mkdir -p, helpers as `qemu-nbd --fork` ' +
  '(it returns once serving) in a mode-0700 folder, the commands, `kill` of the helpers (waiting for them to exit), `sync FILE` (fsync) ' +
  'of each output, `mv` of a temporary name to its final one and `sync DIR` (fsync of the folder)';

/** The placeholder chainform's plans use for a step's private runtime folder. */
const RUNTIME_PLACEHOLDER = '{runtime}';

/** The steps' outputs under the names they are written to, with their final names. */
function outputsOf(step) {
  return [
    ...(step.extraTemporaries ?? []),
    ...(step.temporaryPath ? [{ temporaryPath: step.temporaryPath, path: step.path }] : []),
  ];
}

/**
 * The script for `plan`, with `runtimeDir` (a path that does not exist yet) as every step's
 * runtime folder. Helpers (qemu-nbd exports) start with --fork, which returns once the export
 * serves, as a person would start them. Steps with `compare` checks are refused: a plain script
 * would have to re-implement chainform's branch handling to run them.
 */
export function planScript(plan, runtimeDir) {
  const lines = ['set -eu'];
  const inRuntime = (argv) => argv.map((arg) => arg.replaceAll(RUNTIME_PLACEHOLDER, runtimeDir));
  for (const step of plan.steps) {
    if (step.commands.some((c) => c.check)) throw new Error(`${step.id}: the plain script runs no checks`);
    const renames = outputsOf(step);
    for (const dir of new Set(renames.map((r) => dirname(r.path)))) lines.push(`mkdir -p ${quote(dir)}`);
    const helpers = step.helpers ?? [];
    if (helpers.length > 0) lines.push(`mkdir -m 0700 ${quote(runtimeDir)}`);
    helpers.forEach((helper, i) => {
      const [program, ...args] = inRuntime(helper.argv);
      if (program !== 'qemu-nbd') throw new Error(`${step.id}: the plain script starts only qemu-nbd helpers`);
      lines.push(shellLine([program, '--fork', '--pid-file', `${runtimeDir}/helper${i}.pid`, ...args]));
    });
    for (const command of step.commands) lines.push(shellLine(inRuntime(command.argv)));
    // Stopped and waited for, as chainform does. A daemon is not the script's child, so poll its
    // state; once it has exited it may stay a zombie until init reaps it, which counts as gone.
    for (let i = 0; i < helpers.length; i++) {
      lines.push(`pid=$(cat ${quote(`${runtimeDir}/helper${i}.pid`)}); kill "$pid"`);
      lines.push(
        `while [ -e /proc/$pid ] && [ "$(cut -d')' -f2 /proc/$pid/stat 2>/dev/null | cut -c2)" != Z ]; do sleep 0.005; done`,
      );
    }
    if (helpers.length > 0) lines.push(`rm -rf ${quote(runtimeDir)}`);
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
