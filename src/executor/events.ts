// Typed events the executor emits; renderers (listr2, plain lines, JSON) turn them into output.

import type { Step } from '../planner/plan-types.js';
import type { Argv } from '../qemu/commands.js';

/** Why a step failed: the command, its exit and qemu-img's own words. */
export interface StepFailure {
  stepId: string;
  message: string;
  argv?: Argv;
  exitCode?: number;
  stderr?: string;
  /**
   * The image the step had begun changing in place when it failed (a rebase, amend or resize
   * of the file itself, not of a temporary copy): it, and its external data file if it has one,
   * may hold part of the change. Unset when no command of the step had started writing it.
   */
  changedInPlace?: string;
  /** True when the failure is the run's interruption (Ctrl-C, SIGTERM), not a fault to fix. */
  interrupted?: true;
}

/** How a run ended. */
export interface RunSummary {
  ok: boolean;
  done: string[];
  failed: StepFailure[];
  notStarted: string[];
  /** True when the run was stopped by a signal (Ctrl-C) rather than a failure. */
  interrupted: boolean;
  durationMs: number;
  /** Per image, when the layout was verified (`--verify`, or before retiring files). */
  verified?: { image: string; path: string; ok: boolean; detail: string }[];
  /** Files deleted because the manifest retires them. */
  retired?: string[];
  /** Retired files left in place, and why. */
  keptFromRetire?: { path: string; reason: string }[];
}

/** Everything that happens during a run, in order. */
export type ExecutionEvent =
  | { type: 'step-started'; step: Step }
  | { type: 'command-started'; step: Step; argv: Argv }
  | { type: 'step-progress'; step: Step; percent: number }
  /** `outputBytes`: what the step's output occupies on disk afterwards, when it could be read. */
  | { type: 'step-finished'; step: Step; durationMs: number; outputBytes?: number }
  | { type: 'step-failed'; step: Step; failure: StepFailure }
  | { type: 'run-finished'; summary: RunSummary };
