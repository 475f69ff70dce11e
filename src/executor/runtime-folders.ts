// Private runtime folders of steps (helper sockets), and cleanup after a run that was killed
// (SIGKILL, power loss) before it could stop its helpers. The owner's pid is part of the
// folder's name, so ownership is known from the instant the folder exists; a later apply stops
// the qemu-nbd/qemu-img processes of this user whose command line names a path in a folder whose
// owner is gone, and removes the folder. Helpers always name their folder (their socket lives
// there), so none is missed, even one started an instant before its owner was killed. Only
// folders that look exactly like chainform's (name, owner, mode 0700) are ever touched.
import { lstat, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { processAlive, processRunning, stopProcesses } from '../util/process-alive.js';

const PREFIX = 'chainform-';

/** Creates a private folder (mode 0700) named after this process: `chainform-<pid>-XXXXXX`. */
export function createRuntimeFolder(): Promise<string> {
  return mkdtemp(join(tmpdir(), `${PREFIX}${process.pid}-`));
}

/**
 * The owner pid of a runtime folder, or undefined when `name` is not one chainform made: exactly
 * `chainform-<pid>-` plus mkdtemp's six characters, a directory owned by this user with mode 0700
 * (as mkdtemp makes it). Anything else in the temp folder is never touched.
 */
async function ownerOf(dir: string, name: string): Promise<number | undefined> {
  const match = /^chainform-(\d+)-[A-Za-z0-9]{6}$/.exec(name);
  if (!match) return undefined;
  const info = await lstat(dir).catch(() => undefined);
  if (!info?.isDirectory() || (info.mode & 0o777) !== 0o700) return undefined;
  if (process.getuid && info.uid !== process.getuid()) return undefined;
  return Number(match[1]);
}

/** Programs chainform runs as helpers; only these are ever signalled by the reaper. */
const HELPER_PROGRAMS = new Set(['qemu-nbd', 'qemu-img']);

/** A helper process: its pid and its command line. */
interface Helper {
  pid: number;
  argv: string[];
}

/**
 * Live (not zombie) helper processes of this user with an argument inside `dir`. The folder
 * name is unique (mkdtemp), so such a process was started for that folder.
 */
async function helpersUsing(dir: string): Promise<Helper[]> {
  const found: Helper[] = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0').slice(0, -1);
    if (!HELPER_PROGRAMS.has(basename(argv[0] ?? ''))) continue;
    if (!argv.some((arg) => arg.includes(`${dir}/`))) continue;
    const info = await lstat(`/proc/${entry}`).catch(() => undefined);
    if (!info || (process.getuid && info.uid !== process.getuid())) continue;
    if (await processRunning(Number(entry))) found.push({ pid: Number(entry), argv });
  }
  return found;
}

/** How long orphaned helpers get to exit after SIGTERM before SIGKILL, and then at most. */
const TERM_GRACE_MS = 5_000;
const GIVE_UP_MS = 10_000;

/** What {@link reapOrphanedRuntimeFolders} did. */
export interface Reaped {
  /** The helpers it stopped (qemu-nbd exports of killed runs), with the pid of the run that started each. */
  stoppedHelpers: { owner: number; argv: string[] }[];
}

/**
 * Stops the helpers of runtime folders whose owner process is gone, and removes the folders.
 * Never fails: a folder it cannot clean up is left for a later run.
 */
export async function reapOrphanedRuntimeFolders(): Promise<Reaped> {
  const reaped: Reaped = { stoppedHelpers: [] };
  const names = await readdir(tmpdir()).catch(() => [] as string[]);
  for (const name of names) {
    const dir = join(tmpdir(), name);
    const owner = await ownerOf(dir, name);
    if (owner === undefined || processAlive(owner)) continue;
    // The helpers found by the first look are the ones signalled; those not left were stopped.
    const signalled = new Map<number, string[]>();
    const left = await stopProcesses(
      async () => {
        const helpers = await helpersUsing(dir);
        if (signalled.size === 0) for (const helper of helpers) signalled.set(helper.pid, helper.argv);
        return helpers.map((helper) => helper.pid);
      },
      { graceMs: TERM_GRACE_MS, giveUpMs: GIVE_UP_MS },
    );
    for (const [pid, argv] of signalled) if (!left.includes(pid)) reaped.stoppedHelpers.push({ owner, argv });
    if (left.length > 0) continue; // still serving: leave the folder (its socket) alone
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
  return reaped;
}
