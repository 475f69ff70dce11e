// Measuring the variants of a scenario: GNU time for wall time and block output, the I/O shim for
// the bytes the qemu processes read and wrote; and the table rows built from the measurements.
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { execa } from 'execa';
import { spread, timedScript } from './stats.mjs';

/** How long the disk must show no I/O before a timed run starts, and the longest wait for that. */
const IDLE_MS = 300;
const SETTLE_LIMIT_MS = 60_000;

/**
 * Waits until the block device holding `path` has done no I/O for IDLE_MS (its "time doing I/O"
 * in /proc/diskstats stands still). A synced filesystem can still be busy (the discards of the
 * last pass's deleted files on a filesystem mounted with `discard`, other writeback): a run
 * started then would share the disk with that work. Without /proc/diskstats, or when the device
 * is not listed (tmpfs), it returns at once.
 */
async function settleDisk(path) {
  const { dev } = await stat(path);
  const major = (dev >> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  const busyTicks = async () => {
    const lines = await readFile('/proc/diskstats', 'utf8').catch(() => '');
    const fields = lines
      .split('\n')
      .map((line) => line.trim().split(/\s+/))
      .find((f) => Number(f[0]) === major && Number(f[1]) === minor);
    // Field 10 of the device's statistics (index 12 with major, minor and name): ms doing I/O.
    return fields ? Number(fields[12]) : undefined;
  };
  const deadline = Date.now() + SETTLE_LIMIT_MS;
  let last = await busyTicks();
  let quietSince = Date.now();
  while (last !== undefined && Date.now() - quietSince < IDLE_MS && Date.now() < deadline) {
    await delay(50);
    const now = await busyTicks();
    if (now !== last) quietSince = Date.now();
    last = now;
  }
}

/**
 * Reads every file under `dir` (the scenario's inputs), so that each timed run starts with them
 * in the page cache. This machine's kernel evicts page cache idle for a few seconds (DAMON
 * reclaim): without this, whichever variant ran first in a pass read its inputs from disk and
 * the second found them cached (measured: 1.8 s cold against 0.04 s cached for 1 GiB).
 */
export async function readIntoCache(dir) {
  // find batches the names (`-exec ... +`): a folder of many thousand files stays under ARG_MAX.
  await execa('sh', ['-c', 'find "$1" -type f -exec cat {} + >/dev/null', 'sh', dir]);
}

/**
 * Runs `script` (bash -euc) in `cwd`; with `io`, qemu-img/qemu-nbd go through the I/O shim. The
 * filesystem is synced first and the disk left to go idle, so dirty pages of the inputs and the
 * discards of deleted files are not worked off inside the timed run.
 * Returns wall seconds and block output (GNU time: the script and all its children) and, with
 * the shim, the bytes the qemu processes read and wrote through syscalls (else null).
 */
export async function measure(script, cwd, io, inputs) {
  await execa('sync', ['-f', cwd]);
  await settleDisk(cwd);
  if (inputs) await readIntoCache(inputs);
  const session = io?.session();
  const timed = await timedScript(script, cwd, session?.env ?? {});
  const totals = (await session?.totals()) ?? null;
  return {
    seconds: timed.seconds,
    blockOutBytes: timed.bytesWritten,
    qemuRead: totals?.rchar ?? null,
    qemuWritten: totals?.wchar ?? null,
    qemuProcesses: totals?.processes ?? null,
    byCommand: totals?.byCommand ?? null,
  };
}

/**
 * The measuring loop of the disk scenarios. Pass 0 runs every variant once under the I/O shim:
 * it gives the bytes read and written (the same from run to run) and warms the page cache.
 * Passes 1..runs are timed without the shim, which costs ~30 ms per qemu process and so would
 * weigh on the variant that runs more of them. The order of the variants rotates by one place from
 * pass to pass, so that over as many passes as there are variants each runs once at every place:
 * on this project's machine a run's place in its pass moves its time up to 3x (the first writes
 * into disk blocks the previous pass freed, fast; the next into blocks not written before, slow),
 * so compare variants at the same place (stats.mjs, positionMatchedRatio). Each pass works in its
 * own folder, `workdir/passN`, made before `setup(pass, dir)` and removed after
 * `after(pass, variants, results)`. `setup` returns the pass's variants ({name: {script, cwd}});
 * `after` checks the outputs. `inputs`, the folder of the scenario's input images, is read into
 * the page cache before every run (see readIntoCache).
 */
export async function measurePasses({ runs, io, workdir, inputs, log, setup, after }) {
  const accounting = {};
  const timed = {};
  const orders = [];
  for (let pass = 0; pass <= runs; pass++) {
    log(pass === 0 ? 'accounting pass (I/O shim)' : `timed run ${pass}/${runs}`);
    const dir = join(workdir, `pass${pass}`);
    await mkdir(dir, { recursive: true });
    const variants = await setup(pass, dir);
    const names = Object.keys(variants);
    const order = names.map((_, i) => names[(i + pass) % names.length]);
    const results = {};
    for (const name of order) {
      results[name] = await measure(variants[name].script, variants[name].cwd, pass === 0 ? io : null, inputs);
    }
    orders.push(order);
    for (const name of names) {
      if (pass === 0) {
        accounting[name] = results[name];
      } else {
        timed[name] ??= [];
        timed[name].push(results[name]);
      }
    }
    await after?.(pass, variants, results);
    await rm(dir, { recursive: true, force: true });
  }
  return { accounting, timed, orders };
}

/**
 * A table row: wall time and block output over the timed runs, bytes read and written by the qemu
 * processes in the accounting run (null without the shim).
 */
export function rowOf(variant, timed, accounting) {
  return {
    variant,
    wallSeconds: spread(timed.map((m) => m.seconds)),
    bytesRead: accounting.qemuRead,
    bytesWritten: accounting.qemuWritten,
    blockOutBytes: spread(timed.map((m) => m.blockOutBytes)),
  };
}

/** The reference row of a table: the least any variant has to write and read (not measured). */
export function minimumRow(what, written, read = written) {
  return { variant: `minimum: ${what}`, reference: true, bytesRead: read, bytesWritten: written };
}

/** "ran N qemu processes: qemu-img info x4, ..." for the accounting run (empty without the shim). */
export function processesNote(variant, accounting) {
  if (!accounting.byCommand) return [];
  const parts = Object.entries(accounting.byCommand).map(([command, c]) => `${command} x${c.count}`);
  const n = accounting.qemuProcesses;
  return [`${variant} ran ${n} qemu process${n === 1 ? '' : 'es'}: ${parts.join(', ')}`];
}
