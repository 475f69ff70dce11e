// After an apply was killed (SIGKILL, crash, power loss) it could not clean up after itself. The
// next apply does it first, from the journal: it stops the qemu-img commands the dead run left
// running (they may still write, and they hold image locks), removes the temporary files of the
// steps it was in the middle of, and stops orphaned qemu-nbd helpers. Planning comes after, from
// what is on disk then: a finished step is never trusted on the journal's word, only on the
// ledger's fingerprints.

import { readdir, readFile, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { readImageFile } from '../inspect/image-file.js';
import { relativeDataFile, repairLine } from '../inspect/read-chain.js';
import { type Argv, layerInfoCommand, repairRefcountsCommand } from '../qemu/commands.js';
import { parseImageInfo } from '../qemu/image-info.js';
import { qemuMessage } from '../qemu/messages.js';
import { type CommandRunner, ExecaRunner } from '../qemu/runner.js';
import { fingerprintOf, sameFingerprint } from '../state/fingerprint.js';
import { closeRecoveredJournal, type Journal, killedRun, readJournal } from '../state/journal.js';
import { stateDir } from '../state/ledger.js';
import { processRunning, stopProcesses } from '../util/process-alive.js';
import { reapOrphanedRuntimeFolders } from './runtime-folders.js';

/** What was found and cleaned up after a killed apply. */
export interface Recovery {
  /** The run that was killed. */
  run: { pid: number; host: string; startedAt: string };
  /** Steps it finished whose outputs are still as it left them. */
  doneSteps: string[];
  /** Steps it finished whose outputs changed since (the planner decides what they need). */
  changedSteps: string[];
  /** Steps it was in the middle of. */
  interruptedSteps: string[];
  /** Leftover commands of those steps that were still running and were stopped. */
  stoppedCommands: Argv[];
  /** Helpers of the killed run (qemu-nbd exports) that were still serving and were stopped. */
  stoppedHelpers: Argv[];
  /** Half-written temporary files that were removed. */
  removedTemporaries: string[];
  /**
   * Files a step had renamed into place where nothing was (a new data file) when the run was
   * killed before it renamed its image: the image does not use them, and the next plan would
   * refuse them as files in the way.
   */
  removedUncommitted: string[];
  /** Images changed in place whose refcounts the interrupted step left dirty, now repaired. */
  repaired: string[];
  /** Such images that could not be repaired (plan then reports them as dirty). */
  unrepaired: { path: string; reason: string }[];
}

/** How long a leftover command gets to exit after SIGTERM before it is killed, and then at most. */
const TERM_GRACE_MS = 10_000;
const GIVE_UP_MS = 20_000;

/** True when `pid` is running `argv`: pids are reused, so the command line is checked too. */
async function isRunning(pid: number, argv: Argv): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline === `${argv.join('\0')}\0` && (await processRunning(pid));
}

/** Stops a leftover command and waits until it is gone; false when it was not running. */
async function stopCommand(pid: number, argv: Argv): Promise<boolean> {
  if (!(await isRunning(pid, argv))) return false;
  const find = async () => ((await isRunning(pid, argv)) ? [pid] : []);
  const left = await stopProcesses(find, { graceMs: TERM_GRACE_MS, giveUpMs: GIVE_UP_MS });
  return left.length === 0;
}

async function outputsUnchanged(step: Journal['steps'][number]): Promise<boolean> {
  for (const [path, print] of Object.entries(step.outputs ?? {})) {
    if (!sameFingerprint(await fingerprintOf(path), print)) return false;
  }
  return true;
}

/**
 * Removes the temporary files of state writes a killed run left (write-file-atomic writes
 * `ledger.json.<hash>` and renames it; killed before the rename, the temporary file stays).
 * Owner files of dead processes are the apply lock's business (apply-lock.ts).
 */
async function removeStateLeftovers(manifestDir: string): Promise<void> {
  const dir = stateDir(manifestDir);
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (/^(ledger|journal|apply\.owner(\.\d+)?)\.json\.[0-9a-z]+$/i.test(name))
      await rm(join(dir, name), { force: true });
  }
}

