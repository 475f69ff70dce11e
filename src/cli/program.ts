// The `chainform` command line, built on the library API in ../api.ts.
import { existsSync, lstatSync, type Stats, statSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import writeFileAtomic from 'write-file-atomic';
import {
  apply,
  checkSavedPlan,
  importLayout,
  loadManifest,
  loadSavedPlan,
  plan,
  recover,
  savePlan,
  spaceShortfalls,
  validate,
} from '../api.js';
import type { Diagnostic } from '../diagnostics/diagnostic.js';
import type { RunSummary } from '../executor/events.js';
import { DEFAULT_JOBS } from '../executor/execute-plan.js';
import type { Recovery } from '../executor/recover-interrupted.js';
import { looksLikeManifest } from '../manifest/load-manifest.js';
import type { ResolvedManifest } from '../manifest/resolve-manifest.js';
import { currentGraph, desiredGraph } from '../planner/chain-graph.js';
import { type Drift, driftOf, refusalDrift } from '../planner/drift.js';
import type { Plan } from '../planner/plan-types.js';
import type { SavedPlan } from '../planner/saved-plan.js';
import { acquireApplyLock } from '../state/apply-lock.js';
import { VERSION } from '../version.js';
import { emitShell } from './emit-shell.js';
import { formatBytes, plural } from './format.js';
import {
  createJsonRenderer,
  createListrRenderer,
  createPlainRenderer,
  createQuietRenderer,
} from './progress-renderers.js';
import { renderDot, renderMermaid } from './render-graph.js';
import { displayCommand, renderPlan } from './render-plan.js';
import { renderStatus } from './render-status.js';
import { renderDiagnostics } from './report-diagnostics.js';
import { createStyler } from './style.js';

/** Where the CLI writes; swappable so tests can capture output. */
export interface CliIO {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  stdin: NodeJS.ReadStream;
  cwd: string;
}

/** Exit codes: 0 ok / no changes, 1 error, 2 changes pending (plan --detailed-exitcode, status). */
export const EXIT = { ok: 0, error: 1, changes: 2, interrupted: 130 } as const;

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new InvalidArgumentError('expected a whole number from 1 to 64');
  return n;
}

/**
 * The files a manifest retires that are not there: the plan lists those it will delete, and
 * refuses anything else at a retired path (a symlink, to nothing too; a folder).
 */
function retireGone(planned: { manifest: ResolvedManifest; plan: Plan }): string[] {
  const listed = new Set(planned.plan.retire);
  // A name the plan leaves out is not there, or leads to a listed file through a symlinked folder.
  const unlisted = new Set(planned.manifest.retire.map((r) => r.path).filter((path) => !listed.has(path)));
  return [...unlisted].filter((path) => !existsSync(path));
}

/**
 * Why `import` may not write its manifest to `output` (as `named` on the command line), or
 * undefined: its folder must exist, and what is there already must be a plain file, replaced
 * only with --force and only when it is an earlier manifest.
 */
function manifestFileRefusal(named: string, output: string, force: boolean): string | undefined {
  let there: Stats | undefined;
  try {
    if (!statSync(dirname(output), { throwIfNoEntry: false })?.isDirectory())
      return `the folder of ${named} does not exist (nothing was written)`;
    there = lstatSync(output, { throwIfNoEntry: false });
  } catch (e) {
    return `${named} cannot be written: ${(e as Error).message} (nothing was written)`;
  }
  if (!there) return undefined;
  if (!there.isFile())
    return `${named} is not a plain file (a folder, a symlink or a device): name a file for the manifest (nothing was written)`;
  if (!force) return `${named} exists; pass --force to overwrite it (nothing was written)`;
  // --force replaces an earlier manifest only: never a disk image (a raw one, or a vmdk's extent,
  // has no header to tell it by) or any other file.
  if (!looksLikeManifest(output))
    return `${named} is not a manifest (a YAML mapping with version and images): --force replaces only an earlier manifest; name another file (nothing was written)`;
  return undefined;
}

