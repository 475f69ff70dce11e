// Stage 5: run the plan's DAG. Steps whose dependencies are done run in parallel (up to `jobs`);
// the first failure stops new launches, running steps finish, and the summary says what is
// done, failed and not started.
import { availableParallelism } from 'node:os';
import { type Plan, RUNTIME_DIR, type Step, temporariesOf } from '../planner/plan-types.js';
import type { Argv } from '../qemu/commands.js';
import { qemuMessage } from '../qemu/messages.js';
import type { StepJournal } from '../state/journal.js';
import type { StepEffects } from './effects.js';
import type { ExecutionEvent, RunSummary, StepFailure } from './events.js';
import type { StartedHelper } from './helper-process.js';
import { parseProgress } from './progress.js';

/**
 * Steps run at once unless told otherwise: one per CPU, at most 4. A step is one qemu-img (or
 * qemu-nbd) process, mostly waiting on the disk; independent steps side by side overlap that
 * waiting (four copies to overlays took 1.29 s with 4 jobs against 2.39 s with 1, on 2 CPUs),
 * and past a few writers one disk gains nothing more.
 */
export const DEFAULT_JOBS = Math.min(4, availableParallelism());

/** Options for {@link executePlan}. */
export interface ExecuteOptions {
  effects: StepEffects;
  /** Steps at most running at once (>= 1). */
  jobs: number;
  /** Aborting stops new launches and kills running commands. */
  signal?: AbortSignal;
  /** Told about every step and command before and after it runs (absent in a dry run). */
  journal?: StepJournal;
  onEvent?: (event: ExecutionEvent) => void;
  /** Clock, for durations (swappable in tests). */
  now?: () => number;
}

/** Exit code of `qemu-img compare` when the images differ. */
const CHECK_DIFFERENT = 1;

/**
 * Waits until the steps of `step.finishAfter` are done: undefined when they all are, else the
 * failure of the step for the first one that failed.
 */
type FinishAfterWait = () => Promise<StepFailure | undefined>;

/** Runs the step's commands (switching to `otherwise` on a "different" check); null on success. */
async function runCommands(
  step: Step,
  options: ExecuteOptions,
  expand: (argv: Argv) => Argv,
  waitForFinishAfter: FinishAfterWait,
  /** Called when a command that writes the step's files in place starts. */
  onInPlaceWrite: () => void,
): Promise<StepFailure | null> {
  const { effects, signal } = options;
  const emit = options.onEvent ?? (() => undefined);
  const queue = [...step.commands];
  /** Index in `step.commands` of the next command, until a check switches to `otherwise`. */
  let index: number | undefined = 0;
  for (let command = queue.shift(); command; command = queue.shift()) {
    if (index !== undefined && index++ === step.finishAfter?.beforeCommand) {
      const waited = await waitForFinishAfter();
      if (waited) return waited;
    }
    const argv = expand(command.argv);
    emit({ type: 'command-started', step, argv });
    let pid: number | undefined;
    let journaled: Promise<unknown> = Promise.resolve();
    const result = await effects.run(argv, {
      ...(signal ? { signal } : {}),
      onOutput: (chunk) => {
        const percent = parseProgress(chunk);
        if (percent !== undefined) emit({ type: 'step-progress', step, percent });
      },
      onSpawn: (spawned) => {
        pid = spawned;
        // A check only reads; any other command of a step without a temporary file writes its files.
        if (!step.temporaryPath && !command.check) onInPlaceWrite();
        // Settled (never rejected) while the command runs; a journal failure fails the step below.
        journaled =
          options.journal?.commandStarted(step, { pid: spawned, argv }).then(
            () => null,
            (e: unknown) => e,
          ) ?? journaled;
      },
    });
    const journalError = await journaled;
    if (journalError) throw journalError;
    if (pid !== undefined) await options.journal?.commandEnded(step, pid);
    if (command.check && result.exitCode === CHECK_DIFFERENT && !result.signal && !signal?.aborted) {
      // No fallback: the step is only correct when the check passes.
      if (!step.otherwise) {
        return {
          stepId: step.id,
          message: `${step.id}: the check found a difference, so nothing was changed`,
          argv,
          exitCode: 1,
        };
      }
      queue.splice(0, queue.length, ...step.otherwise);
      index = undefined;
      continue;
    }
    if (result.exitCode !== 0 || result.signal) {
      const why = signal?.aborted
        ? 'was interrupted'
        : result.signal
          ? `was stopped by ${result.signal}`
          : `failed (exit ${result.exitCode})`;
      return {
        stepId: step.id,
        ...(signal?.aborted ? { interrupted: true as const } : {}),
        // qemu-io prints its errors on standard output.
        message: `${argv[0]} ${argv[1] ?? ''} ${why}${signal?.aborted ? '' : `: ${qemuMessage(result.stderr) || qemuMessage(result.stdout) || 'no message'}`}`,
        argv,
        exitCode: result.exitCode,
        stderr: result.stderr,
      };
    }
  }
  return null;
}

