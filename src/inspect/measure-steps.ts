// Sizes the steps that carry a `qemu-img measure` command (convert steps), so that `plan` shows
// and `apply` checks the bytes they will really write rather than the planner's upper bound.
import type { Step } from '../planner/plan-types.js';
import type { CommandRunner } from '../qemu/runner.js';

/** Bytes each measurable step will write, by step id. A measure that fails leaves the bound. */
export async function measureSteps(steps: readonly Step[], runner: CommandRunner): Promise<Map<string, number>> {
  const measured = new Map<string, number>();
  for (const step of steps) {
    if (!step.measure) continue;
    const result = await runner.run(step.measure);
    if (result.exitCode !== 0) continue;
    try {
      const required = (JSON.parse(result.stdout) as { required?: unknown }).required;
      if (typeof required === 'number' && Number.isFinite(required) && required >= 0) measured.set(step.id, required);
    } catch {
      // Not JSON: keep the planner's bound.
    }
  }
  return measured;
}
