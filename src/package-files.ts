// Files chainform ships beside its code (package.json, schemas/), found from the package root.
// This module always runs one folder below the root: as src/package-files.ts under the tests,
// as dist/package-files.js in the library, and inlined into the dist/cli-bundle.cjs bundle.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package's root folder (the one holding package.json). */
const packageRoot = fileURLToPath(new URL('..', import.meta.url));

/** Absolute path of a file shipped with the package, e.g. `schemas/manifest.schema.json`. */
export function packageFile(relativePath: string): string {
  return join(packageRoot, relativePath);
}
