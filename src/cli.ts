#!/usr/bin/env node
// The `chainform` executable. It loads the bundled command (dist/cli-bundle.cjs, made from
// src/cli/main.ts by scripts/bundle-cli.mjs) together with the V8 code cache written beside it
// at build time, so V8 neither parses the 1.2 MB bundle nor compiles the functions a command
// runs: that takes about 50 ms off every command. Without the cache, or with one another Node
// version made (V8 then rejects it), the bundle is compiled as usual.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants, Script } from 'node:vm';

const bundle = fileURLToPath(new URL('./cli-bundle.cjs', import.meta.url));
const codeCache = `${bundle}.v8-cache`;

let cachedData: Buffer | undefined;
try {
  cachedData = readFileSync(codeCache);
} catch {
  // No cache (not built yet, or removed): compile normally.
}
// The bundle is CommonJS: run it as Node runs a CommonJS module, in a function of its globals.
const script = new Script(
  `(function (exports, require, module, __filename, __dirname) {${readFileSync(bundle, 'utf8')}\n})`,
  { filename: bundle, cachedData, importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER },
);
const commonJsModule = { exports: {} };
script.runInThisContext()(commonJsModule.exports, createRequire(bundle), commonJsModule, bundle, dirname(bundle));

// The build (scripts/bundle-cli.mjs) runs one command with this set and keeps what V8 compiled.
if (process.env.CHAINFORM_BUILD_CODE_CACHE === '1') {
  process.once('exit', () => writeFileSync(codeCache, script.createCachedData()));
}
