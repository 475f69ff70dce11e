// What people read while a run goes: percentage, the bytes it stands for, time left; finished
// steps with their size on disk; steps an interrupted run already did, shown as skipped.
import { describe, expect, it } from 'vitest';
import { describeProgress, formatDuration } from '../../src/cli/format.js';
import { createPlainRenderer } from '../../src/cli/progress-renderers.js';
import type { Step } from '../../src/planner/plan-types.js';

const step = { id: 'vm:diff', expectedWriteBytes: 6.5 * 1024 * 1024, writeBytesIsUpperBound: true } as Step;

describe('progress text', () => {
  it('gives the percentage, the planned bytes and, once it can tell, the time left', () => {
    expect(describeProgress(0, step, 0)).toBe('0% of up to 6.5 MiB');
    expect(describeProgress(25, step, 500)).toBe('25% of up to 6.5 MiB');
    expect(describeProgress(25, step, 3_000)).toBe('25% of up to 6.5 MiB, about 9s left');
    expect(describeProgress(50, { ...step, writeBytesIsUpperBound: false }, 95_000)).toBe(
      '50% of ~6.5 MiB, about 1m35s left',
    );
    expect(formatDuration(200)).toBe('1s');
  });

  it('plain lines: skipped steps first, then each step with its duration and size on disk', () => {
    const lines: string[] = [];
    const renderer = createPlainRenderer((l) => lines.push(l), false, ['base:convert']);
    renderer.onEvent({ type: 'step-started', step });
    renderer.onEvent({ type: 'step-finished', step, durationMs: 1234, outputBytes: 3 * 1024 * 1024 });
    expect(lines).toEqual([
      'skipped  base:convert (already done)',
      'started  vm:diff',
      'done     vm:diff (1.2s, 3.0 MiB on disk)',
    ]);
  });
});
