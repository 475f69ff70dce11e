// Benchmark scenario "flags" (issue 6, scenario 6): which qemu-img flags make chainform's
// data-moving commands fastest while keeping durability (data flushed to disk before a step
// counts as done). Operations, on a SIZE MiB image (default 1 GiB) filled with non-zero data:
//   - full convert: raw -> qcow2, qcow2 -> qcow2, and a sparse-ish raw source (25% data, 10%
//     written zeros, the rest holes);
//   - convert keeping copy-on-write (`-B base -F qcow2`) of an overlay with 1 cluster in 12 written;
//   - safe rebase of such an overlay onto a backing that differs from its current one in 1
//     cluster in 20 (it reads both backings in full).
// Each variant is chainform's own argv (built by dist/qemu/commands.js) with flags added after
// the subcommand, timed as the qemu-img run followed by `sync FILE` (fsync, as the executor's
// flush does), so a variant that leaves the flush to chainform pays for it. Every output is
// checked with `qemu-img compare` against its source: a fast but wrong variant fails the run.
// Reads are cold by default: before every timed run the cached pages of the files it reads are
// evicted (POSIX_FADV_DONTNEED via `dd iflag=nocache count=0`, per file, so benchmarks running
// beside this one keep their cache); --warm reads those files once instead. Variant order
// rotates every other run and reverses on odd runs. Standalone:
//   node bench/scenarios/flags.mjs [--size-mib 1024] [--runs 3] [--warm] [--keep]
//     [--operation NAME-PREFIX]... [--variant LABEL]...   (a focused rerun; the baseline always runs)
import { copyFile, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { median, spread, timedScript } from '../lib/stats.mjs';

/** Scenario id, as the umbrella runner names it. */
export const name = 'flags';
/** One-line description for the umbrella runner's report. */
export const title = 'qemu-img flags (-t/-T cache modes, -m/-W, -C) on convert and safe rebase, kept durable';

const MiB = 1024 * 1024;
const CLUSTER = 65536;
/** The overlay holds every TOP_EVERY-th cluster (8.3%). */
const TOP_EVERY = 12;
/** The second backing differs from the first in every DIFF_EVERY-th cluster from DIFF_FIRST (5%). */
const DIFF_EVERY = 20;
/** Odd, so that no differing cluster is one the overlay holds (those are all even multiples of 12 apart). */
const DIFF_FIRST = 5;

/** Label of chainform's own argv, the baseline every other variant is compared with. */
const BASELINE = 'chainform today';

/** Variants of a convert: flags added to chainform's argv. The executor's fsync follows each. */
const CONVERT_VARIANTS = [
  { variant: BASELINE, flags: [] },
  { variant: '-t writeback', flags: ['-t', 'writeback'] },
  { variant: '-t none', flags: ['-t', 'none'] },
  { variant: '-T none', flags: ['-T', 'none'] },
  { variant: '-m 16 -W', flags: ['-m', '16', '-W'] },
  { variant: '-C', flags: ['-C'] },
  { variant: '-t writeback -m 16 -W', flags: ['-t', 'writeback', '-m', '16', '-W'] },
  { variant: '-t writeback -C', flags: ['-t', 'writeback', '-C'] },
  // Measured at 1 GiB, 3 runs, and dropped as clearly slower than chainform's argv (O_DIRECT
  // writes are synchronous 2 MiB requests here): '-t none -T none', '-t none -m 16 -W', '-C -t none'.
];

/** Variants of a safe rebase (it has no -m, -W or -C); the executor's fsync follows each. */
const REBASE_VARIANTS = [
  { variant: BASELINE, flags: [] },
  { variant: '-t none', flags: ['-t', 'none'] },
  { variant: '-T none', flags: ['-T', 'none'] },
  { variant: '-t none -T none', flags: ['-t', 'none', '-T', 'none'] },
  { variant: '-t unsafe', flags: ['-t', 'unsafe'] },
];

/** Quotes one word for bash. */
const quote = (word) => `'${String(word).replaceAll("'", "'\\''")}'`;
/** A bash command line running argv as is. */
const shellLine = (argv) => argv.map(quote).join(' ');
/** Chainform's argv with `flags` right after the subcommand, everything else untouched. */
const withFlags = (argv, flags) => [argv[0], argv[1], ...flags, ...argv.slice(2)];

/** qemu-io arguments writing pattern `pattern` into every `every`-th cluster from `first`. */
function clusterWrites(sizeMiB, pattern, first, every) {
  const commands = [];
  for (let c = first; c < (sizeMiB * MiB) / CLUSTER; c += every) {
    commands.push('-c', `write -P ${pattern} ${c * CLUSTER} ${CLUSTER}`);
  }
  return commands;
}

/** qemu-io arguments for the sparse-ish source: 1 MiB of data in 4, 1 MiB of written zeros in 10. */
function sparseWrites(sizeMiB) {
  const commands = [];
  for (let m = 0; m < sizeMiB; m++) {
    if (m % 4 === 0) commands.push('-c', `write -P ${0x10 + (m % 200)} ${m}M 1M`);
    else if (m % 10 === 3) commands.push('-c', `write -P 0 ${m}M 1M`);
  }
  return commands;
}

/** Flushes files to disk (fsync), so that no setup writes are still dirty when timing starts. */
const syncFiles = (files) => execa('sync', files);

/** Drops the cached pages of these files only (they must be clean: sync them first). */
async function evict(files) {
  for (const file of files) await execa('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** Reads these files once, so every variant starts with them cached. */
async function warm(files) {
  for (const file of files) await execa('dd', [`if=${file}`, 'of=/dev/null', 'bs=4M', 'status=none']);
}

/** Throws unless both images present the same content. */
async function assertSame(a, aFormat, b, bFormat) {
  const result = await execa('qemu-img', ['compare', '-q', '-f', aFormat, '-F', bFormat, a, b], { reject: false });
  if (result.exitCode !== 0) {
    throw new Error(`${b} does not match ${a} (qemu-img compare exit ${result.exitCode}): ${result.stderr}`);
  }
}

/** The backing name stored in a qcow2 image. */
async function backingOf(file) {
  const { stdout } = await execa('qemu-img', ['info', '--output=json', '-U', '-f', 'qcow2', file]);
  return JSON.parse(stdout)['backing-filename'];
}

/** Bytes a file occupies on disk. */
const onDisk = async (file) => (await stat(file)).blocks * 512;

/** Builds the source images; everything is flushed before it returns. */
async function makeImages(dir, sizeMiB, log) {
  const f = (n) => join(dir, n);
  log(`flags: building ${sizeMiB} MiB sources in ${dir}`);
  await execa('qemu-img', ['create', '-q', '-f', 'raw', f('full.raw'), `${sizeMiB}M`]);
  await execa('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a 0 ${sizeMiB}M`, f('full.raw')]);
  await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', f('full.raw'), f('full.qcow2')]);
  await execa('qemu-img', ['create', '-q', '-f', 'raw', f('sparse.raw'), `${sizeMiB}M`]);
  await execa('qemu-io', ['-f', 'raw', ...sparseWrites(sizeMiB), f('sparse.raw')]);
  // The overlay names its backing relatively, as chainform writes backing names.
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'full.qcow2', '-F', 'qcow2', f('top.qcow2')]);
  await execa('qemu-io', ['-f', 'qcow2', ...clusterWrites(sizeMiB, 0x33, 0, TOP_EVERY), f('top.qcow2')]);
  await copyFile(f('full.qcow2'), f('other.qcow2'));
  await execa('qemu-io', ['-f', 'qcow2', ...clusterWrites(sizeMiB, 0x44, DIFF_FIRST, DIFF_EVERY), f('other.qcow2')]);
  await syncFiles(['full.raw', 'full.qcow2', 'sparse.raw', 'top.qcow2', 'other.qcow2'].map(f));
}

/**
 * The operations measured. Each knows the files it reads, how to reset its output before a
 * timed run, chainform's argv for it, and how to check the result.
 */
function workloads(dir, commands) {
  const f = (n) => join(dir, n);
  const fullConvert = (operation, source, sourceFormat) => ({
    operation,
    variants: CONVERT_VARIANTS,
    reads: [source],
    output: f('out.qcow2'),
    reset: () => rm(f('out.qcow2'), { force: true }),
    argv: commands.convertCommand({
      source,
      sourceFormat,
      target: f('out.qcow2'),
      targetFormat: 'qcow2',
      options: {},
    }),
    verify: () => assertSame(source, sourceFormat, f('out.qcow2'), 'qcow2'),
  });
  return [
    fullConvert('convert full raw->qcow2', f('full.raw'), 'raw'),
    fullConvert('convert full qcow2->qcow2', f('full.qcow2'), 'qcow2'),
    fullConvert('convert full sparse raw->qcow2', f('sparse.raw'), 'raw'),
    {
      operation: 'convert -B (8% in top layer)',
      variants: CONVERT_VARIANTS,
      reads: [f('top.qcow2'), f('full.qcow2')],
      output: f('out.qcow2'),
      reset: () => rm(f('out.qcow2'), { force: true }),
      argv: commands.convertKeepingBackingCommand({
        source: f('top.qcow2'),
        sourceFormat: 'qcow2',
        target: f('out.qcow2'),
        targetFormat: 'qcow2',
        options: {},
        backingName: 'full.qcow2',
        backingFormat: 'qcow2',
      }),
      verify: async () => {
        await assertSame(f('top.qcow2'), 'qcow2', f('out.qcow2'), 'qcow2');
        if ((await backingOf(f('out.qcow2'))) !== 'full.qcow2') throw new Error('convert -B lost the backing link');
      },
    },
    {
      operation: 'safe rebase (backings differ in 5%)',
      variants: REBASE_VARIANTS,
      // The rebase works in place: each run gets a fresh, flushed copy of the overlay.
      reads: [f('work.qcow2'), f('full.qcow2'), f('other.qcow2')],
      output: f('work.qcow2'),
      reset: async () => {
        await copyFile(f('top.qcow2'), f('work.qcow2'));
        await syncFiles([f('work.qcow2')]);
      },
      argv: commands.safeRebaseCommand({
        image: f('work.qcow2'),
        format: 'qcow2',
        backingName: 'other.qcow2',
        backingFormat: 'qcow2',
      }),
      verify: async () => {
        await assertSame(f('top.qcow2'), 'qcow2', f('work.qcow2'), 'qcow2');
        if ((await backingOf(f('work.qcow2'))) !== 'other.qcow2') throw new Error('rebase did not relink');
      },
    },
  ];
}

/**
 * Variant order of run `r`: rotated by floor(r/2), reversed on odd runs, so every position and
 * its mirror are used in turn (A B, B A, B A, A B, ... for a pair).
 */
function orderFor(variants, r) {
  const shift = Math.floor(r / 2) % variants.length;
  const rotated = [...variants.slice(shift), ...variants.slice(0, shift)];
  return r % 2 ? rotated.reverse() : rotated;
}

/** What `-C` does here: copy_file_range calls of a small convert -C, counted with strace. */
async function probeCopyOffload(dir) {
  const strace = await execa('strace', ['-V'], { reject: false }).catch(() => ({ exitCode: 1 }));
  if (strace.exitCode !== 0) return '-C: strace not available, offload not checked';
  const src = join(dir, 'probe.raw');
  const out = join(dir, 'probe.qcow2');
  await execa('qemu-img', ['create', '-q', '-f', 'raw', src, '16M']);
  await execa('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 16M', src]);
  const r = await execa(
    'strace',
    ['-f', '-c', '-e', 'trace=copy_file_range', 'qemu-img', 'convert', '-C', '-f', 'raw', '-O', 'qcow2', src, out],
    { reject: false },
  );
  const line = r.stderr.split('\n').find((l) => l.includes('copy_file_range'));
  const fields = line?.trim().split(/\s+/) ?? [];
  // strace -c columns: % time, seconds, usecs/call, calls, [errors,] syscall.
  const calls = Number(fields[3] ?? 0);
  const errors = fields.length === 6 ? Number(fields[4]) : 0;
  await rm(src, { force: true });
  await rm(out, { force: true });
  return `-C: qemu-img ${r.exitCode === 0 ? 'accepted it' : `failed (exit ${r.exitCode})`}; a 16 MiB convert made ${calls} copy_file_range calls, ${errors} failed (in-kernel copy, no reflink on this filesystem)`;
}

/** Environment facts for the notes. */
async function environment(dir) {
  const [version, fs] = await Promise.all([
    execa('qemu-img', ['--version']).then((r) => r.stdout.split('\n')[0]),
    execa('findmnt', ['-no', 'FSTYPE', '-T', dir]).then(
      (r) => r.stdout.trim(),
      () => 'unknown',
    ),
  ]);
  return { qemuImg: version, filesystem: fs };
}

/** Cold sequential read throughput of a file (MiB/s), to tell the disk from a host cache. */
async function coldReadRate(file) {
  await evict([file]);
  const { seconds } = await timedScript(`dd if=${quote(file)} of=/dev/null bs=4M status=none`, dirname(file));
  return (await stat(file)).size / MiB / Math.max(seconds, 0.01);
}

/** Summary row of one variant of one operation. */
function rowOf(operation, variant, flags, samples, durable = true) {
  return {
    variant,
    operation,
    flags,
    durable,
    wallSeconds: spread(samples.map((s) => (durable ? s.qemuSeconds + s.flushSeconds : s.qemuSeconds))),
    bytesWritten: median(samples.map((s) => s.bytesWritten)),
    qemuImgSeconds: spread(samples.map((s) => s.qemuSeconds)),
    flushSeconds: spread(samples.map((s) => (durable ? s.flushSeconds : 0))),
    outputBytes: median(samples.map((s) => s.outputBytes)),
  };
}

/** Per operation: the fastest durable variant and whether it beats chainform's argv clearly. */
function verdicts(rows) {
  const notes = [];
  for (const operation of [...new Set(rows.map((r) => r.operation))]) {
    const durable = rows.filter((r) => r.operation === operation && r.durable);
    const base = durable.find((r) => r.variant === BASELINE);
    const best = durable.reduce((a, b) => (b.wallSeconds.median < a.wallSeconds.median ? b : a));
    const gain = 1 - best.wallSeconds.median / base.wallSeconds.median;
    const clear = gain > 0.1 && best.wallSeconds.max < base.wallSeconds.min;
    // Samples are in run order, so the k-th of each variant ran in the same round.
    const pairedWins = best.wallSeconds.samples.filter((s, k) => s < base.wallSeconds.samples[k]).length;
    notes.push(
      best === base
        ? `${operation}: chainform's argv is the fastest durable variant`
        : `${operation}: fastest durable variant ${best.variant}, ${best.wallSeconds.median.toFixed(2)} s vs ${base.wallSeconds.median.toFixed(2)} s (${(gain * 100).toFixed(0)}% less, faster in ${pairedWins} of ${base.wallSeconds.samples.length} rounds${clear ? ', spreads apart: clear win' : ', not a clear win (<=10% or spreads overlap)'})`,
    );
  }
  return notes;
}

/**
 * Runs the scenario. `workdir` must be on the disk being measured (not tmpfs); the scenario
 * works in a subfolder of it and removes it at the end unless `keep`.
 */
export async function run({
  sizeMiB = 1024,
  runs = 3,
  cli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url)),
  workdir,
  log = () => undefined,
  cold = true,
  keep = false,
  operations,
  variants,
}) {
  const commands = await import(pathToFileURL(join(dirname(cli), 'qemu', 'commands.js')).href);
  const dir = join(workdir, 'flags');
  await mkdir(dir, { recursive: true });
  try {
    const env = await environment(dir);
    await makeImages(dir, sizeMiB, log);
    const copyOffload = await probeCopyOffload(dir);
    const readRate = await coldReadRate(join(dir, 'full.raw'));
    const jobs = workloads(dir, commands)
      .filter((job) => !operations?.length || operations.some((o) => job.operation.startsWith(o)))
      .map((job) => ({
        ...job,
        variants: job.variants.filter(
          (v) => v.variant === BASELINE || !variants?.length || variants.includes(v.variant),
        ),
      }));
    const samples = [];
    for (let r = 0; r < runs; r++) {
      for (const job of jobs) {
        for (const { variant, flags } of orderFor(job.variants, r)) {
          await job.reset();
          await (cold ? evict : warm)(job.reads);
          const argv = withFlags(job.argv, flags);
          const qemu = await timedScript(`${shellLine(argv)} >/dev/null`, dir);
          // The executor's flush: an fsync of the output, whatever qemu-img did before.
          const flush = await timedScript(`sync ${quote(job.output)}`, dir);
          await job.verify();
          const sample = {
            run: r,
            operation: job.operation,
            variant,
            argv,
            qemuSeconds: qemu.seconds,
            flushSeconds: flush.seconds,
            bytesWritten: qemu.bytesWritten + flush.bytesWritten,
            outputBytes: await onDisk(job.output),
          };
          samples.push(sample);
          log(
            `flags: run ${r + 1}/${runs} ${job.operation} [${variant}] ${qemu.seconds.toFixed(2)} s + fsync ${flush.seconds.toFixed(2)} s`,
          );
        }
      }
    }
    const rows = [];
    for (const job of jobs) {
      for (const { variant, flags } of job.variants) {
        const of = samples.filter((s) => s.operation === job.operation && s.variant === variant);
        rows.push(rowOf(job.operation, variant, flags, of));
        // The price of durability: chainform's own convert without its fsync. (A rebase needs no
        // such row: its default cache, writeback, already flushes when qemu-img closes the image.)
        if (variant === BASELINE && job.argv[1] === 'convert')
          rows.push(rowOf(job.operation, `${BASELINE}, without fsync (not durable)`, flags, of, false));
      }
    }
    const notes = [
      `${sizeMiB} MiB images, ${runs} runs per variant, median (min-max) of qemu-img + fsync wall seconds`,
      `${env.qemuImg}; filesystem ${env.filesystem}; cold sequential read ${readRate.toFixed(0)} MiB/s`,
      cold
        ? 'reads cold: the files each run reads were evicted from the page cache first (per-file POSIX_FADV_DONTNEED, not a global drop_caches, so concurrent benchmarks keep theirs)'
        : 'reads warm: the files each run reads were read once before it',
      'every output was checked with qemu-img compare against its source (any difference aborts the scenario)',
      copyOffload,
      ...verdicts(rows),
    ];
    return { rows, notes, raw: { sizeMiB, runs, cold, environment: { ...env, coldReadMiBps: readRate }, samples } };
  } finally {
    if (!keep) await rm(dir, { recursive: true, force: true });
  }
}

