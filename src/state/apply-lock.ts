// One apply at a time per state folder. proper-lockfile does the locking (atomic mkdir, mtime
// refreshed while held, stale after a while); an owner file says who holds it, so a refusal can
// name the pid, host and start time, and a holder on this host whose process is gone is stale.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
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

/** How long a lock may be held without an owner file before it counts as left by a killed run. */
const OWNER_WAIT_MS = 2_000;

/**
 * Who holds the lock; waits briefly for a holder that has just taken it to write the owner file.
 * Undefined when no owner appears: its holder was killed before it could name itself.
 */
async function ownerOf(ownerPath: string): Promise<LockHolder | undefined> {
  for (let waited = 0; waited < OWNER_WAIT_MS; waited += 100) {
    const holder = await readHolder(ownerPath);
    if (holder) return holder;
    await sleep(100);
  }
  return readHolder(ownerPath);
}

/** Takes the apply lock of the state folder beside a manifest, or says who holds it. */
export async function acquireApplyLock(manifestDir: string, now: () => Date = () => new Date()): Promise<LockAttempt> {
  const dir = stateDir(manifestDir);
  await mkdir(dir, { recursive: true });
  const lockPath = join(dir, 'apply.lock');
  const ownerPath = join(dir, 'apply.owner.json');
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
    if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') throw e;
    const holder = await ownerOf(ownerPath);
    // A holder on this host whose process is gone (killed) left a stale lock: take it over. So
    // did one killed between taking the lock and naming itself (no owner file after the wait).
    const stale = holder === undefined || (holder.host === hostname() && !processAlive(holder.pid));
    if (!stale) return { ok: false, holder, lockPath };
    await rm(lockPath, { recursive: true, force: true });
    release = await lock();
  }
  const holder: LockHolder = { pid: process.pid, host: hostname(), startedAt: now().toISOString() };
  await writeFileAtomic(ownerPath, `${JSON.stringify(holder)}\n`);
  return {
    ok: true,
    // Unlock first: killed in between, a stale owner file is harmless (the next holder replaces
    // it), while a lock without an owner would look taken.
    release: async () => {
      await release();
      await rm(ownerPath, { force: true });
    },
  };
}
