// chainform's own version, from package.json (for --version and saved plans).
import { readFileSync } from 'node:fs';
import { packageFile } from './package-files.js';

/** The package version, e.g. "0.1.0". */
export const VERSION: string = JSON.parse(readFileSync(packageFile('package.json'), 'utf8')).version;
