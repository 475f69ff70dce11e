// Turn executor events into output: listr2 on a terminal, plain lines everywhere else.
import { Listr, type ListrDefaultRenderer, type ListrSimpleRenderer, type ListrTaskWrapper } from 'listr2';
import type { ExecutionEvent } from '../executor/events.js';
import type { Plan } from '../planner/plan-types.js';
import { shellQuote } from '../util/shell-quote.js';
import { describeProgress, formatBytes } from './format.js';

/** Receives events during a run; `finish` resolves once everything is printed. */
export interface ProgressRenderer {
  onEvent(event: ExecutionEvent): void;
  finish(): Promise<void>;
}

/** The listr2 task handle of one step. */
type StepTask = ListrTaskWrapper<unknown, ListrDefaultRenderer, ListrSimpleRenderer>;

type Outcome = { kind: 'done' } | { kind: 'failed'; message: string } | { kind: 'not-started' };

/** "1.2s, 6.3 MiB on disk": how long a step took and what its output occupies. */
function finishedText(event: Extract<ExecutionEvent, { type: 'step-finished' }>): string {
  const took = `${(event.durationMs / 1000).toFixed(1)}s`;
  return event.outputBytes === undefined ? took : `${took}, ${formatBytes(event.outputBytes)} on disk`;
}

/** listr2: one task per step, parallel steps side by side, live percentage in the title. */
export function createListrRenderer(plan: Plan, verbose: boolean, skipped: readonly string[] = []): ProgressRenderer {
  const outcomes = new Map<string, { promise: Promise<Outcome>; settle: (o: Outcome) => void }>();
  const titles = new Map<string, string>();
  const tasks = new Map<string, StepTask>();
  for (const step of plan.steps) {
    let settle!: (o: Outcome) => void;
    const promise = new Promise<Outcome>((resolve) => {
      settle = resolve;
    });
    outcomes.set(step.id, { promise, settle });
    titles.set(step.id, `${step.id}: waiting`);
  }
  const setTitle = (id: string, title: string) => {
    titles.set(id, title);
    const task = tasks.get(id);
    if (task) task.title = title;
  };
  const started = new Map<string, number>();
  const list = new Listr(
    [
      // Steps an interrupted run finished: shown, and skipped.
      ...skipped.map((id) => ({
        title: id,
        task: (_ctx: unknown, task: StepTask) => task.skip(`${id}: already done`),
      })),
      ...plan.steps.map((step) => ({
        title: titles.get(step.id) ?? step.id,
        task: async (_ctx: unknown, task: StepTask) => {
          tasks.set(step.id, task);
          task.title = titles.get(step.id) ?? step.id;
          const outcome = await (outcomes.get(step.id)?.promise as Promise<Outcome>);
          if (outcome.kind === 'failed') throw new Error(outcome.message);
          if (outcome.kind === 'not-started') task.skip(`${step.id}: not started`);
        },
      })),
    ],
    {
      concurrent: true,
      exitOnError: false,
      // chainform handles Ctrl-C itself (stops the commands, removes temporary files, closes the
      // journal, prints the summary); listr2's own handler would exit the process at once.
      registerSignalListeners: false,
      rendererOptions: { collapseErrors: false },
    },
  );
  const running = list.run().catch(() => undefined);
  return {
    onEvent(event) {
      switch (event.type) {
        case 'step-started':
          started.set(event.step.id, Date.now());
          setTitle(event.step.id, `${event.step.id}: running`);
          break;
        case 'command-started':
          if (verbose)
            tasks
              .get(event.step.id)
              ?.stdout()
              .write(`${shellQuote(event.argv)}\n`);
          break;
        case 'step-progress': {
          const elapsed = Date.now() - (started.get(event.step.id) ?? Date.now());
          setTitle(event.step.id, `${event.step.id}: ${describeProgress(event.percent, event.step, elapsed)}`);
          break;
        }
        case 'step-finished':
          setTitle(event.step.id, `${event.step.id}: done in ${finishedText(event)}`);
          outcomes.get(event.step.id)?.settle({ kind: 'done' });
          break;
        case 'step-failed':
          outcomes.get(event.step.id)?.settle({ kind: 'failed', message: event.failure.message });
          break;
        case 'run-finished':
          for (const id of event.summary.notStarted) outcomes.get(id)?.settle({ kind: 'not-started' });
          break;
        default: {
          const exhaustive: never = event;
          throw new Error(`internal: unknown event ${String(exhaustive)}`);
        }
      }
    },
    finish: () => running.then(() => undefined),
  };
}

/** Plain lines for CI and pipes: start, progress every 10%, done with duration, failures. */
export function createPlainRenderer(
  write: (line: string) => void,
  verbose: boolean,
  skipped: readonly string[] = [],
): ProgressRenderer {
  const lastReported = new Map<string, number>();
  const started = new Map<string, number>();
  for (const id of skipped) write(`skipped  ${id} (already done)`);
  return {
    onEvent(event) {
      switch (event.type) {
        case 'step-started':
          started.set(event.step.id, Date.now());
          write(`started  ${event.step.id}`);
          break;
        case 'command-started':
          if (verbose) write(`  $ ${shellQuote(event.argv)}`);
          break;
        case 'step-progress': {
          const bucket = Math.floor(event.percent / 10) * 10;
          if (bucket > (lastReported.get(event.step.id) ?? 0) && bucket < 100) {
            lastReported.set(event.step.id, bucket);
            const elapsed = Date.now() - (started.get(event.step.id) ?? Date.now());
            write(`progress ${event.step.id} ${describeProgress(bucket, event.step, elapsed)}`);
          }
          break;
        }
        case 'step-finished':
          write(`done     ${event.step.id} (${finishedText(event)})`);
          break;
        case 'step-failed':
          write(`${event.failure.interrupted ? 'stopped ' : 'FAILED  '} ${event.step.id}: ${event.failure.message}`);
          break;
        case 'run-finished':
          break;
        default: {
          const exhaustive: never = event;
          throw new Error(`internal: unknown event ${String(exhaustive)}`);
        }
      }
    },
    finish: async () => undefined,
  };
}

/** The JSON form of an event: step ids rather than whole steps. One object per line. */
export function eventRecord(event: ExecutionEvent): Record<string, unknown> {
  switch (event.type) {
    case 'step-started':
      return { type: event.type, step: event.step.id, kind: event.step.kind, image: event.step.image };
    case 'command-started':
      return { type: event.type, step: event.step.id, argv: event.argv };
    case 'step-progress':
      return { type: event.type, step: event.step.id, percent: event.percent };
    case 'step-finished':
      return { type: event.type, step: event.step.id, durationMs: event.durationMs };
    case 'step-failed':
      return { type: event.type, step: event.step.id, failure: event.failure };
    case 'run-finished':
      return { type: event.type, summary: event.summary };
    default: {
      const exhaustive: never = event;
      throw new Error(`internal: unknown event ${String(exhaustive)}`);
    }
  }
}

/** `--output json`: every event as one JSON line, for machines. */
export function createJsonRenderer(write: (line: string) => void): ProgressRenderer {
  return {
    onEvent: (event) => write(JSON.stringify(eventRecord(event))),
    finish: async () => undefined,
  };
}

/** `--quiet`: nothing while it runs; the summary says how it ended. */
export function createQuietRenderer(): ProgressRenderer {
  return { onEvent: () => undefined, finish: async () => undefined };
}
