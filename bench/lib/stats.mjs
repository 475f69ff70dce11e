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

/**
 * Wall seconds of `variant`'s timed runs by their place in the pass (0: ran first), from
 * measurePasses' `timed` and `orders` (orders[0] is the accounting pass, orders[i + 1] timed run i).
 */
export function secondsByPosition(timed, orders, variant) {
  const byPosition = [];
  timed[variant].forEach((m, i) => {
    const position = orders[i + 1].indexOf(variant);
    byPosition[position] = [...(byPosition[position] ?? []), m.seconds];
  });
  return byPosition;
}

/**
 * The ratio of variant `a`'s wall time to `b`'s with the order of the passes taken out: at each
 * place in a pass (first, second, ...), the median of `a`'s runs there over the median of `b`'s,
 * then the geometric mean over the places where both ran. On this project's machine a run's place
 * in its pass moves its time up to 3x, far more than what is compared: the first run of a pass
 * writes into disk blocks the previous pass freed, the next into blocks never written (measured:
 * a 512 MiB convert -B took 0.61-0.67 s into freed blocks, 1.89-2.03 s beside them, 3 rounds).
 * Medians over all runs mix the places unevenly when the number of runs is odd. Null when no
 * place saw both.
 */
export function positionMatchedRatio(timed, orders, a, b) {
  return matchedRatio(secondsByPosition(timed, orders, a), secondsByPosition(timed, orders, b));
}

/** positionMatchedRatio of two variants' seconds already split by place. */
function matchedRatio(byA, byB) {
  const ratios = [];
  for (let p = 0; p < Math.max(byA.length, byB.length); p++) {
    if (byA[p]?.length && byB[p]?.length) ratios.push(median(byA[p]) / median(byB[p]));
  }
  if (ratios.length === 0) return null;
  return Math.exp(ratios.reduce((sum, r) => sum + Math.log(r), 0) / ratios.length);
}

/**
 * How far {@link positionMatchedRatio} could move with other runs like these: a percentile
 * bootstrap. Each resample draws, at every place, as many runs of each variant as it had, with
 * replacement, and takes the ratio again; the interval holds the middle `level` of those ratios.
 * With three runs per place it is rough, but it tells a ratio that could lie on either side of a
 * target from one that could not. The draws are not seeded: computed again from the same runs,
 * the ends move by about a hundredth (measured on 16 runs). Null when no place saw both variants.
 */
export function positionMatchedInterval(timed, orders, a, b, { resamples = 2000, level = 0.9 } = {}) {
  const [byA, byB] = [secondsByPosition(timed, orders, a), secondsByPosition(timed, orders, b)];
  if (matchedRatio(byA, byB) === null) return null;
  const redraw = (byPlace) => byPlace.map((runs) => runs?.map(() => runs[Math.floor(Math.random() * runs.length)]));
  const ratios = [];
  for (let i = 0; i < resamples; i++) ratios.push(matchedRatio(redraw(byA), redraw(byB)));
  ratios.sort((x, y) => x - y);
  const at = (q) => ratios[Math.min(ratios.length - 1, Math.floor(q * ratios.length))];
  return { low: at((1 - level) / 2), high: at((1 + level) / 2), level, resamples };
}

/** A {@link positionMatchedInterval} for a note: `90% bootstrap interval 0.91-1.12x`, or nothing. */
export function intervalText(interval, digits = 2) {
  if (interval === null) return '';
  const percent = Math.round(interval.level * 100);
  return ` (${percent}% bootstrap interval ${interval.low.toFixed(digits)}-${interval.high.toFixed(digits)}x, ${interval.resamples} resamples)`;
}

/** A {@link positionMatchedRatio} for a note: `1.23x`, or why there is none. */
export function ratioText(ratio, digits = 2) {
  return ratio === null ? 'n/a (no place in the pass saw both: fewer runs than variants)' : `${ratio.toFixed(digits)}x`;
}
