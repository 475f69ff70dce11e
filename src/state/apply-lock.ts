// One apply at a time per state folder. proper-lockfile does the locking (atomic mkdir, mtime
// refreshed while held, stale after a while); owner files say who holds or wants it, so a refusal
// can name the pid, host and start time, and a lock no live process can hold is stale at once.
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import writeFileAtomic from 'write-file-atomic';
import { processAlive } from '../util/process-alive.js';
import { stateDir } from './ledger.js';

/** Who holds the apply lock. */
export interface LockHolder {
  pid: number;
  host: string;
  startedAt: string;
}

/** The lock, or who holds it. */
export type LockAttempt =
  | { ok: true; release: () => Promise<void> }
  | { ok: false; holder: LockHolder | undefined; lockPath: string };

/** A lock whose holder stopped refreshing it for this long is stale, wherever it runs. */
const STALE_MS = 30_000;

async function readHolder(path: string): Promise<LockHolder | undefined> {
  try {
    const holder = JSON.parse(await readFile(path, 'utf8')) as LockHolder;
    return typeof holder.pid === 'number' ? holder : undefined;
  } catch {
    return undefined;
  }
}

/** The owner files in the state folder: `apply.owner.<pid>.json`, one per process trying. */
async function ownerFiles(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.filter((n) => /^apply\.owner\.\d+\.json$/.test(n)).map((n) => join(dir, n));
}

/** A holder that may be alive: on another host (cannot tell), or a live process here. */
function mayBeAlive(holder: LockHolder): boolean {
  return holder.host !== hostname() || processAlive(holder.pid);
}

/**
 * Takes the apply lock of the state folder beside a manifest, or says who holds it.
 *
 * Every process names itself in its own owner file *before* it tries the lock, so a live holder
 * always has one. A lock for which no owner file names a live process was left by a run killed
 * at any moment, and is taken over at once; one that may be alive is never taken over.
 */
export async function acquireApplyLock(manifestDir: string, now: () => Date = () => new Date()): Promise<LockAttempt> {
  const dir = stateDir(manifestDir);
  await mkdir(dir, { recursive: true });
  const lockPath = join(dir, 'apply.lock');
  const ownPath = join(dir, `apply.owner.${process.pid}.json`);
  const own: LockHolder = { pid: process.pid, host: hostname(), startedAt: now().toISOString() };
  // Renamed into place whole, but not fsynced: it speaks only for a live process, and after a
  // crash or power loss its writer is gone whether the file survived or not.
  await writeFileAtomic(ownPath, `${JSON.stringify(own)}\n`, { fsync: false });
  const lock = () =>
    lockfile.lock(dir, {
      lockfilePath: lockPath,
      realpath: false,
      stale: STALE_MS,
      retries: 0,
      // Losing the lock mid-run (someone removed it) must not crash a step half-way.
      onCompromised: () => undefined,
    });
  let release: () => Promise<void>;
  try {
    release = await lock();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') {
      await rm(ownPath, { force: true });
      throw e;
    }
    const others = (await Promise.all((await ownerFiles(dir)).filter((f) => f !== ownPath).map(readHolder))).filter(
      (h): h is LockHolder => h !== undefined,
    );
    const holder = others.find(mayBeAlive);
    if (holder) {
      await rm(ownPath, { force: true });
      return { ok: false, holder, lockPath };
    }
    // Every process that could hold it is gone (or none ever named itself): a killed run's lock.
    await rm(lockPath, { recursive: true, force: true });
    try {
      release = await lock();
    } catch (again) {
      await rm(ownPath, { force: true });
      if ((again as NodeJS.ErrnoException).code === 'ELOCKED') return { ok: false, holder: undefined, lockPath };
      throw again;
    }
  }
  // Owner files of processes that died trying the lock, or after releasing it, are stale.
  for (const other of await ownerFiles(dir)) {
    const holder = other === ownPath ? undefined : await readHolder(other);
    if (other !== ownPath && !(holder && mayBeAlive(holder))) await rm(other, { force: true });
  }
  return {
    ok: true,
    // Unlock first: a dead process's owner file next to a free lock is harmless.
    release: async () => {
      await release();
      await rm(ownPath, { force: true });
    },
  };
}
