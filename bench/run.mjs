// Benchmark umbrella (`npm run bench`): runs the scenarios of bench/scenarios/ in temporary
// folders, prints one table per scenario and writes every raw figure to bench-results/results.json.
// Usage: npm run bench -- [--size 1G] [--runs 3] [--only a,b] [--change 5] [--planner-chains N]
//   --size     image size of the disk scenarios (M or G suffix; a bare number is MiB)
//   --runs     timed runs of every variant (median and min-max are printed)
//   --only     comma-separated scenario names (default: all)
//   --change   % of clusters changed per copy/snapshot (copies, parallelism, linearize)
//   --planner-chains  chains of the planner scenario (default: planner-scale.mjs's own)
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { checkIoAccounting, createIoAccounting } from './lib/io-accounting.mjs';
import { describeSpeed, machineSpeed } from './lib/machine-speed.mjs';
import { formatTable } from './lib/table.mjs';

/** Every scenario, in the order they run. */
const SCENARIOS = ['linearize', 'apply-overhead', 'startup', 'copies-to-overlays', 'parallelism', 'planner', 'flags'];

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '1G' },
    runs: { type: 'string', default: '3' },
    only: { type: 'string' },
    change: { type: 'string', default: '5' },
    'planner-chains': { type: 'string' },
  },
});

/** `1G`, `256M`, `256MiB`, `512` (MiB) -> MiB. */
function parseSize(text) {
  const match = /^(\d+)\s*([MG])?(i?B)?$/i.exec(text);
  if (!match) throw new Error(`--size: expected e.g. 1G or 256M, got ${text}`);
  return Number(match[1]) * (match[2]?.toUpperCase() === 'G' ? 1024 : 1);
}

const sizeMiB = parseSize(values.size);
const runs = Number(values.runs);
const changePercent = Number(values.change);
if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs: expected a whole number >= 1');
if (!(changePercent > 0 && changePercent <= 50)) throw new Error('--change: expected a percentage in (0, 50]');
const only = values.only ? values.only.split(',').map((s) => s.trim()) : SCENARIOS;
for (const n of only) if (!SCENARIOS.includes(n)) throw new Error(`--only: no scenario ${n} (${SCENARIOS.join(', ')})`);

const root = new URL('..', import.meta.url).pathname;
const cli = join(root, 'dist/cli.js');
/** The `chainform` command as npm installs it: what the timed runs start. */
const chainform = join(root, 'bin/chainform');
const base = await mkdtemp(join(tmpdir(), 'chainform-bench-'));
const io = await createIoAccounting(join(base, 'io-shim'));
const host = async () => ({ loadavg: loadavg(), at: new Date().toISOString(), speed: await machineSpeed() });
const results = {
  options: { sizeMiB, runs, changePercent, only, plannerChains: values['planner-chains'] ?? null },
  machine: {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    node: process.version,
    qemuImg: (await execa('qemu-img', ['--version'])).stdout.split('\n')[0],
    tmpdir: tmpdir(),
  },
  started: await host(),
  ioAccounting: null,
  scenarios: {},
};
let failed = false;
try {
  console.log(
    `chainform benchmarks: ${sizeMiB} MiB images, ${runs} run(s), ${changePercent}% changed; load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')} on ${cpus().length} CPUs`,
  );
  console.log(`machine speed at the start: ${describeSpeed(results.started.speed)}`);
  results.ioAccounting = await checkIoAccounting(io, join(base, 'io-check'));
  await rm(join(base, 'io-check'), { recursive: true, force: true });
  console.log(
    io.available
      ? `I/O shim checked: convert of 64 MiB logged rchar ${results.ioAccounting.convert.rchar} wchar ${results.ioAccounting.convert.wchar}; NBD socket traffic ${results.ioAccounting.socketTrafficCounted ? 'is' : 'is not'} in rchar`
      : `note: ${io.note}`,
  );
  for (const name of only) {
    const scenario = await import(`./scenarios/${name}.mjs`);
    const workdir = await mkdtemp(join(base, `${name}-`));
    const log = (message) => console.error(`  [${name}] ${message}`);
    console.log(`\n== ${scenario.title}`);
    const started = await host();
    try {
      const outcome = await scenario.run({
        sizeMiB,
        runs,
        changePercent,
        plannerChains: values['planner-chains'],
        cli,
        chainform,
        workdir,
        io,
        log,
      });
      for (const line of formatTable(outcome.rows)) console.log(line);
      for (const note of outcome.notes) console.log(`- ${note}`);
      const finished = await host();
      console.log(
        `- machine speed before the scenario: ${describeSpeed(started.speed)}; after: ${describeSpeed(finished.speed)}`,
      );
      results.scenarios[name] = { title: scenario.title, started, finished, ...outcome };
    } catch (e) {
      failed = true;
      console.log(`FAILED: ${e instanceof Error ? e.message : e}`);
      results.scenarios[name] = { title: scenario.title, started, error: String(e?.stack ?? e) };
    } finally {
      await rm(workdir, { recursive: true, force: true });
    }
  }
} finally {
  await rm(base, { recursive: true, force: true });
  results.finished = await host();
  await mkdir(join(root, 'bench-results'), { recursive: true });
  await writeFile(join(root, 'bench-results/results.json'), `${JSON.stringify(results, null, 2)}\n`);
  console.log('\nraw results: bench-results/results.json');
}
if (failed) process.exitCode = 1;
