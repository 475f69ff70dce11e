// Private runtime folders of steps (helper sockets), and cleanup after a run that was killed
// (SIGKILL, power loss) before it could stop its helpers. The owner's pid is part of the
// folder's name, so ownership is known from the instant the folder exists; a later apply stops
// every process whose command line names a folder whose owner is gone, and removes the folder.
// Helpers always name their folder (their socket lives there), so none can be missed, even one
// started an instant before its owner was killed.
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processAlive } from '../util/process-alive.js';

const PREFIX = 'chainform-';

/** Creates a private folder (mode 0700) named after this process: `chainform-<pid>-XXXXXX`. */
export function createRuntimeFolder(): Promise<string> {
  return mkdtemp(join(tmpdir(), `${PREFIX}${process.pid}-`));
}

/** The owner pid in a runtime folder's name, or undefined for a name chainform did not make. */
function ownerOf(name: string): number | undefined {
  const match = /^chainform-(\d+)-[^/]+$/.exec(name);
  return match ? Number(match[1]) : undefined;
}

/** Pids of live (not zombie) processes with an argument that is the folder `text` or a path in it. */
async function processesNaming(text: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (!cmdline.split('\0').some((arg) => arg === text || arg.includes(`${text}/`))) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
    found.push(Number(entry));
  }
  return found;
}

/** How long orphaned helpers get to exit after SIGTERM before SIGKILL. */
const TERM_GRACE_MS = 5_000;

/**
 * Stops the helpers of runtime folders whose owner process is gone, and removes the folders.
 * Returns how many folders were cleaned up.
 */
export async function reapOrphanedRuntimeFolders(): Promise<number> {
  let reaped = 0;
  const names = await readdir(tmpdir()).catch(() => [] as string[]);
  for (const name of names) {
    const owner = ownerOf(name);
    if (owner === undefined || processAlive(owner)) continue;
    const dir = join(tmpdir(), name);
    // The folder name is unique (mkdtemp): a process naming it is one of its helpers.
    for (let waited = 0; ; waited += 50) {
      const helpers = await processesNaming(dir);
      if (helpers.length === 0) break;
      for (const pid of helpers) {
        try {
          process.kill(pid, waited >= TERM_GRACE_MS ? 'SIGKILL' : 'SIGTERM');
        } catch {
          // already gone
        }
      }
      await sleep(50);
    }
    await rm(dir, { recursive: true, force: true });
    reaped++;
  }
  return reaped;
}
