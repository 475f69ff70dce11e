// Sizes the steps that carry a `qemu-img measure` command (convert steps), so that `plan` shows
// and `apply` checks the bytes they will really write rather than the planner's upper bound.
// The measures run side by side, as many at once as inspection's qemu-img processes (whatever
// `apply --jobs` says, which is about steps): a plan converting several disks waits for the
// slowest measure, not for their sum.
import type { Step } from '../planner/plan-types.js';
import { type CommandRunner, withConcurrency } from '../qemu/runner.js';
import { INSPECT_JOBS } from './inspect-layout.js';

/** The bytes a `qemu-img measure --output=json` answer says are required, if it says. */
function requiredBytes(stdout: string): number | undefined {
  try {
    const required = (JSON.parse(stdout) as { required?: unknown }).required;
    return typeof required === 'number' && Number.isFinite(required) && required >= 0 ? required : undefined;
  } catch {
    return undefined; // not JSON: the planner's bound stays
  }
}

/** Bytes each measurable step will write, by step id. A measure that fails leaves the bound. */
export async function measureSteps(steps: readonly Step[], unlimited: CommandRunner): Promise<Map<string, number>> {
  const runner = withConcurrency(unlimited, INSPECT_JOBS);
  const measured = new Map<string, number>();
  await Promise.all(
    steps.map(async (step) => {
      if (!step.measure) return;
      const result = await runner.run(step.measure);
      const bytes = result.exitCode === 0 ? requiredBytes(result.stdout) : undefined;
      if (bytes !== undefined) measured.set(step.id, bytes);
    }),
  );
  return measured;
}
