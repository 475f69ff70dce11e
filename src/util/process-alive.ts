// Whether a process on this machine still exists, and stopping processes left behind by a run
// that was killed (used to tell stale locks and orphans, and to clean up after them).
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/** True when `pid` exists (EPERM: it exists but belongs to someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * True when `pid` is running: it exists and is not a zombie. An orphan's exit status is collected
 * by init, which in a container may never do it, so a stopped orphan can linger as a zombie.
 */
export async function processRunning(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // The state letter follows the command name in parentheses; Z is a zombie, X is dead.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== '' && state !== 'Z' && state !== 'X';
}

/**
 * Stops the processes `find` names, asking again each round: SIGTERM, SIGKILL once `graceMs`
 * passed, until `find` names none or `giveUpMs` passed. Resolves to those still running then.
 * Each SIGTERM is followed by SIGCONT: a stopped process (SIGSTOP, a job-control stop) would
 * otherwise leave it pending until the SIGKILL.
 */
export async function stopProcesses(
  find: () => Promise<number[]>,
  { graceMs, giveUpMs }: { graceMs: number; giveUpMs: number },
): Promise<number[]> {
  let running = await find();
  for (let waited = 0; running.length > 0 && waited < giveUpMs; waited += 50) {
    for (const pid of running) {
      try {
        if (waited >= graceMs) {
          process.kill(pid, 'SIGKILL');
        } else {
          process.kill(pid, 'SIGTERM');
          process.kill(pid, 'SIGCONT');
        }
      } catch {
        // gone already, or not ours to signal
      }
    }
    await sleep(50);
    running = await find();
  }
  return running;
}
