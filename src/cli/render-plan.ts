// The human-readable dry run: per image, each step's reason and exact commands, then a summary.
import { type Plan, type Step, temporariesOf } from '../planner/plan-types.js';
import { shellQuote } from '../util/shell-quote.js';
import { formatBytes, plural, shownPath } from './format.js';
import type { Styler } from './style.js';

const ACTION_MARK = { create: '+', replace: '-/+', reshape: '~', unchanged: '=' } as const;

function describeBytes(step: Step): string {
  return `${step.writeBytesIsUpperBound ? 'up to ' : '~'}${formatBytes(step.expectedWriteBytes)}`;
}

/** What a reshaped image undergoes, by its steps: a new backing link wins over the rest. */
function reshapeKind(steps: readonly Step[]): string {
  const kinds = new Set(steps.map((s) => s.kind));
  if (['rebase', 'repoint', 'verified-repoint'].some((k) => kinds.has(k as Step['kind']))) return 'rebase';
  if (kinds.has('amend')) return 'amend';
  if (kinds.has('resize')) return 'resize';
  return 'rewrite';
}

/** "1 to create, 2 to rebase, 1 unchanged": images per action, zero counts left out. */
function imageCounts(plan: Plan): string {
  const stepsById = new Map(plan.steps.map((s) => [s.id, s]));
  const counts = new Map<string, number>();
  for (const image of plan.images) {
    const steps = image.steps.map((id) => stepsById.get(id)).filter((s): s is Step => s !== undefined);
    const what = image.action === 'reshape' ? reshapeKind(steps) : image.action;
    counts.set(what, (counts.get(what) ?? 0) + 1);
  }
  const order = ['create', 'replace', 'rebase', 'rewrite', 'amend', 'resize'];
  const parts = order.filter((k) => counts.get(k)).map((k) => `${counts.get(k)} to ${k}`);
  return [...parts, `${counts.get('unchanged') ?? 0} unchanged`].join(', ');
}

/** `-c` commands of a qemu-io line shown in full; the rest are counted (`plan --json` lists all). */
const SHOWN_IO_COMMANDS = 3;

/** A command line as shown: exact, except that a long run of qemu-io reads is shortened. */
export function displayCommand(argv: readonly string[]): string {
  if (argv[0] !== 'qemu-io') return shellQuote(argv);
  const first = argv.indexOf('-c');
  let end = first;
  while (end >= 0 && argv[end] === '-c' && argv[end + 1]?.startsWith('read ')) end += 2;
  const reads = (end - first) / 2;
  if (first < 0 || reads <= SHOWN_IO_COMMANDS) return shellQuote(argv);
  const head = argv.slice(0, first + 2 * SHOWN_IO_COMMANDS);
  return `${shellQuote(head)} ... (${reads - SHOWN_IO_COMMANDS} more reads) ${shellQuote(argv.slice(end))}`;
}

/** What the plan is shown for, besides the plan itself. */
export interface PlanView {
  /** Files the manifest retires that are not there (deleted already, or mistyped). */
  retireGone?: readonly string[];
  /** False for an apply run with --no-space-check, which starts even when the writes do not fit. */
  spaceCheck?: boolean;
}

/** Renders a plan. `cwd` shortens paths in headings (commands keep their exact absolute form). */
export function renderPlan(plan: Plan, style: Styler, cwd: string, view: PlanView = {}): string {
  const lines: string[] = [];
  const show = (path: string) => shownPath(cwd, path);
  const stepsById = new Map(plan.steps.map((s) => [s.id, s]));
  for (const image of plan.images) {
    const mark = ACTION_MARK[image.action];
    const colour = image.action === 'unchanged' ? 'dim' : image.action === 'replace' ? 'yellow' : 'green';
    lines.push(`${style.paint(colour, `${mark} ${image.id}`)}  ${show(image.path)}  (${image.action})`);
    for (const id of image.steps) {
      const step = stepsById.get(id);
      if (!step) continue;
      lines.push(`    ${style.paint('bold', step.id)}  writes ${describeBytes(step)}`);
      lines.push(`      why: ${step.reason}`);
      if (step.dependsOn.length) lines.push(`      after: ${step.dependsOn.join(', ')}`);
      if (step.finishAfter) {
        const from = step.commands[step.finishAfter.beforeCommand]?.argv.slice(0, 2).join(' ') ?? 'the end';
        lines.push(
          `      after: ${step.finishAfter.steps.join(', ')}, from its ${from} on (with --jobs 2 or more, the commands before run beside it)`,
        );
      }
      for (const helper of step.helpers ?? []) {
        lines.push(style.paint('dim', `      with helper (${helper.purpose}):`));
        lines.push(style.paint('cyan', `      $ ${shellQuote(helper.argv)}`));
      }
      for (const command of step.commands) {
        lines.push(style.paint('cyan', `      $ ${displayCommand(command.argv)}`));
        if (command.check) lines.push('      if identical:');
      }
      if (step.otherwise?.length) {
        lines.push('      if different, instead:');
        for (const command of step.otherwise) {
          lines.push(style.paint('cyan', `      $ ${shellQuote(command.argv)}`));
        }
      }
      for (const { temporaryPath, path, onto } of temporariesOf(step)) {
        const target = onto === path ? show(path) : `${show(onto)} (the file ${show(path)} links to)`;
        lines.push(style.paint('dim', `      then: flush, rename ${show(temporaryPath)} -> ${target}`));
      }
    }
  }
  const total = plan.steps.reduce((sum, s) => sum + s.expectedWriteBytes, 0);
  lines.push('');
  if (plan.retire.length) {
    lines.push(style.paint('red', 'Files to retire (deleted once the new layout is verified):'));
    for (const path of plan.retire) lines.push(style.paint('red', `  - ${show(path)}`));
  }
  // Said, so that a mistyped name does not pass for a file already deleted.
  for (const path of view.retireGone ?? [])
    lines.push(`Listed under retire, not there (nothing to delete): ${show(path)}`);
  // Totals are bounds only when every step's figure is one (a diff's or rebase's is an estimate).
  const upTo = plan.steps.every((step) => step.writeBytesIsUpperBound) ? 'up to ' : 'about ';
  if (plan.steps.length === 0 && plan.retire.length === 0) {
    lines.push(
      style.paint(
        'green',
        `No changes: ${plan.images.length === 1 ? 'the image matches' : plan.images.length === 2 ? 'both images match' : `all ${plan.images.length} images match`} the manifest.`,
      ),
    );
  } else {
    lines.push(
      `Plan: ${imageCounts(plan)}; ${plural(plan.steps.length, 'step')} writing ${upTo}${formatBytes(total)}${plan.retire.length ? `; ${plural(plan.retire.length, 'file')} to retire` : ''}.`,
    );
  }
  if (plan.steps.some((s) => s.helpers?.length)) {
    lines.push(style.paint('dim', '{runtime} is a private folder (mode 0700) made for the step and removed after it.'));
  }
  for (const space of plan.space) {
    const verdict = space.fits
      ? style.paint('green', 'fits')
      : style.paint(
          'red',
          `does NOT fit (${view.spaceCheck === false ? '--no-space-check: apply starts anyway' : 'apply refuses'})`,
        );
    lines.push(
      `Free space in ${show(space.dir)}: ${formatBytes(space.freeBytes)}; this plan writes ${upTo}${formatBytes(space.expectedWriteBytes)}: ${verdict}.`,
    );
  }
  return lines.join('\n');
}
