// Benchmark: planning at scale. A manifest of CHAINS chains of DEPTH images each (default 1,000
// x 10 = 10,000 images), every image kept in place on the one below it, all already in sync.
// Inspection is answered from recorded `qemu-img info` JSON by a counting fake runner (the
// files are real, tiny qcow2 chains, because chainform also stats them and follows their headers).
// Measured in a child process under GNU time: wall seconds of `plan` (which loads and validates
// the manifest, inspects and plans), peak RSS, and
// qemu-img processes the inspection would have spawned (per chain). Usage:
//   npm run bench:planner -- [--chains 1000] [--depth 10] [--runs 3] [--phases] [--cluster-size 65536] [--dir D]
//   [--workload in-sync]
// --dir D sets the images up in D (unless already there, from the same flags) and keeps them.
// --workload in-sync|rewrite|copy: what the manifest asks of the images (see manifestText).
// --phases adds one run that times each stage on its own (parse, schema, ..., planning).
// BENCH_CPU_PROF=DIR writes a CPU profile of each measured run there. BENCH_PLAN_CPU_PROF=FILE
// (or BENCH_PLAN_HEAP_PROF=FILE: allocations, collected ones included) profiles the plan alone,
// in a run of the child by hand: node --expose-gc bench/planner-scale.mjs --child DIR (of --dir).
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { describeSpeed, machineSpeed } from './lib/machine-speed.mjs';
import { readIntoCache } from './lib/measure.mjs';

const { values } = parseArgs({
  options: {
    chains: { type: 'string', default: '1000' },
    depth: { type: 'string', default: '10' },
    runs: { type: 'string', default: '3' },
    child: { type: 'string' },
    phases: { type: 'boolean', default: false },
    'cluster-size': { type: 'string', default: '65536' },
    dir: { type: 'string' },
    workload: { type: 'string', default: 'in-sync' },
  },
});
const chains = Number(values.chains);
const depth = Number(values.depth);
// The images' cluster size: qemu-img's default, 64 KiB, makes files of 192 KiB whose refcount
// table and block are 64 KiB each, which the truncation check reads; 512 makes 3 KiB files.
const clusterSize = Number(values['cluster-size']);
/** About what a new qcow2 image of 1 MiB takes on disk (header, refcount table and block, L1). */
const fileBytes = 3 * clusterSize + 4096;

/** `qemu-img info --output=json` of image `d` of a chain, as qemu-img 7.2 prints it. */
function infoOf(path, d) {
  return [
    {
      filename: path,
      format: 'qcow2',
      'virtual-size': 1048576,
      'actual-size': fileBytes,
      'cluster-size': clusterSize,
      'dirty-flag': false,
      ...(d > 0
        ? {
            'backing-filename': `img${d - 1}.qcow2`,
            'full-backing-filename': path.replace(/img\d+\.qcow2$/, `img${d - 1}.qcow2`),
            'backing-filename-format': 'qcow2',
          }
        : {}),
      'format-specific': {
        type: 'qcow2',
        data: { compat: '1.1', 'lazy-refcounts': false, 'refcount-bits': 16, corrupt: false, 'extended-l2': false },
      },
    },
  ];
}

/** `qemu-img info --backing-chain --output=json` of `path`, image `d` of its chain. */
function chainInfoOf(path, d) {
  const layers = [];
  for (let below = d; below >= 0; below--)
    layers.push(...infoOf(path.replace(/img\d+\.qcow2$/, `img${below}.qcow2`), below));
  return JSON.stringify(layers);
}

/**
 * The measured part: validate + plan with the recorded answers. Prints one JSON line. The
 * answers are recorded (made) before the clock starts: a real recording is text read back.
 */
