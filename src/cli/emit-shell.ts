// `plan --emit sh`: the plan as a POSIX shell script, for review or for hosts without chainform.
// It runs the same argv in the same order, with the same safety: `set -eu`, every argument
// quoted, new images written under their temporary names and renamed only when complete, checks
// (`qemu-img compare`) choosing between a step's two branches, and qemu-nbd helpers started in
// a private folder and stopped on exit. It does not keep chainform's ledger.
import { dirname } from 'node:path';
import type { Plan, PlannedCommand, Step } from '../planner/plan-types.js';
import { RUNTIME_DIR } from '../planner/plan-types.js';
import type { Argv } from '../qemu/commands.js';

/** One argument, single-quoted unless it is plainly safe; `{runtime}` becomes "$runtime". */
function quoteArg(arg: string): string {
  return arg
    .split(RUNTIME_DIR)
    .map((part) => (part === '' || /^[A-Za-z0-9_@%+=:,./-]+$/.test(part) ? part : `'${part.replaceAll("'", `'\\''`)}'`))
    .join('"$runtime"');
}

function line(argv: Argv): string {
  return argv.map(quoteArg).join(' ');
}

/** A comment line: no newline can end the comment early. */
function comment(text: string): string {
  return `# ${text.replaceAll('\n', ' ')}`;
}

function commands(list: readonly PlannedCommand[], indent: string): string[] {
  return list.filter((c) => !c.check).map((c) => `${indent}${line(c.argv)}`);
}

/** The script lines of one step. */
function stepLines(step: Step): string[] {
  const out = ['', comment(`${step.id}: ${step.reason}`)];
  const temporaries = [
    ...(step.extraTemporaries ?? []),
    ...(step.temporaryPath ? [{ temporaryPath: step.temporaryPath, path: step.path }] : []),
  ];
  for (const t of temporaries) out.push(`mkdir -p -- ${quoteArg(dirname(t.path))}`);
  for (const t of temporaries) out.push(`rm -f -- ${quoteArg(t.temporaryPath)}`);
  if (step.helpers?.length) {
    out.push('runtime=$(mktemp -d)');
    out.push('helpers=');
    out.push('trap \'for pid in $helpers; do kill "$pid" 2>/dev/null || true; done; rm -rf "$runtime"\' EXIT');
    for (const helper of step.helpers) {
      out.push(`${line(helper.argv)} &`);
      out.push('helpers="$helpers $!"');
      out.push(`until [ -S ${quoteArg(helper.socket)} ]; do sleep 1; done`);
    }
  }
  const check = step.commands.find((c) => c.check);
  if (check) {
    out.push('rc=0');
    out.push(`${line(check.argv)} || rc=$?`);
    out.push('if [ "$rc" -eq 0 ]; then');
    out.push(...commands(step.commands.slice(step.commands.indexOf(check) + 1), '  '));
    out.push('elif [ "$rc" -eq 1 ]; then');
    if (step.otherwise?.length) out.push(...commands(step.otherwise, '  '));
    else out.push(`  echo ${quoteArg(`${step.id}: the check found a difference; nothing was changed`)} >&2; exit 1`);
    out.push('else');
    out.push('  exit "$rc"');
    out.push('fi');
  } else {
    out.push(...commands(step.commands, ''));
  }
  if (step.helpers?.length) {
    out.push('for pid in $helpers; do kill "$pid" 2>/dev/null || true; done');
    out.push('rm -rf "$runtime"');
    out.push('trap - EXIT');
  }
  // qemu-img writes with cache=unsafe: flush before a new name makes the file look finished.
  if (temporaries.length || step.temporaryPath === undefined) out.push('sync');
  for (const t of temporaries) out.push(`mv -f -- ${quoteArg(t.temporaryPath)} ${quoteArg(t.path)}`);
  return out;
}

/** The whole script. `origin` says where it came from (a comment). */
export function emitShell(plan: Plan, origin: string): string {
  const lines = [
    '#!/bin/sh',
    comment(origin),
    comment(`The plan for ${plan.manifest}: ${plan.steps.length} step(s). Review before running.`),
    comment("It does not update chainform's ledger: chainform will see its outputs as files it did not build."),
    'set -eu',
    ...plan.steps.flatMap(stepLines),
  ];
  if (plan.retire.length) {
    lines.push('', comment('Not done here: deleting the retired files needs the verification chainform runs first.'));
    for (const path of plan.retire) lines.push(comment(`retire ${path}`));
  }
  lines.push('', `echo ${quoteArg(`done: ${plan.steps.length} step(s)`)}`);
  return `${lines.join('\n')}\n`;
}
