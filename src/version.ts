// chainform's own version, from package.json (for --version and saved plans).
import { readFileSync } from 'node:fs';

/** The package version, e.g. "0.1.0". */
export const VERSION: string = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version;