/** Text table of the rows. */
export function formatTable(rows) {
  const secs = (s) => `${s.median.toFixed(2)} (${s.min.toFixed(2)}-${s.max.toFixed(2)})`;
  const lines = [
    `${'operation'.padEnd(36)} ${'variant'.padEnd(44)} ${'wall s, median (min-max)'.padEnd(25)} ${'fsync s'.padEnd(7)} ${'written MiB'.padStart(11)} ${'output MiB'.padStart(10)}`,
  ];
  for (const r of rows) {
    lines.push(
      `${r.operation.padEnd(36)} ${r.variant.padEnd(44)} ${secs(r.wallSeconds).padEnd(25)} ${r.flushSeconds.median.toFixed(2).padEnd(7)} ${(r.bytesWritten / MiB).toFixed(1).padStart(11)} ${(r.outputBytes / MiB).toFixed(1).padStart(10)}`,
    );
  }
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      'size-mib': { type: 'string', default: '1024' },
      runs: { type: 'string', default: '3' },
      warm: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      operation: { type: 'string', multiple: true },
      variant: { type: 'string', multiple: true },
    },
  });
  const workdir = await mkdtemp(join(tmpdir(), 'chainform-bench-flags-'));
  try {
    const result = await run({
      sizeMiB: Number(values['size-mib']),
      runs: Number(values.runs),
      workdir,
      cold: !values.warm,
      keep: values.keep,
      operations: values.operation,
      variants: values.variant,
      log: (line) => process.stderr.write(`${line}\n`),
    });
    console.log(formatTable(result.rows));
    for (const note of result.notes) console.log(`- ${note}`);
    await mkdir('bench-results', { recursive: true });
    await writeFile(`bench-results/flags${values.warm ? '-warm' : ''}.json`, `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    if (!values.keep) await rm(workdir, { recursive: true, force: true });
  }
}
