// Stage 5: run the plan's DAG. Steps whose dependencies are done run in parallel (up to `jobs`);
// the first failure stops new launches, running steps finish, and the summary says what is
// done, failed and not started.
import type { Plan, Step } from '../planner/plan-types.js';
import { qemuMessage } from '../qemu/messages.js';
import type { StepEffects } from './effects.js';
import type { ExecutionEvent, RunSummary, StepFailure } from './events.js';
import { parseProgress } from './progress.js';

/** Options for {@link executePlan}. */
export interface ExecuteOptions {
  effects: StepEffects;
  /** Steps at most running at once (>= 1). */
  jobs: number;
  /** Aborting stops new launches and kills running commands. */
  signal?: AbortSignal;
  onEvent?: (event: ExecutionEvent) => void;
  /** Clock, for durations (swappable in tests). */
  now?: () => number;
}

/** Exit code of `qemu-img compare` when the images differ. */
const CHECK_DIFFERENT = 1;

async function runStep(step: Step, options: ExecuteOptions): Promise<StepFailure | null> {
  const { effects, signal } = options;
  const emit = options.onEvent ?? (() => undefined);
  if (step.temporaryPath) await effects.prepareTemporary(step.temporaryPath);
  else if (step.ledger) await effects.markInProgress(step.path);
  try {
    // A check that reports "different" switches to the step's `otherwise` commands.
    const queue = [...step.commands];
    for (let command = queue.shift(); command; command = queue.shift()) {
      emit({ type: 'command-started', step, argv: command.argv });
      const result = await effects.run(command.argv, {
        ...(signal ? { signal } : {}),
        onOutput: (chunk) => {
          const percent = parseProgress(chunk);
          if (percent !== undefined) emit({ type: 'step-progress', step, percent });
        },
      });
      if (command.check && result.exitCode === CHECK_DIFFERENT && !result.signal && !signal?.aborted) {
        queue.splice(0, queue.length, ...(step.otherwise ?? []));
        continue;
      }
      if (result.exitCode !== 0 || result.signal) {
        if (step.temporaryPath) await effects.discardTemporary(step.temporaryPath);
        const why = signal?.aborted
          ? 'was interrupted'
          : result.signal
            ? `was stopped by ${result.signal}`
            : `failed (exit ${result.exitCode})`;
        return {
          stepId: step.id,
          message: `${command.argv[0]} ${command.argv[1] ?? ''} ${why}${signal?.aborted ? '' : `: ${qemuMessage(result.stderr) || 'no message'}`}`,
          argv: command.argv,
          exitCode: result.exitCode,
          stderr: result.stderr,
        };
      }
    }
    if (step.temporaryPath) await effects.commitTemporary(step.temporaryPath, step.path);
    else await effects.flush(step.path);
    if (step.ledger) await effects.record(step.path, step.ledger);
    for (const refresh of step.refreshLedger ?? []) await effects.refreshBacking(refresh.output, refresh.backingChain);
    return null;
  } catch (e) {
    if (step.temporaryPath) await effects.discardTemporary(step.temporaryPath);
    return { stepId: step.id, message: `${step.id}: ${(e as Error).message}` };
  }
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

  const launchable = () => failed.length === 0 && !options.signal?.aborted && running.size < jobs;

  while (true) {
    while (launchable()) {
      const index = waiting.findIndex((s) => s.dependsOn.every((d) => done.includes(d)));
      if (index < 0) break;
      const [step] = waiting.splice(index, 1) as [Step];
      emit({ type: 'step-started', step });
      const stepStart = now();
      const promise = runStep(step, options).then((failure) => {
        running.delete(step.id);
        if (failure) {
          failed.push(failure);
          emit({ type: 'step-failed', step, failure });
        } else {
          done.push(step.id);
          emit({ type: 'step-finished', step, durationMs: now() - stepStart });
        }
      });
      running.set(step.id, promise);
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