/** Retired files that were not there to delete, as lines of an apply's summary. */
function notThereLines(paths: readonly string[]): string[] {
  return paths.map((path) => `  not retired ${path}: not there (deleted already, or a mistyped name)`);
}

/** The closing summary of an apply; `notThere`: retired files that were not there to delete. */
function summaryLines(summary: RunSummary, notThere: readonly string[] = []): string[] {
  const stopped = summary.failed.filter((f) => f.interrupted).length;
  const failedOnTheirOwn = summary.failed.length - stopped;
  const lines = [
    summary.ok
      ? `Apply complete: ${plural(summary.done.length, 'step')} done in ${(summary.durationMs / 1000).toFixed(1)}s.`
      : `Apply ${summary.interrupted ? 'interrupted' : 'failed'}: ${[
          `${summary.done.length} done`,
          // A step stopped by the interruption did not fail on its own: counted apart.
          ...(stopped > 0 ? [`${stopped} stopped`] : []),
          ...(failedOnTheirOwn > 0 || stopped === 0 ? [`${failedOnTheirOwn} failed`] : []),
          `${summary.notStarted.length} not started`,
        ].join(', ')}.`,
  ];
  for (const failure of summary.failed) {
    lines.push(`  ${failure.interrupted ? 'stopped' : 'failed'}: ${failure.message}`);
    if (failure.argv) lines.push(`    command: ${displayCommand(failure.argv)}`);
  }
  if (summary.notStarted.length) lines.push(`  not started: ${summary.notStarted.join(', ')}`);
  for (const check of summary.verified ?? []) {
    lines.push(`  ${check.ok ? 'verified' : 'MISMATCH'} ${check.image}: ${check.detail}`);
  }
  for (const path of summary.retired ?? []) lines.push(`  retired (deleted) ${path}`);
  // Files kept because of a retire failure are already listed as failures.
  const retireFailed = summary.failed.some((f) => f.stepId === 'retire');
  for (const kept of retireFailed ? [] : (summary.keptFromRetire ?? []))
    lines.push(`  not retired ${kept.path}: ${kept.reason}`);
  lines.push(...notThereLines(notThere));
  if (!summary.ok) {
    const changedInPlace = summary.failed.flatMap((f) => (f.changedInPlace ? [f.changedInPlace] : []));
    for (const path of changedInPlace)
      lines.push(
        `  ${path} was being changed in place when its step stopped: it (and its data file, if it has one) may hold part of the change`,
      );
    // Retired files are deleted because the manifest says so; they are not counted as inputs.
    const retired = summary.retired?.length ?? 0;
    // Only an interruption needs no fix; a step that failed on its own does, Ctrl-C or not.
    const onlyInterrupted = summary.interrupted && summary.failed.every((f) => f.interrupted);
    lines.push(
      `${changedInPlace.length ? 'Apart from that, inputs' : 'Inputs'} were not modified${retired ? ` (the ${plural(retired, 'retired file')} above ${retired === 1 ? 'was' : 'were'} deleted, as the manifest asks)` : ''}; temporary files were removed. ${onlyInterrupted ? 'Run apply again to go on.' : 'Fix the cause and run apply again.'}`,
    );
  }
  return lines;
}

/** How much of a file `apply FILE` reads to tell a saved plan from a manifest. */
const SAVED_PLAN_HEAD_BYTES = 4096;