async function child(dir) {
  const api = await import('../dist/api.js');
  const recorded = new Map();
  for (let c = 0; c < chains; c++) {
    for (let d = 0; d < depth; d++) {
      const path = join(dir, `chain${c}`, `img${d}.qcow2`);
      recorded.set(path, { chain: chainInfoOf(path, d), layer: JSON.stringify(infoOf(path, d)) });
    }
  }
  let calls = 0;
  const runner = {
    async run(argv) {
      calls++;
      const answer = recorded.get(argv.at(-1));
      if (answer && argv[1] === 'info' && argv.includes('--backing-chain'))
        return { exitCode: 0, stdout: answer.chain, stderr: '' };
      if (answer && argv[1] === 'info' && argv.includes('-U')) return { exitCode: 0, stdout: answer.layer, stderr: '' };
      return { exitCode: 0, stdout: '[]', stderr: '' };
    },
  };
  if (values.phases) {
    console.log(JSON.stringify({ phases: await phases(join(dir, 'm.yaml'), runner), calls }));
    return;
  }
  // The recorded answers were made above: their garbage is the bench's, not the plan's (a real
  // `chainform plan` starts with a heap of its loaded code only). The child runs with --expose-gc.
  globalThis.gc?.();
  let session;
  if (process.env.BENCH_PLAN_HEAP_PROF) {
    const { Session } = await import('node:inspector/promises');
    session = new Session();
    session.connect();
    await session.post('HeapProfiler.startSampling', {
      samplingInterval: 4096,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  }
  if (process.env.BENCH_PLAN_CPU_PROF) {
    const { Session } = await import('node:inspector/promises');
    session = new Session();
    session.connect();
    await session.post('Profiler.setSamplingInterval', { interval: 100 });
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
  }
  const started = performance.now();
  // What `chainform plan` does: load and validate the manifest, inspect, plan.
  const planned = await api.plan(join(dir, 'm.yaml'), { runner });
  if (session) {
    const { writeFileSync } = await import('node:fs');
    const cpu = process.env.BENCH_PLAN_CPU_PROF;
    const { profile } = await session.post(cpu ? 'Profiler.stop' : 'HeapProfiler.stopSampling');
    writeFileSync(cpu ?? process.env.BENCH_PLAN_HEAP_PROF, JSON.stringify(profile));
  }
  const ms = performance.now() - started;
  if (!planned.ok) throw new Error(JSON.stringify(planned.diagnostics.slice(0, 3)));
  console.log(JSON.stringify({ ms, steps: planned.plan.steps.length, images: planned.plan.images.length, calls }));
}

/**
 * Milliseconds per stage of api.plan, its stages called one by one in its order (parse, schema,
 * resolve, manifest checks without the parent-folder one (with the file reads), inspection,
 * planning, then the wait for the worker's truncation checks; qemu-img measure has nothing to
 * measure here).
 */
async function phases(manifest, runner) {
  const { readFile: read } = await import('node:fs/promises');
  const { parseManifestText } = await import('../dist/manifest/load-manifest.js');
  const { validateSchema } = await import('../dist/manifest/validate-schema.js');
  const { resolveManifest } = await import('../dist/manifest/resolve-manifest.js');
  const { checkManifest } = await import('../dist/manifest/check-manifest.js');
  const { readLedger } = await import('../dist/state/ledger.js');
  const { inspectLayout } = await import('../dist/inspect/inspect-layout.js');
  const { planLayout } = await import('../dist/planner/plan-layout.js');
  const { readImageFile } = await import('../dist/inspect/image-file.js');
  const { deferredTruncationChecks } = await import('../dist/inspect/truncation-checks.js');
  const { memoize } = await import('../dist/util/memo.js');
  const times = {};
  let last = performance.now();
  const lap = (name) => {
    const now = performance.now();
    times[name] = Math.round(now - last);
    last = now;
  };
  const parsed = parseManifestText(manifest, await read(manifest, 'utf8'));
  lap('yaml');
  const validated = validateSchema(parsed.source);
  lap('schema');
  const resolved = resolveManifest(parsed.source, validated.manifest);
  lap('resolve');
  // As api.plan does: the checks read each file's header once, for inspection too, and hand the
  // truncation checks of all files but the first 1,000 to a worker thread, awaited at the end.
  const deferred = deferredTruncationChecks();
  const fileOf = memoize((path) => readImageFile(path, deferred));
  checkManifest(resolved, { fileExists: (path) => fileOf(path).fingerprint !== null });
  lap('checks');
  const inspected = await inspectLayout(resolved, await readLedger(resolved.dir), runner, fileOf);
  lap('inspection');
  planLayout(resolved, inspected.layout);
  lap('planning');
  if ((await deferred.settle()) !== 'whole') throw new Error('a file was cut short');
  lap('waiting for the worker');
  return times;
}

/**
 * The manifest of the measured plan, by --workload: every image kept as it is ('in-sync', the
 * target's case), every image rewritten in place with another cluster size ('rewrite'), or every
 * chain copied into out/ as a chain of overlays ('copy'). Each but the first plans 10,000 steps.
 */
function manifestText() {
  const lines = ['version: 1', 'images:'];
  for (let c = 0; c < chains; c++) {
    for (let d = 0; d < depth; d++) {
      const backing = d > 0 ? `, backing: c${c}_${d - 1}` : '';
      const at = `chain${c}/img${d}.qcow2`;
      if (values.workload === 'copy')
        lines.push(`  c${c}_${d}: { path: out/${at}, from: { path: ${at}, format: qcow2 }${backing} }`);
      else if (values.workload === 'rewrite')
        lines.push(`  c${c}_${d}: { path: ${at}${backing}, options: { cluster_size: ${2 * clusterSize} } }`);
      else lines.push(`  c${c}_${d}: { path: ${at}${backing} }`);
    }
  }
  return `${lines.join('\n')}\n`;
}

async function setup(kept) {
  if (kept && existsSync(join(kept, 'template'))) {
    await writeFile(join(kept, 'm.yaml'), manifestText());
    return kept;
  }
  const dir = kept ?? (await mkdtemp(join(tmpdir(), 'chainform-bench-planner-')));
  await mkdir(dir, { recursive: true });
  // One real chain of tiny images; backing names are relative, so every chain is a copy of it.
  const template = join(dir, 'template');
  await mkdir(template);
  const layers = [];
  for (let d = 0; d < depth; d++) {
    const backing = d > 0 ? ['-b', `img${d - 1}.qcow2`, '-F', 'qcow2'] : [];
    const file = join(template, `img${d}.qcow2`);
    const options = ['-o', `cluster_size=${clusterSize}`];
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', ...options, ...backing, file, '1M']);
    layers.push(await readFile(file));
  }
  for (let c = 0; c < chains; c++) {
    await mkdir(join(dir, `chain${c}`));
    for (let d = 0; d < depth; d++) await writeFile(join(dir, `chain${c}`, `img${d}.qcow2`), layers[d]);
  }
  await writeFile(join(dir, 'm.yaml'), manifestText());
  return dir;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

if (values.child) {
  await child(values.child);
} else {
  const dir = await setup(values.dir);
  try {
    const speedBefore = await machineSpeed();
    const results = [];
    for (let run = 0; run < Number(values.runs); run++) {
      // Every run starts with the files in the page cache: this machine's kernel evicts idle
      // page cache within seconds (DAMON reclaim), and a cold read of 10,000 headers alone
      // takes up to a second, which would measure the disk instead of chainform.
      await readIntoCache(dir);
      const script = new URL(import.meta.url).pathname;
      const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
      const r = await execa(
        '/usr/bin/time',
        [
          '-f',
          '%e %M',
          process.execPath,
          '--expose-gc',
          ...profile,
          script,
          '--child',
          dir,
          '--chains',
          String(chains),
          '--depth',
          String(depth),
          '--cluster-size',
          String(clusterSize),
        ],
        {
          reject: false,
        },
      );
      if (r.exitCode !== 0) throw new Error(r.stderr);
      const measured = JSON.parse(r.stdout.trim().split('\n').at(-1));
      const [, maxKiB] = r.stderr.trim().split('\n').at(-1).split(' ').map(Number);
      results.push({ ...measured, peakMiB: maxKiB / 1024 });
    }
    const ms = results.map((r) => r.ms);
    const peak = results.map((r) => r.peakMiB);
    const { images, steps, calls } = results[0];
    const summary = {
      chains,
      depth,
      clusterSize,
      workload: values.workload,
      images,
      steps,
      runs: results.length,
      validatePlanMs: { median: median(ms), min: Math.min(...ms), max: Math.max(...ms) },
      peakRssMiB: { median: median(peak), min: Math.min(...peak), max: Math.max(...peak) },
      qemuImgCalls: calls,
      qemuImgCallsPerChain: calls / chains,
    };
    console.log(
      `planner: ${images} images in ${chains} chains (${clusterSize}-byte clusters), workload ${values.workload}, ${steps} steps planned`,
    );
    console.log(
      `  validate + plan: median ${summary.validatePlanMs.median.toFixed(0)} ms (${Math.min(...ms).toFixed(0)}-${Math.max(...ms).toFixed(0)})`,
    );
    console.log(`  peak RSS: median ${summary.peakRssMiB.median.toFixed(0)} MiB`);
    console.log(`  qemu-img processes inspection would spawn: ${calls} (${summary.qemuImgCallsPerChain} per chain)`);
    summary.machineSpeed = { before: speedBefore, after: await machineSpeed() };
    for (const [when, speed] of Object.entries(summary.machineSpeed))
      console.log(`  machine speed ${when} the runs: ${describeSpeed(speed)}`);
    if (values.phases) {
      const r = await execa(process.execPath, [
        '--expose-gc',
        new URL(import.meta.url).pathname,
        '--child',
        dir,
        '--phases',
        '--chains',
        String(chains),
        '--depth',
        String(depth),
        '--cluster-size',
        String(clusterSize),
      ]);
      const { phases: times } = JSON.parse(r.stdout.trim().split('\n').at(-1));
      summary.phasesMs = times;
      console.log(
        `  stages, one more run: ${Object.entries(times)
          .map(([k, v]) => `${k} ${v} ms`)
          .join(', ')}`,
      );
    }
    await writeFile('bench-planner-results.json', `${JSON.stringify({ summary, results }, null, 2)}\n`);
    console.log('  raw results: bench-planner-results.json');
  } finally {
    if (!values.dir) await rm(dir, { recursive: true, force: true });
  }
}
