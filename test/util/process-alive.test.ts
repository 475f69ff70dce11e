// Telling an exited process from a live one by /proc/PID/stat: a zombie has exited only once no
// other thread of it is left (a killed process's last fsync can still be running in one).
import { describe, expect, it } from 'vitest';
import { exited, processAlive } from '../../src/util/process-alive.js';

/** A /proc/PID/stat line in state `state`, for a command whose name holds a parenthesis. */
const stat = (state: string) => `4242 (no) de) ${state} 1 4242 4242 0 -1 4194560 95 0 0 0 0 0 0 0 20 0 1 0`;

describe('exited', () => {
  it('counts a zombie as exited only when its last thread is gone, and a dead process always', () => {
    expect(exited(stat('Z'), () => 1)).toBe(true);
    expect(exited(stat('Z'), () => 2)).toBe(false);
    expect(exited(stat('X'), () => 2)).toBe(true);
    for (const state of ['R', 'S', 'D', 'T', 't', 'I'])
      expect(
        exited(stat(state), () => 1),
        state,
      ).toBe(false);
  });

  it('tells this process alive and a pid above pid_max gone', () => {
    expect(processAlive(process.pid)).toBe(true);
    expect(processAlive(4194305)).toBe(false);
  });
});