/** Rebuilds the refcounts of a qcow2 image an interrupted in-place step left dirty. */
async function repairIfDirty(path: string, runner: CommandRunner, recovery: Recovery): Promise<void> {
  const info = await runner.run(layerInfoCommand(path, 'qcow2'));
  const layer = info.exitCode === 0 ? parseImageInfo(info.stdout)[0] : undefined;
  if (!layer?.dirty) return;
  // A repair opens the data file read-write: never one another disk's name leads to from here.
  const dataFile = relativeDataFile(path, layer);
  if (dataFile?.severity === 'error') {
    const by = repairLine(path, layer);
    recovery.unrepaired.push({ path, reason: `${dataFile.message} [${dataFile.code}]; repair it with \`${by}\`` });
    return;
  }
  const repair = await runner.run(repairRefcountsCommand(path));
  if (repair.exitCode === 0) recovery.repaired.push(path);
  else recovery.unrepaired.push({ path, reason: qemuMessage(repair.stderr) || `exit ${repair.exitCode}` });
}

/**
 * The data file of `step` renamed into place before the run was killed, while its image's own
 * temporary file is still there (not renamed): a complete copy nothing uses. It is the step's
 * only when nothing was at that path when the step started and the temporary image's header
 * already names it (the last command renames the data file in the header); the image renamed
 * too, the step is done, and it is the image's data file.
 */
async function renamedBeforeTheKill(step: Journal['steps'][number]): Promise<string[]> {
  const image = step.renames?.at(-1);
  if (!image || !step.targetsBefore) return [];
  const named = readImageFile(image.temporaryPath).qcow2?.dataFileName;
  const left: string[] = [];
  for (const { temporaryPath, onto } of step.renames?.slice(0, -1) ?? []) {
    if (named !== onto || step.targetsBefore[onto] !== null || (await fingerprintOf(temporaryPath))) continue;
    if (await fingerprintOf(onto)) left.push(onto);
  }
  return left;
}

/**
 * Cleans up after the last apply of this manifest folder if it was killed; null when it ended on
 * its own (or there was none). The caller holds the apply lock.
 */
export async function recoverInterruptedApply(
  manifestDir: string,
  runner: CommandRunner = new ExecaRunner(),
  now: () => Date = () => new Date(),
): Promise<Recovery | null> {
  const reaped = await reapOrphanedRuntimeFolders();
  await removeStateLeftovers(manifestDir);
  const journal = await readJournal(manifestDir);
  // The lock is ours, so a live writer of an unfinished journal is a stuck run: leave it alone.
  if (!killedRun(journal)) return null;
  const local = journal.host === hostname();
  const recovery: Recovery = {
    run: { pid: journal.pid, host: journal.host, startedAt: journal.startedAt },
    doneSteps: [],
    changedSteps: [],
    interruptedSteps: [],
    stoppedCommands: [],
    // Helpers of other folders' killed runs are stopped too (they hold images), but are not this run's.
    stoppedHelpers: local ? reaped.stoppedHelpers.filter((h) => h.owner === journal.pid).map((h) => h.argv) : [],
    removedTemporaries: [],
    removedUncommitted: [],
    repaired: [],
    unrepaired: [],
  };
  for (const step of journal.steps) {
    if (step.status === 'done') {
      ((await outputsUnchanged(step)) ? recovery.doneSteps : recovery.changedSteps).push(step.id);
      continue;
    }
    if (step.status !== 'running') continue;
    recovery.interruptedSteps.push(step.id);
    // Pids mean nothing on another host (shared storage): only temporary files are cleaned then.
    for (const command of local ? step.commands : []) {
      if (await stopCommand(command.pid, command.argv)) recovery.stoppedCommands.push(command.argv);
    }
    for (const renamed of await renamedBeforeTheKill(step)) {
      await rm(renamed, { force: true });
      recovery.removedUncommitted.push(renamed);
    }
    for (const temporary of step.temporaries) {
      if (!(await fingerprintOf(temporary))) continue;
      await rm(temporary, { force: true });
      recovery.removedTemporaries.push(temporary);
    }
    // An in-place step (rebase, amend) killed on a lazy-refcounts image leaves it dirty.
    if (step.temporaries.length === 0) await repairIfDirty(step.path, runner, recovery);
  }
  await closeRecoveredJournal(manifestDir, journal, now());
  return recovery;
}
