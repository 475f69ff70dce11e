// Sizing convert steps with qemu-img measure: the answers land on their own steps, a failed or
// garbled measure keeps the planner's bound, and several measures run at once.
import { describe, expect, it } from 'vitest';
import { measureSteps } from '../../src/inspect/measure-steps.js';
import type { Step } from '../../src/planner/plan-types.js';
import type { Argv } from '../../src/qemu/commands.js';
import type { CommandResult, CommandRunner } from '../../src/qemu/runner.js';

/** A step with only what measureSteps reads. */
const step = (id: string, measure?: Argv): Step => ({ id, ...(measure ? { measure } : {}) }) as Step;

/** Answers each measure (by its last argument) after a few milliseconds, counting overlaps. */
function slowRunner(answers: Record<string, CommandResult>): CommandRunner & { peak: number; ran: string[] } {
  let running = 0;
  const runner = {
    peak: 0,
    ran: [] as string[],
    async run(argv: Argv): Promise<CommandResult> {
      const file = argv.at(-1) ?? '';
      runner.ran.push(file);
      running++;
      runner.peak = Math.max(runner.peak, running);
      await new Promise((settle) => setTimeout(settle, 20));
      running--;
      return answers[file] ?? { exitCode: 1, stdout: '', stderr: 'no such file' };
    },
  };
  return runner;
}

const measureOf = (file: string): Argv => ['qemu-img', 'measure', '--output=json', '-O', 'qcow2', file];
const ok = (required: unknown): CommandResult => ({
  exitCode: 0,
  stdout: JSON.stringify({ required, 'fully-allocated': 1 << 30 }),
  stderr: '',
});

describe('measureSteps', () => {
  it('gives each measured step its own answer and leaves the others out', async () => {
    const runner = slowRunner({
      'a.qcow2': ok(1000),
      'b.qcow2': ok(2000),
      'garbled.qcow2': { exitCode: 0, stdout: 'not json', stderr: '' },
      'negative.qcow2': ok(-5),
    });
    const steps = [
      step('a', measureOf('a.qcow2')),
      step('none'),
      step('b', measureOf('b.qcow2')),
      step('failed', measureOf('missing.qcow2')),
      step('garbled', measureOf('garbled.qcow2')),
      step('negative', measureOf('negative.qcow2')),
    ];
    const measured = await measureSteps(steps, runner);
    expect(Object.fromEntries(measured)).toEqual({ a: 1000, b: 2000 });
    expect(runner.ran.sort()).toEqual(['a.qcow2', 'b.qcow2', 'garbled.qcow2', 'missing.qcow2', 'negative.qcow2']);
  });

  it('runs the measures of several steps at once', async () => {
    const files = ['1', '2', '3', '4'].map((n) => `disk${n}.qcow2`);
    const runner = slowRunner(Object.fromEntries(files.map((f, i) => [f, ok(i)])));
    const measured = await measureSteps(
      files.map((f) => step(f, measureOf(f))),
      runner,
    );
    expect(measured.size).toBe(4);
    expect(runner.peak).toBeGreaterThan(1);
  });
});
