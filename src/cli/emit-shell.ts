// `plan --emit sh`: the plan as a POSIX shell script, for review or for hosts without chainform.
// It runs the same argv in the same order, with the same safety: `set -eu`, every argument
// quoted, new images written under their temporary names and renamed only when complete, checks
// (`qemu-img compare`) choosing between a step's two branches, and qemu-nbd helpers started in
// a private folder and stopped on exit. It does not keep chainform's ledger.
import { dirname } from 'node:path';
import type { Plan, PlannedCommand, Step } from '../planner/plan-types.js';
import { RUNTIME_DIR, temporariesOf } from '../planner/plan-types.js';
import type { Argv } from '../qemu/commands.js';
import type { Fingerprint } from '../state/fingerprint.js';

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
  const temporaries = temporariesOf(step);
  // A step computed from a file's metadata (a delta's ranges) holds only while that file is unchanged.
  for (const planned of step.plannedFrom ?? []) out.push(unchangedLine(planned.path, planned.fingerprint));
  for (const t of temporaries) out.push(`mkdir -p -- ${quoteArg(dirname(t.temporaryPath))}`);
  for (const t of temporaries) out.push(`rm -f -- ${quoteArg(t.temporaryPath)}`);
  // Killed or failing, the step's temporary files go too (the EXIT trap; signals exit first).
  if (temporaries.length) {
    out.push(
      `trap ${quoteArg(`rm -f -- ${temporaries.map((t) => quoteArg(t.temporaryPath)).join(' ')}; cleanup`)} EXIT`,
    );
  }
  if (step.helpers?.length) {
    out.push('runtime=$(mktemp -d)');
    for (const helper of step.helpers) {
      out.push(`${line(helper.argv)} &`);
      out.push('helpers="$helpers $!"');
      out.push(`wait_for_socket ${quoteArg(helper.socket)} $!`);
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
  // And again after the commands: a write before qemu opened the file would make them stale.
  for (const planned of step.plannedFrom ?? []) out.push(unchangedLine(planned.path, planned.fingerprint));
  if (step.helpers?.length) out.push('stop_helpers');
  // qemu-img writes with cache=unsafe: flush before a new name makes the file look finished.
  out.push('sync');
  const image = temporaries.at(-1)?.onto ?? '';
  for (const t of temporaries) {
    out.push(`keep_access ${quoteArg(t.onto)} ${quoteArg(t.temporaryPath)} ${quoteArg(image)}`);
    out.push(`mv -f -- ${quoteArg(t.temporaryPath)} ${quoteArg(t.onto)}`);
  }
  if (temporaries.length) out.push('sync', 'trap cleanup EXIT');
  return out;
}

/** Shell functions every script starts with: helper bookkeeping and cleanup on exit or signal. */
const PRELUDE = [
  'helpers=',
  'runtime=',
  'stop_helpers() {',
  '  for pid in $helpers; do kill "$pid" 2>/dev/null || true; done',
  '  helpers=',
  '  if [ -n "$runtime" ]; then rm -rf "$runtime"; runtime=; fi',
  '}',
  'cleanup() { stop_helpers; }',
  'trap cleanup EXIT',
  "trap 'exit 130' INT TERM HUP",
  '# A helper serves once its socket exists; give up if it dies or takes over 15 s.',
  'wait_for_socket() {',
  '  tries=0',
  '  until [ -S "$1" ]; do',
  '    kill -0 "$2" 2>/dev/null || { echo "chainform script: helper $2 stopped before serving" >&2; exit 1; }',
  '    tries=$((tries + 1))',
  '    [ "$tries" -le 150 ] || { echo "chainform script: helper $2 did not start serving" >&2; exit 1; }',
  '    sleep 0.1',
  '  done',
  '}',
  '# A new file takes the owner, group and mode of the regular file it replaces ($1) or, when there',
  '# is none, of the image it belongs to ($3), as apply does; a chown needs root.',
  'keep_access() {',
  '  for from in "$1" "$3"; do',
  '    if [ -n "$from" ] && [ -f "$from" ] && [ ! -L "$from" ]; then',
  '      chown --reference="$from" -- "$2" 2>/dev/null || true',
  '      chmod --reference="$from" -- "$2"',
  '      return',
  '    fi',
  '  done',
  '}',
  '# The plan holds only while every file it was made from is as it was (device, inode, size, mtime).',
  'unchanged() {',
  '  now=$(stat -L -c \'%d %i %s %.9Y\' -- "$1" 2>/dev/null || echo missing)',
  '  [ "$now" = "$2" ] || { echo "chainform script: $1 changed since the plan was made; stopped before anything that reads it ran" >&2; exit 1; }',
  '}',
];

/** `sec.nanoseconds`, as GNU stat's %.9Y prints a modification time. */
function statTime(mtimeNs: string): string {
  const padded = mtimeNs.padStart(10, '0');
  return `${padded.slice(0, -9)}.${padded.slice(-9)}`;
}

/** The script line that stops unless `path` still has fingerprint `print` (null: still missing). */
function unchangedLine(path: string, print: Fingerprint | null): string {
  return print
    ? `unchanged ${quoteArg(path)} ${quoteArg(`${print.dev} ${print.ino} ${print.size} ${statTime(print.mtimeNs)}`)}`
    : `unchanged ${quoteArg(path)} missing`;
}

/**
 * The whole script. `origin` says where it came from (a comment); `files` are the fingerprints
 * of every file the plan was made from: the script refuses to start if any of them changed.
 */
export function emitShell(
  plan: Plan,
  origin: string,
  files: Readonly<Record<string, Fingerprint | null>> = {},
): string {
  const checks = Object.entries(files).map(([path, print]) => unchangedLine(path, print));
  const lines = [
    '#!/bin/sh',
    comment(origin),
    comment(`The plan for ${plan.manifest}: ${plan.steps.length} step(s). Review before running.`),
    comment("It does not update chainform's ledger: chainform will see its outputs as files it did not build."),
    'set -eu',
    ...PRELUDE,
    ...checks,
    ...plan.steps.flatMap(stepLines),
  ];
  if (plan.retire.length) {
    lines.push('', comment('Not done here: deleting the retired files needs the verification chainform runs first.'));
    for (const path of plan.retire) lines.push(comment(`retire ${path}`));
  }
  lines.push('', `echo ${quoteArg(`done: ${plan.steps.length} step(s)`)}`);
  return `${lines.join('\n')}\n`;
}