/** The files the step's commands write, under the names they write them (flushed after). */
function writtenFiles(step: Step): string[] {
  return [...temporariesOf(step).map((r) => r.temporaryPath), ...(step.temporaryPath ? [] : [step.path])];
}

/** Throws unless every file the step's commands were computed from is as it was when planned. */
async function ensureAsPlanned(step: Step, effects: StepEffects): Promise<void> {
  for (const planned of step.plannedFrom ?? []) {
    const change = await effects.changedSincePlanned(planned.path, planned.fingerprint);
    if (change) throw new Error(`${planned.path} cannot be used as planned: ${change}; plan again`);
  }
}

/**
 * Makes a step's results durable, records them in the ledger (marked in progress), gives them
 * their final names, then clears the mark. Recording before renaming leaves no moment where a
 * finished output exists without the ledger entry that says it is chainform's (a rename keeps
 * device, inode, size and mtime); the mark makes a run killed between the renames rebuild the
 * output rather than refuse a file that matches neither its old entry nor its new one.
 */
async function completeStep(step: Step, effects: StepEffects): Promise<void> {
  const renames = temporariesOf(step);
  for (const path of writtenFiles(step)) await effects.flush(path);
  const located = Object.fromEntries(renames.map((r) => [r.path, r.temporaryPath]));
  if (step.ledger) await effects.record(step.path, step.ledger, located);
  // A new data file takes the access of the image it belongs to (renamed last, so still the old file).
  const image = renames.at(-1)?.onto;
  for (const { temporaryPath, onto } of renames) await effects.commitTemporary(temporaryPath, onto, image);
  if (step.ledger && renames.length > 0) await effects.markFinished(step.path);
  for (const refresh of step.refreshLedger ?? [])
    await effects.refreshChain(refresh.output, refresh.chain, refresh.files);
}

/**
 * One step, journaled before and after: helpers up, commands, then (on success) flush, record
 * in the ledger and rename. Helpers are stopped and the runtime folder removed whatever happens; a failed step leaves no
 * temporary file behind.
 */
async function runStep(
  step: Step,
  options: ExecuteOptions,
  waitForFinishAfter: FinishAfterWait,
): Promise<StepFailure | null> {
  const { effects } = options;
  const helpers: StartedHelper[] = [];
  let runtime: string | undefined;
  let failure: StepFailure | null = null;
  let wroteInPlace = false;
  try {
    await options.journal?.stepStarted(step);
    await ensureAsPlanned(step, effects);
    if (step.temporaryPath) await effects.prepareTemporary(step.temporaryPath);
    else if (step.ledger) await effects.markInProgress(step.path);
    for (const extra of step.extraTemporaries ?? []) await effects.prepareTemporary(extra.temporaryPath);
    if (step.helpers?.length) runtime = await effects.openRuntime();
    const dir = runtime;
    const expand = (argv: Argv): Argv => (dir === undefined ? argv : argv.map((a) => a.replaceAll(RUNTIME_DIR, dir)));
    for (const helper of step.helpers ?? []) {
      helpers.push(await effects.startHelper(expand(helper.argv), expand([helper.socket])[0] ?? helper.socket));
    }
    const writeback = effects.startWriteback(writtenFiles(step));
    try {
      failure = await runCommands(step, options, expand, waitForFinishAfter, () => {
        wroteInPlace = true;
      });
    } finally {
      // The step fails either way; a failed command's own message says more than a write error.
      await writeback.stop().catch((e: unknown) => {
        if (!failure) throw e;
      });
    }
    // Written between the first check and qemu's open, the file would make the copies stale.
    if (!failure) await ensureAsPlanned(step, effects);
    // Also when the commands ended before `beforeCommand` (or took the `otherwise` branch).
    if (!failure && step.finishAfter) failure = (await waitForFinishAfter()) ?? null;
    if (!failure) await completeStep(step, effects);
  } catch (e) {
    failure = { stepId: step.id, message: `${step.id}: ${(e as Error).message}` };
  } finally {
    for (const helper of helpers.reverse()) await helper.stop().catch(() => undefined);
    if (runtime !== undefined) await effects.closeRuntime(runtime);
    if (failure && step.temporaryPath) await effects.discardTemporary(step.temporaryPath);
    for (const extra of failure ? (step.extraTemporaries ?? []) : [])
      await effects.discardTemporary(extra.temporaryPath);
  }
  try {
    await options.journal?.stepEnded(step, failure === null);
  } catch (e) {
    failure ??= { stepId: step.id, message: `${step.id}: cannot write the journal: ${(e as Error).message}` };
  }
  // Whatever failed after a command began writing the image in place (the command itself, the
  // flush, the ledger, the journal), the image may hold part of the change.
  return failure && wroteInPlace ? { ...failure, changedInPlace: step.path } : failure;
}

