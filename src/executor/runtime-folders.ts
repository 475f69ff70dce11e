// Private runtime folders of steps (helper sockets), and cleanup after a run that was killed
// (SIGKILL, power loss) before it could stop its helpers: each folder names its owner and its
// helpers, and the next apply stops helpers whose owner is gone and removes the folder.
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processAlive } from '../util/process-alive.js';

const PREFIX = 'chainform-';

/** Creates a private folder (mode 0700) owned by this process. */
export async function createRuntimeFolder(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), PREFIX));
  await writeFile(join(dir, 'owner'), `${process.pid}\n`);
  return dir;
}

/** Notes a helper's pid in its folder, so a later run can stop it if this one dies. */
export async function noteHelper(dir: string, pid: number): Promise<void> {
  await appendFile(join(dir, 'helpers'), `${pid}\n`);
}

async function pids(file: string): Promise<number[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map(Number).filter(Number.isInteger);
}

/**
 * Stops the helpers of runtime folders whose owner process is gone, and removes the folders.
 * A pid is only signalled when its command line still names the folder (pids are reused).
 */
export async function reapOrphanedRuntimeFolders(): Promise<number> {
  let reaped = 0;
  const names = await readdir(tmpdir()).catch(() => [] as string[]);
  for (const name of names.filter((n) => n.startsWith(PREFIX))) {
    const dir = join(tmpdir(), name);
    const [owner] = await pids(join(dir, 'owner'));
    if (owner === undefined || processAlive(owner)) continue;
    for (const pid of await pids(join(dir, 'helpers'))) {
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (!cmdline.includes(dir)) continue;
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    await rm(dir, { recursive: true, force: true });
    reaped++;
  }
  return reaped;
}
