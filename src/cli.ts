#!/usr/bin/env node
// The `chainform` executable. It loads the bundled command (dist/cli-bundle.cjs, made from
// src/cli/main.ts by scripts/bundle-cli.mjs) together with the V8 code cache written beside it
// at build time, so V8 neither parses the 1.2 MB bundle nor compiles the functions a command
// runs: about a third of the time of a small `plan`. The cache file starts with the SHA-256 of
// the bundle it was made from and of its own data. V8 itself checks little more than the
// source's length (a cache for other code of the same length would run that other code) and
// crashes on a damaged cache, so a cache that fails either check is ignored and the bundle is
// compiled as usual; so is a cache another Node version made (V8 rejects it).
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants, Script } from 'node:vm';

const bundle = fileURLToPath(new URL('./cli-bundle.cjs', import.meta.url));
const codeCache = `${bundle}.v8-cache`;
const DIGEST_BYTES = 32;

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest();
const bundleBytes = readFileSync(bundle);
const bundleDigest = sha256(bundleBytes);

/** The V8 data of the cache file, when it was made from this bundle and is intact. */
function cachedDataFor(): Buffer | undefined {
  let file: Buffer;
  try {
    file = readFileSync(codeCache);
  } catch {
    return undefined; // not built yet, or removed
  }
  const data = file.subarray(2 * DIGEST_BYTES);
  const madeFromThisBundle = file.subarray(0, DIGEST_BYTES).equals(bundleDigest);
  const intact = file.subarray(DIGEST_BYTES, 2 * DIGEST_BYTES).equals(sha256(data));
  return madeFromThisBundle && intact && data.length > 0 ? data : undefined;
}

// The bundle is CommonJS: run it as Node runs a CommonJS module, in a function of its globals.
const script = new Script(
  `(function (exports, require, module, __filename, __dirname) {${bundleBytes.toString('utf8')}\n})`,
  { filename: bundle, cachedData: cachedDataFor(), importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER },
);
const commonJsModule = { exports: {} };
script.runInThisContext()(commonJsModule.exports, createRequire(bundle), commonJsModule, bundle, dirname(bundle));

// The build (scripts/bundle-cli.mjs) runs one command with this set and keeps what V8 compiled.
if (process.env.CHAINFORM_BUILD_CODE_CACHE === '1') {
  process.once('exit', () => {
    const data = script.createCachedData();
    writeFileSync(codeCache, Buffer.concat([bundleDigest, sha256(data), data]));
  });
}
