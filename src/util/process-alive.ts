// Whether a process on this machine still exists, and stopping processes left behind by a run
// that was killed (used to tell stale locks and orphans, and to clean up after them).
import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The state letter in the text of /proc/PID/stat ('' for no text): it follows the command name,
 * in parentheses. Z is a zombie (exited, its status not collected yet), X is dead.
 */
function stateOf(stat: string): string {
  const end = stat.lastIndexOf(')');
  return end < 0 ? '' : stat.slice(end + 2, end + 3);
}

/**
 * Whether the process whose stat text this is has exited. /proc/PID/stat shows its main thread:
 * dead (X), or a zombie (Z) with no other thread left. A killed process's main thread can show Z
 * while another thread still finishes a system call (an fsync, a rename), and the process holds
 * its files until then; `threads` counts the threads left.
 */
export function exited(stat: string, threads: () => number): boolean {
  const state = stateOf(stat);
  return state === 'X' || (state === 'Z' && threads() <= 1);
}

/** The threads of `pid` (its entries in /proc/PID/task); 2, as if still running, when unreadable. */
function threadCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/task`).length;
  } catch {
    return 2;
  }
}

/**
 * True when `pid` exists and has not exited (EPERM: it exists but belongs to someone else). A
 * killed process stays a zombie until its parent collects it (seconds, when the parent is busy):
 * once its last thread is gone it holds no lock and runs no step. Without /proc, existing is all
 * that can be told.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return true;
  }
  return !exited(stat, () => threadCount(pid));
}

/**
 * True when `pid` is running: it exists and is not a zombie. An orphan's exit status is collected
 * by init, which in a container may never do it, so a stopped orphan can linger as a zombie.
 */
export async function processRunning(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat !== '' && !exited(stat, () => threadCount(pid));
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
