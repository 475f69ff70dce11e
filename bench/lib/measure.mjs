// Measuring the variants of a scenario: GNU time for wall time and block output, the I/O shim for
// the bytes the qemu processes read and wrote; and the table rows built from the measurements.
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { spread, timedScript } from './stats.mjs';

/**
 * Runs `script` (bash -euc) in `cwd`; with `io`, qemu-img/qemu-nbd go through the I/O shim. The
 * filesystem is synced first, so dirty pages of the inputs are not flushed inside the timed run.
 * Returns wall seconds and block output (GNU time: the script and all its children) and, with
 * the shim, the bytes the qemu processes read and wrote through syscalls (else null).
 */
export async function measure(script, cwd, io) {
  await execa('sync', ['-f', cwd]);
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
 * weigh on the variant that runs more of them. The order of the variants alternates between
 * passes. Each pass works in its own folder, `workdir/passN`, made before `setup(pass, dir)` and
 * removed after `after(pass, variants, results)`. `setup` returns the pass's variants ({name:
 * {script, cwd}}); `after` checks the outputs.
 */
export async function measurePasses({ runs, io, workdir, log, setup, after }) {
  const accounting = {};
  const timed = {};
  const orders = [];
  for (let pass = 0; pass <= runs; pass++) {
    log(pass === 0 ? 'accounting pass (I/O shim)' : `timed run ${pass}/${runs}`);
    const dir = join(workdir, `pass${pass}`);
    await mkdir(dir, { recursive: true });
    const variants = await setup(pass, dir);
    const names = Object.keys(variants);
    const order = pass % 2 === 0 ? names : [...names].reverse();
    const results = {};
    for (const name of order) {
      results[name] = await measure(variants[name].script, variants[name].cwd, pass === 0 ? io : null);
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
