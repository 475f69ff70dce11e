// Bundles the `chainform` command (src/cli/main.ts and all it imports) into one CommonJS file,
// dist/cli-bundle.cjs, which the executable dist/cli.js (src/cli.ts) loads; then writes the V8
// code cache beside it by running one command (`validate` of a bundled plan) with
// CHAINFORM_BUILD_CODE_CACHE=1. One file instead of some 400 modules, and the cache, take about
// a fifth of a second off every command. The library (dist/index.js) stays tsc's output.
import { chmod, rm, stat } from 'node:fs/promises';
import { build } from 'esbuild';
import { execa } from 'execa';

const bundle = 'dist/cli-bundle.cjs';

await build({
  entryPoints: ['src/cli/main.ts'],
  outfile: bundle,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // import.meta is ES-module only: in the bundle it is the bundle's own URL.
  define: { 'import.meta.url': 'chainformBundleUrl' },
  // "use strict" first: after the banner, esbuild's own directive would no longer count, and
  // the bundled code (ES modules, strict) would run in sloppy mode.
  banner: { js: "'use strict';\nconst chainformBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
});

// tsc writes the executable without its x bit.
await chmod('dist/cli.js', 0o755);

// A cache made for an older bundle would be rejected anyway; start from none.
await rm(`${bundle}.v8-cache`, { force: true });
const training = await execa(process.execPath, ['dist/cli.js', 'validate', 'plans/linearize-snapshots.yaml'], {
  env: { CHAINFORM_BUILD_CODE_CACHE: '1' },
  reject: false,
});
// The plan's files do not exist here, so validate reports them (exit 1): that is code to cache
// too. Anything else, an internal error, or no cache written means the bundle is broken.
const cacheWritten = await stat(`${bundle}.v8-cache`).then(
  (s) => s.size > 0,
  () => false,
);
if (![0, 1].includes(training.exitCode) || /internal error/.test(training.stderr) || !cacheWritten) {
  throw new Error(`writing the code cache failed (exit ${training.exitCode}): ${training.stderr}`);
}