/** The first `bytes` bytes of a file, as UTF-8 text. */
async function readStart(path: string, bytes: number): Promise<string> {
  const handle = await open(path, 'r');
  try {
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(bytes), 0, bytes, 0);
    return buffer.toString('utf8', 0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** What the cleanup after a killed apply found and did, in words. */
function recoveryLines(recovery: Recovery): string[] {
  const { run } = recovery;
  const lines = [`Resuming after an apply that was killed (pid ${run.pid} on ${run.host}, started ${run.startedAt}):`];
  if (recovery.doneSteps.length) lines.push(`  finished then: ${recovery.doneSteps.join(', ')}`);
  if (recovery.changedSteps.length)
    lines.push(`  finished then, changed since (planned again): ${recovery.changedSteps.join(', ')}`);
  if (recovery.interruptedSteps.length)
    lines.push(`  interrupted (will be redone): ${recovery.interruptedSteps.join(', ')}`);
  if (recovery.stoppedCommands.length)
    lines.push(`  stopped ${plural(recovery.stoppedCommands.length, 'leftover command')}`);
  if (recovery.stoppedHelpers.length) {
    const programs = [...new Set(recovery.stoppedHelpers.map((argv) => basename(argv[0] ?? '')))].join(', ');
    lines.push(`  stopped ${plural(recovery.stoppedHelpers.length, 'leftover helper')} (${programs})`);
  }
  for (const path of recovery.repaired)
    lines.push(`  repaired the refcounts of ${path} (left dirty by the interrupted step)`);
  for (const { path, reason } of recovery.unrepaired) lines.push(`  could not repair ${path}: ${reason}`);
  if (recovery.removedTemporaries.length)
    lines.push(`  removed ${plural(recovery.removedTemporaries.length, 'half-written temporary file')}`);
  if (recovery.removedUncommitted.length)
    lines.push(
      `  removed ${plural(recovery.removedUncommitted.length, 'file')} renamed into place before its image was (${recovery.removedUncommitted.join(', ')})`,
    );
  return lines;
}

async function confirm(io: CliIO, question: string): Promise<boolean> {
  const rl = createInterface({ input: io.stdin, output: io.stderr });
  try {
    const answer = await rl.question(question);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

/** Flags of `chainform apply`. */
interface ApplyFlags {
  yes?: boolean;
  jobs: number;
  dryRun?: boolean;
  verbose?: boolean;
  /** False with --no-space-check. */
  spaceCheck?: boolean;
  verify?: boolean;
  /** `json`: one JSON object per line (plan, events, summary) instead of text. */
  output?: 'text' | 'json';
  /** Only errors and the closing summary. */
  quiet?: boolean;
}

/** Builds the commander program; `run` parses argv and resolves to the exit code. */
export function createProgram(io: CliIO): { run(argv: readonly string[]): Promise<number> } {
  let exitCode: number = EXIT.ok;
  const program = new Command('chainform')
    .description('Reshape QEMU disk-image backing chains from a declarative manifest, with qemu-img doing the work.')
    .version(VERSION)
    .option('--no-color', 'plain output without colours (NO_COLOR is honoured too)')
    .showHelpAfterError()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride();

  const styleOut = () => createStyler(program.opts().color !== false, io.stdout);
  const styleErr = () => createStyler(program.opts().color !== false, io.stderr);
  const reportProblems = (diagnostics: readonly Diagnostic[]) => {
    io.stderr.write(`${renderDiagnostics(diagnostics, styleErr(), io.cwd)}\n`);
  };

  program
    .command('validate')
    .description('check a manifest (schema, semantics, named snapshots); writes nothing')
    .argument('<manifest>', 'the manifest YAML file')
    .addHelpText('after', '\nExample:\n  chainform validate examples/copies-to-overlays/manifest.yaml')
    .action(async (file: string) => {
      const loaded = await validate(file);
      if (!loaded.ok) {
        reportProblems(loaded.diagnostics);
        exitCode = EXIT.error;
        return;
      }
      if (loaded.warnings.length) reportProblems(loaded.warnings);
      io.stdout.write(`${file}: valid (${plural(loaded.manifest.images.length, 'image')})\n`);
    });

  program
    .command('plan')
    .description('show the steps that would reach the manifest (a dry run: nothing is written)')
    .argument('<manifest>', 'the manifest YAML file')
    .option('--json', 'print the plan as JSON (see README: "Plan JSON")')
    .option('--detailed-exitcode', 'exit 0 when there is nothing to do, 2 when there are changes')
    .addOption(new Option('--emit <format>', 'print the plan as a POSIX shell script').choices(['sh']))
    .option('-o, --out <file>', 'also save the plan, for `chainform apply FILE` to run exactly it')
    .addHelpText(
      'after',
      '\nExamples:\n  chainform plan manifest.yaml\n  chainform plan manifest.yaml --json --detailed-exitcode\n  chainform plan manifest.yaml --emit sh > reshape.sh',
    )
    .action(async (file: string, opts: { json?: boolean; detailedExitcode?: boolean; emit?: 'sh'; out?: string }) => {
      const planned = await plan(file);
      if (!planned.ok) {
        reportProblems(planned.diagnostics);
        exitCode = EXIT.error;
        return;
      }
      if (opts.out) {
        const out = resolve(io.cwd, opts.out);
        // Only a saved plan is ever overwritten: never the manifest, an image or anything else.
        if (existsSync(out) && !(await savedPlanIn(out))) {
          io.stderr.write(
            `error: ${opts.out} exists and is not a saved plan; choose another file (nothing was written)\n`,
          );
          exitCode = EXIT.error;
          return;
        }
        try {
          await writeFileAtomic(out, `${JSON.stringify(savePlan(planned), null, 2)}\n`);
        } catch (e) {
          io.stderr.write(`error: cannot write ${opts.out}: ${(e as Error).message}\n`);
          exitCode = EXIT.error;
          return;
        }
        io.stderr.write(`Saved the plan to ${opts.out}; \`chainform apply ${opts.out}\` runs exactly it.\n`);
      }
      if (opts.emit === 'sh') {
        if (planned.warnings.length) reportProblems(planned.warnings);
        io.stdout.write(
          emitShell(
            planned.plan,
            `Written by chainform ${VERSION} plan --emit sh on ${new Date().toISOString()}.`,
            planned.files,
          ),
        );
      } else if (opts.json) {
        io.stdout.write(`${JSON.stringify({ kind: 'chainform-plan', ...planned.plan }, null, 2)}\n`);
      } else {
        if (planned.warnings.length) reportProblems(planned.warnings);
        io.stdout.write(`${renderPlan(planned.plan, styleOut(), io.cwd, { retireGone: retireGone(planned) })}\n`);
      }
      const changes = planned.plan.steps.length + planned.plan.retire.length;
      if (opts.detailedExitcode && changes > 0) exitCode = EXIT.changes;
    });

  program
    .command('status')
    .description('report drift between the manifest and the disk: exit 0 in sync, 2 drift, 1 error')
    .argument('<manifest>', 'the manifest YAML file')
    .option('--json', 'print the drift as JSON')
    .addHelpText(
      'after',
      '\nExamples:\n  chainform status manifest.yaml\n  chainform status manifest.yaml --json || alert',
    )
    .action(async (file: string, opts: { json?: boolean }) => {
      const planned = await plan(file);
      const loaded = planned.ok ? undefined : await loadManifest(file);
      const refused =
        !planned.ok && loaded?.ok
          ? refusalDrift(
              loaded.manifest.images,
              planned.diagnostics.filter((d) => d.severity === 'error'),
            )
          : undefined;
      if (!planned.ok && !refused) {
        reportProblems(planned.diagnostics);
        exitCode = EXIT.error;
        return;
      }
      const drift = planned.ok ? driftOf(planned.plan) : (refused as Drift);
      const warnings = planned.ok ? planned.warnings : [];
      if (opts.json) io.stdout.write(`${JSON.stringify({ kind: 'chainform-status', ...drift }, null, 2)}\n`);
      else {
        if (warnings.length) reportProblems(warnings);
        io.stdout.write(`${renderStatus(drift, styleOut(), io.cwd, file)}\n`);
      }
      exitCode = drift.inSync ? EXIT.ok : EXIT.changes;
    });

  program
    .command('graph')
    .description('draw the chains, as they are on disk or as the manifest wants them (read-only)')
    .argument('<manifest>', 'the manifest YAML file')
    .addOption(
      new Option('--format <format>', 'mermaid (Markdown, GitHub) or dot (Graphviz)')
        .choices(['mermaid', 'dot'])
        .default('mermaid'),
    )
    .option('--current', 'the chains on disk now (the default)')
    .option('--desired', 'the chains the manifest asks for, with the bytes the plan writes')
    .addHelpText(
      'after',
      '\nExamples:\n  chainform graph manifest.yaml\n  chainform graph manifest.yaml --desired --format dot | dot -Tsvg > after.svg',
    )
    .action(async (file: string, opts: { format: 'mermaid' | 'dot'; current?: boolean; desired?: boolean }) => {
      if (opts.current && opts.desired) {
        io.stderr.write('error: choose one of --current and --desired\n');
        exitCode = EXIT.error;
        return;
      }
      const planned = await plan(file);
      if (!planned.ok) {
        reportProblems(planned.diagnostics);
        exitCode = EXIT.error;
        return;
      }
      const graph = opts.desired
        ? desiredGraph(planned.manifest, planned.layout, planned.plan)
        : currentGraph(planned.manifest, planned.layout);
      const cwd = dirname(planned.manifest.file);
      io.stdout.write(`${opts.format === 'dot' ? renderDot(graph, cwd) : renderMermaid(graph, cwd)}\n`);
    });

  program
    .command('apply')
    .description('plan, then run the steps with qemu-img')
    .argument('<manifest>', 'the manifest YAML file, or a plan saved with `plan --out`')
    .option('-y, --yes', 'do not ask for confirmation (required without a terminal)')
    .addOption(
      new Option('-j, --jobs <n>', 'steps to run at once')
        .argParser(positiveInt)
        .default(DEFAULT_JOBS, 'one per CPU, at most 4'),
    )
    .option('--dry-run', 'show the plan and the commands, run nothing')
    .option('-v, --verbose', 'print each qemu-img command as it runs')
    .option('-q, --quiet', 'print only errors and the closing summary')
    .addOption(
      new Option('--output <format>', 'text for people, json for one JSON object per line')
        .choices(['text', 'json'])
        .default('text'),
    )
    .option('--verify', 'afterwards, compare every output with its source and check every qcow2 image')
    .option('--no-space-check', 'start even when the writes exceed the free space (compressing filesystems)')
    .addHelpText(
      'after',
      '\nExamples:\n  chainform apply manifest.yaml\n  chainform apply manifest.yaml --yes --jobs 4\n  chainform plan manifest.yaml --out plan.json && chainform apply plan.json',
    )
    .action(async (file: string, opts: ApplyFlags) => {
      const saved = await savedPlanIn(resolve(io.cwd, file));
      if (saved && !saved.ok) {
        reportProblems(saved.diagnostics);
        exitCode = EXIT.error;
        return;
      }
      const savedPlan = saved?.saved;
      const manifestPath = savedPlan ? savedPlan.manifest.path : resolve(io.cwd, file);
      // A dry run writes nothing, and a missing manifest is reported by plan: neither locks.
      if (opts.dryRun || !existsSync(manifestPath)) {
        await applyManifest(file, opts, savedPlan);
        return;
      }
      const lock = await acquireApplyLock(dirname(manifestPath));
      if (!lock.ok) {
        const who = lock.holder
          ? `process ${lock.holder.pid} on ${lock.holder.host}, running since ${lock.holder.startedAt}`
          : 'another process';
        io.stderr.write(
          `error: another apply is running for this manifest's folder (${who}); nothing was changed\n  lock: ${lock.lockPath}\n`,
        );
        exitCode = EXIT.error;
        return;
      }
      try {
        const recovery = await recover(manifestPath);
        if (recovery && opts.output === 'json')
          io.stdout.write(`${JSON.stringify({ type: 'recovery', ...recovery })}\n`);
        else if (recovery && !opts.quiet) io.stdout.write(`${recoveryLines(recovery).join('\n')}\n\n`);
        await applyManifest(file, opts, savedPlan, recovery?.doneSteps ?? []);
      } finally {
        await lock.release();
      }
    });

  /** A saved plan that still applies, or undefined after saying why it is stale. */
  async function savedPlanToApply(
    file: string,
    saved: SavedPlan,
  ): Promise<
    | { ok: true; plan: Plan; manifest: ResolvedManifest; warnings: Diagnostic[] }
    | { ok: false; diagnostics: Diagnostic[] }
    | undefined
  > {
    const checked = await checkSavedPlan(saved);
    // The warnings the plan was made with (a saved plan is not planned again).
    if (checked.ok) return { ...checked, warnings: checked.plan.warnings };
    if ('diagnostics' in checked) return checked;
    io.stderr.write(`error: the saved plan ${file} is stale; nothing was changed:\n`);
    for (const reason of checked.stale) io.stderr.write(`  - ${reason}\n`);
    io.stderr.write(
      `  hint: make it again with \`chainform plan ${saved.manifest.path} --out ${file}\` and review it\n`,
    );
    exitCode = EXIT.error;
    return undefined;
  }

  /** plan (or take a saved one), show, confirm, run and summarise; the caller holds the apply lock. */
  async function applyManifest(
    file: string,
    opts: ApplyFlags,
    saved?: SavedPlan,
    finishedBefore: readonly string[] = [],
  ): Promise<void> {
    // Nothing shows the plan's byte figures in quiet text mode: measures run only where the
    // free-space check needs them.
    const measure = opts.quiet && opts.output !== 'json' ? 'when-space-is-tight' : 'always';
    const planned = saved ? await savedPlanToApply(file, saved) : await plan(file, { measure });
    if (!planned) return;
    if (!planned.ok) {
      reportProblems(planned.diagnostics);
      exitCode = EXIT.error;
      return;
    }
    const json = opts.output === 'json';
    if (planned.warnings.length && !opts.quiet) reportProblems(planned.warnings);
    const notThere = retireGone(planned);
    if (json) {
      const missing = notThere.length > 0 ? { retireNotThere: notThere } : {};
      io.stdout.write(`${JSON.stringify({ type: 'plan', plan: planned.plan, ...missing })}\n`);
    } else if (!opts.quiet) {
      const view = { retireGone: notThere, spaceCheck: opts.spaceCheck !== false };
      io.stdout.write(`${renderPlan(planned.plan, styleOut(), io.cwd, view)}\n`);
    }
    const retiring = planned.plan.retire.length;
    const nothingToRun = planned.plan.steps.length === 0 && retiring === 0 && !opts.verify;
    if (nothingToRun || opts.dryRun) {
      // JSON mode always closes with a summary, so a machine can tell how it ended.
      if (json) {
        const summary = { ok: true, done: [], failed: [], notStarted: [], interrupted: false, durationMs: 0 };
        io.stdout.write(`${JSON.stringify({ type: 'summary', ...summary, dryRun: opts.dryRun === true })}\n`);
      } else if (opts.dryRun && !nothingToRun) io.stdout.write('\nDry run: nothing was changed.\n');
      // Quiet shows no plan: a mistyped retired name must not pass for a deleted file there either.
      else if (opts.quiet && notThere.length > 0) io.stdout.write(`${notThereLines(notThere).join('\n')}\n`);
      return;
    }
    const short = opts.spaceCheck === false ? [] : spaceShortfalls(planned.plan);
    if (short.length > 0) {
      for (const space of short) {
        io.stderr.write(
          `error: not enough free space in ${space.dir}: the plan writes about ${formatBytes(space.expectedWriteBytes)} there and ${formatBytes(space.freeBytes)} is free; nothing was changed\n`,
        );
      }
      io.stderr.write(
        '  hint: free some space or put the outputs on another filesystem; --no-space-check starts anyway (e.g. on a compressing filesystem)\n',
      );
      exitCode = EXIT.error;
      return;
    }
    if (!opts.yes) {
      if (!io.stdin.isTTY) {
        io.stderr.write('error: apply needs --yes when not run on a terminal (nothing was changed)\n');
        exitCode = EXIT.error;
        return;
      }
      const deleting = retiring ? ` and delete ${plural(retiring, 'retired file')}` : '';
      if (!(await confirm(io, `\nApply ${plural(planned.plan.steps.length, 'step')}${deleting}? [y/N] `))) {
        io.stderr.write('Cancelled: nothing was changed.\n');
        return;
      }
    }
    const controller = new AbortController();
    // `on`, not `once`: execa's exit handler re-raises the signal when it is the last listener left.
    const onSignal = () => controller.abort();
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    process.on('SIGHUP', onSignal);
    // Steps the killed run finished (and that need nothing now) are shown as skipped.
    const skipped = finishedBefore.filter((id) => !planned.plan.steps.some((step) => step.id === id));
    const renderer = json
      ? createJsonRenderer((line) => io.stdout.write(`${line}\n`))
      : opts.quiet
        ? createQuietRenderer()
        : // A terminal that reports no width (some pseudo-terminals) would get one character a line.
          io.stdout.isTTY && (io.stdout.columns ?? 0) >= 20
          ? createListrRenderer(planned.plan, opts.verbose === true, skipped)
          : createPlainRenderer((line) => io.stdout.write(`${line}\n`), opts.verbose === true, skipped);
    try {
      const summary = await apply(planned, {
        jobs: opts.jobs,
        skipSpaceCheck: opts.spaceCheck === false,
        verify: opts.verify === true,
        signal: controller.signal,
        onEvent: (e) => renderer.onEvent(e),
      });
      await renderer.finish();
      if (json) io.stdout.write(`${JSON.stringify({ type: 'summary', ...summary })}\n`);
      else io.stdout.write(`${opts.quiet ? '' : '\n'}${summaryLines(summary, notThere).join('\n')}\n`);
      exitCode = summary.ok ? EXIT.ok : summary.interrupted ? EXIT.interrupted : EXIT.error;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.off('SIGHUP', onSignal);
    }
  }

  /**
   * The saved plan in `path`, when it holds one (JSON with the saved-plan kind, which a saved
   * plan names first). Only the file's start is read to tell: it may be a disk image.
   */
  async function savedPlanIn(path: string): Promise<Awaited<ReturnType<typeof loadSavedPlan>> | undefined> {
    // Only a regular file is opened: opening a FIFO would wait for a writer.
    const isFile = await stat(path).then(
      (info) => info.isFile(),
      () => false,
    );
    if (!isFile) return undefined;
    const head = await readStart(path, SAVED_PLAN_HEAD_BYTES).catch(() => '');
    if (!/^\s*\{/.test(head) || !head.includes('"chainform-saved-plan"')) return undefined;
    return loadSavedPlan(path);
  }

  program
    .command('show')
    .description('print a saved plan and whether it still applies (read-only)')
    .argument('<plan>', 'a plan saved with `chainform plan MANIFEST --out FILE`')
    .addHelpText('after', '\nExample:\n  chainform plan manifest.yaml --out plan.json && chainform show plan.json')
    .action(async (file: string) => {
      const loaded = await loadSavedPlan(resolve(io.cwd, file));
      if (!loaded.ok) {
        reportProblems(loaded.diagnostics);
        exitCode = EXIT.error;
        return;
      }
      const { saved } = loaded;
      io.stdout.write(
        `Saved plan for ${saved.manifest.path}, made ${saved.createdAt} by chainform ${saved.chainformVersion}.\n\n`,
      );
      const checked = await checkSavedPlan(saved);
      // As `plan` says it: which retired files are not there, when the plan still applies (a
      // stale one may name other files than the manifest does now).
      const view = checked.ok ? { retireGone: retireGone(checked) } : {};
      try {
        io.stdout.write(`${renderPlan(saved.plan, styleOut(), io.cwd, view)}\n\n`);
      } catch {
        // The schema checks the shape chainform relies on; a hand-made file can still be odd.
        io.stderr.write(`error: ${file} is damaged: its plan cannot be shown\n`);
        exitCode = EXIT.error;
        return;
      }
      if (checked.ok) io.stdout.write(`It still applies: nothing it was made from has changed.\n`);
      else if ('stale' in checked) {
        io.stdout.write(
          `It is stale; \`apply\` would refuse it:\n${checked.stale.map((r) => `  - ${r}`).join('\n')}\n`,
        );
      } else reportProblems(checked.diagnostics);
      // For scripts: 0 only for a plan `apply` would run.
      if (!checked.ok) exitCode = EXIT.error;
    });

  program
    .command('import')
    .description('write a manifest describing the chains of existing images (read-only)')
    .argument('<images...>', 'the top images of the chains to capture')
    .option('-o, --out <file>', 'write the manifest to this file (default: standard output)')
    // Its first name, kept for scripts: --output names the output's format elsewhere (apply).
    .addOption(new Option('--output <file>').hideHelp().conflicts('out'))
    .option('-f, --format <format>', 'format of the given images (default: detected, with a warning)')
    .option('--linearize', 'write the manifest that turns every internal snapshot into its own external link')
    .option('--out-dir <dir>', 'with --linearize: the folder for the new links')
    .option('--force', 'overwrite the output file if it exists')
    .addHelpText(
      'after',
      '\nExamples:\n  chainform import vm/disk.qcow2 -o vm.yaml\n  chainform import --linearize --out-dir export vm/disk.qcow2 -o linear.yaml',
    )
    .action(
      async (
        images: string[],
        opts: { out?: string; output?: string; format?: string; linearize?: boolean; outDir?: string; force?: boolean },
      ) => {
        const named = opts.out ?? opts.output;
        const output = named ? resolve(io.cwd, named) : undefined;
        const refusal =
          opts.linearize && !opts.outDir
            ? '--linearize needs --out-dir DIR, the folder for the new links'
            : !opts.linearize && opts.outDir
              ? '--out-dir is the folder for the new links of --linearize: add --linearize, or drop --out-dir'
              : named && output
                ? manifestFileRefusal(named, output, opts.force === true)
                : undefined;
        if (refusal) {
          io.stderr.write(`error: ${refusal}\n`);
          exitCode = EXIT.error;
          return;
        }
        const imported = await importLayout(
          images.map((i) => resolve(io.cwd, i)),
          {
            ...(opts.format ? { format: opts.format } : {}),
            manifestDir: output ? dirname(output) : io.cwd,
            ...(output ? { manifestFile: output } : {}),
            ...(opts.linearize && opts.outDir ? { linearizeInto: resolve(io.cwd, opts.outDir) } : {}),
          },
        );
        if (!imported.ok) {
          reportProblems(imported.diagnostics);
          exitCode = EXIT.error;
          return;
        }
        if (imported.warnings.length) reportProblems(imported.warnings);
        if (output) {
          await writeFileAtomic(output, imported.text);
          io.stderr.write(`wrote ${named}\n`);
        } else {
          io.stdout.write(imported.text);
        }
      },
    );

  return {
    async run(argv) {
      try {
        await program.parseAsync(argv, { from: 'user' });
      } catch (e) {
        const code = (e as { exitCode?: number; code?: string }).exitCode;
        if (typeof code === 'number') return code === 0 ? EXIT.ok : EXIT.error;
        throw e;
      }
      return exitCode;
    },
  };
}