/**
 * What a finished step's output occupies on disk: the image file, plus its external data file
 * when it has one (the guest data lives there). Undefined when the image cannot be stat-ed.
 */
async function outputDiskUsage(step: Step, effects: StepEffects): Promise<number | undefined> {
  const files = [step.path, ...(step.ledger?.dataFile ? [step.ledger.dataFile] : [])];
  const sizes = await Promise.all(files.map((file) => effects.diskUsage(file).catch(() => undefined)));
  if (sizes[0] === undefined) return undefined;
  return sizes.reduce<number>((sum, size) => sum + (size ?? 0), 0);
}

/** Runs every step of `plan` in dependency order. Never throws for a failed step. */
export async function executePlan(plan: Plan, options: ExecuteOptions): Promise<RunSummary> {
  const now = options.now ?? Date.now;
  const emit = options.onEvent ?? (() => undefined);
  const started = now();
  const jobs = Math.max(1, Math.floor(options.jobs));
  const waiting = [...plan.steps];
  const done: string[] = [];
  const failed: StepFailure[] = [];
  const running = new Map<string, Promise<void>>();
  /** Per launched step, whether it succeeded, once it has finished. */
  const outcomes = new Map<string, Promise<boolean>>();

  const launchable = () => failed.length === 0 && !options.signal?.aborted && running.size < jobs;
  // A step that waits for a `finishAfter` step starts only once that one runs: the steps it
  // waits for hold jobs of their own, so waiting steps can never fill every job and stall.
  const ready = (step: Step) =>
    step.dependsOn.every((d) => done.includes(d)) &&
    (step.finishAfter?.steps ?? []).every((d) => done.includes(d) || running.has(d));
  const finishAfterOf =
    (step: Step): FinishAfterWait =>
    async () => {
      for (const id of step.finishAfter?.steps ?? []) {
        if (await outcomes.get(id)) continue;
        return {
          stepId: step.id,
          message: `${step.id}: stopped unfinished: it needs ${id}, which did not finish`,
          ...(options.signal?.aborted ? { interrupted: true as const } : {}),
        };
      }
      return undefined;
    };

  while (true) {
    while (launchable()) {
      const index = waiting.findIndex(ready);
      if (index < 0) break;
      const [step] = waiting.splice(index, 1) as [Step];
      emit({ type: 'step-started', step });
      const stepStart = now();
      const promise = runStep(step, options, finishAfterOf(step)).then(async (failure) => {
        const outputBytes = failure ? undefined : await outputDiskUsage(step, options.effects);
        running.delete(step.id);
        if (failure) {
          failed.push(failure);
          emit({ type: 'step-failed', step, failure });
        } else {
          done.push(step.id);
          const durationMs = now() - stepStart;
          emit({ type: 'step-finished', step, durationMs, ...(outputBytes !== undefined ? { outputBytes } : {}) });
        }
      });
      running.set(step.id, promise);
      outcomes.set(
        step.id,
        promise.then(() => done.includes(step.id)),
      );
    }
    if (running.size === 0) break;
    await Promise.race(running.values());
  }
  const interrupted = options.signal?.aborted ?? false;
  const summary: RunSummary = {
    ok: failed.length === 0 && waiting.length === 0,
    done,
    failed,
    notStarted: waiting.map((s) => s.id),
    interrupted,
    durationMs: now() - started,
  };
  emit({ type: 'run-finished', summary });
  return summary;
}
