// How fast this machine is at the moment of a measurement. On a shared virtual machine the same
// work took up to 1.65 times as long from one hour to the next (the host's load is invisible to
// the guest), so each figure is printed with two fixed reference workloads timed next to it: a
// reader can tell a slow result from a slow hour, and compare runs made at different times.
import { median, processMilliseconds } from './stats.mjs';

/** Iterations of the reference loop: a fraction of a second on a current CPU. */
const LOOP_ITERATIONS = 50_000_000;
const LOOP = `let s = 0; for (let i = 0; i < ${LOOP_ITERATIONS}; i++) s += i % 7; if (s < 0) console.log(s);`;

/**
 * Medians of `runs` timings each, spawn to exit: `node -e 0` (Node's start, a floor under every
 * chainform command) and `node -e LOOP`, a fixed JavaScript loop (Node's start included: the
 * figure covers both what the start and what computing costs at the moment).
 */
export async function machineSpeed(runs = 5) {
  const start = [];
  const loop = [];
  for (let i = 0; i < runs; i++) {
    start.push(await processMilliseconds([process.execPath, '-e', '0']));
    loop.push(await processMilliseconds([process.execPath, '-e', LOOP]));
  }
  return { nodeStartMs: Math.round(median(start)), referenceLoopMs: Math.round(median(loop)) };
}

/** The figures in words, e.g. for "machine speed before the runs: ...". */
export function describeSpeed(speed) {
  return `node -e 0 ${speed.nodeStartMs} ms, node -e LOOP ${speed.referenceLoopMs} ms (start included; lower is faster)`;
}
