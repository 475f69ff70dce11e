// Bundles the `chainform` command (src/cli/main.ts and all it imports) into one CommonJS file,
// dist/cli-bundle.cjs, which the executable (src/cli.ts, built as dist/cli.cjs for bin/chainform
// and by tsc as dist/cli.js) loads; then writes the V8 code cache beside it by running one
// command (an apply of a tiny job, or without qemu-img a `validate` of a bundled plan) with
// CHAINFORM_BUILD_CODE_CACHE=1. One file instead of some 400 modules, and the cache, take about
// a fifth of a second off every command. The library (dist/index.js) stays tsc's output.
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import { execa } from 'execa';

const bundle = 'dist/cli-bundle.cjs';
const cli = resolve('dist/cli.cjs');
/** Tells the executable to write the code cache of what it compiled when it exits. */
const TRAINING = { CHAINFORM_BUILD_CODE_CACHE: '1' };

/**
 * `entry` as one CommonJS file, `outfile`; with `bundle`, together with all it imports. ES module
 * code reads import.meta.url, which CommonJS lacks: there it is the output file's own URL.
 */
function commonJs(entry, outfile, bundle) {
  return build({
    entryPoints: [entry],
    outfile,
    bundle,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    define: { 'import.meta.url': 'chainformOwnUrl' },
    // "use strict" first: after the banner, esbuild's own directive would no longer count, and
    // the code (ES modules, strict) would run in sloppy mode.
    banner: { js: "'use strict';\nconst chainformOwnUrl = require('node:url').pathToFileURL(__filename).href;" },
    logLevel: 'warning',
  });
}

await commonJs('src/cli/main.ts', bundle, true);
// The executable again as CommonJS, dist/cli.cjs, which bin/chainform starts: an ES module
// entry makes Node set up its ES module loader first, about 5 ms of every command.
await commonJs('src/cli.ts', 'dist/cli.cjs', false);

// tsc writes the executables without their x bit.
await chmod('dist/cli.js', 0o755);
await chmod('dist/cli.cjs', 0o755);

// A cache made for an older bundle would be rejected anyway; start from none.
await rm(`${bundle}.v8-cache`, { force: true });
const training = (await trainingApply()) ?? (await trainingValidate());
// Anything but exit 0 or 1, an internal error, or no cache written means the bundle is broken.
const cacheWritten = await stat(`${bundle}.v8-cache`).then(
  (s) => s.size > 0,
  () => false,
);
if (![0, 1].includes(training.exitCode) || /internal error/.test(training.stderr) || !cacheWritten) {
  throw new Error(`writing the code cache failed (exit ${training.exitCode}): ${training.stderr}`);
}

/**
 * The command the cache is made from, when qemu-img is here: an apply of a tiny job (one
 * `convert -B` of an empty compat 0.10 overlay), which runs what plan and apply compile (loading,
 * inspection, planning, qemu-img measure, the plan's text, progress, journal and ledger). A cache
 * made by validate alone left apply compiling those: 9 ms more for apply and plan.
 */
async function trainingApply() {
  const dir = await mkdtemp(join(tmpdir(), 'chainform-build-'));
  try {
    const made = await execa('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '4M'], { cwd: dir }).then(
      () =>
        execa(
          'qemu-img',
          ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'base.qcow2', '-F', 'qcow2', 'disk.qcow2'],
          {
            cwd: dir,
          },
        ),
      () => undefined,
    );
    if (!made) return undefined;
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  disk: { path: out/disk.qcow2, from: { path: disk.qcow2, format: qcow2 }, backing: { path: base.qcow2, format: qcow2 }, options: { compat: "1.1" } }\n',
    );
    const run = await execa(process.execPath, [cli, 'apply', '--yes', 'm.yaml'], {
      cwd: dir,
      env: TRAINING,
      reject: false,
    });
    if (run.exitCode !== 0) throw new Error(`the training apply failed (exit ${run.exitCode}): ${run.stderr}`);
    return run;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Without qemu-img: validate of a bundled plan, whose files do not exist here (exit 1, also code to cache). */
function trainingValidate() {
  return execa(process.execPath, [cli, 'validate', 'plans/linearize-snapshots.yaml'], { env: TRAINING, reject: false });
}
