// Small statistics and timing helpers shared by the benchmark scenarios.
import { execa } from 'execa';

/** Median of a non-empty list of numbers (the upper middle one for an even count). */
export function median(xs) {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Median, smallest and largest of a list of samples, kept with the samples themselves. */
export function spread(samples) {
  return { median: median(samples), min: Math.min(...samples), max: Math.max(...samples), samples };
}

/**
 * Milliseconds from spawning `argv` (in `cwd`) to its exit. A failed run throws with its stderr:
 * its time would be that of an error path.
 */
export async function processMilliseconds(argv, cwd) {
  const started = performance.now();
  const result = await execa(argv[0], argv.slice(1), { cwd, reject: false });
  const ms = performance.now() - started;
  if (result.exitCode !== 0) throw new Error(`${argv.join(' ')} failed (exit ${result.exitCode}): ${result.stderr}`);
  return ms;
}

/**
 * Runs `bash -euc script` in `cwd` under GNU time. Returns wall seconds and the kernel's
 * block-output count of the script and all its children (512-byte units, turned into bytes).
 */
export async function timedScript(script, cwd, env = {}) {
  const result = await execa('/usr/bin/time', ['-f', '%e %O', 'bash', '-euc', script], {
    cwd,
    env,
    reject: false,
  });
  if (result.exitCode !== 0) throw new Error(`benchmark step failed: ${script}\n${result.stderr}`);
  const [seconds, blocks] = result.stderr.trim().split('\n').at(-1).split(' ').map(Number);
  return { seconds, bytesWritten: blocks * 512 };
}
