// Prints diagnostics with code frames from the files they point into.
import { readFileSync } from 'node:fs';
import type { Diagnostic } from '../diagnostics/diagnostic.js';
import { sortDiagnostics } from '../diagnostics/diagnostic.js';
import { formatDiagnostic } from '../diagnostics/format-diagnostic.js';
import { shownPath } from './format.js';
import type { Styler } from './style.js';

/** At most this many diagnostics are printed; a file that is not a manifest can yield hundreds. */
const MAX_SHOWN = 20;

/** Renders diagnostics sorted by location, with paths relative to `cwd`, at most MAX_SHOWN. */
export function renderDiagnostics(diagnostics: readonly Diagnostic[], style: Styler, cwd: string): string {
  const cache = new Map<string, string | undefined>();
  const sources = (file: string) => {
    if (!cache.has(file)) {
      try {
        cache.set(file, readFileSync(file, 'utf8'));
      } catch {
        cache.set(file, undefined);
      }
    }
    return cache.get(file);
  };
  const sorted = sortDiagnostics(diagnostics);
  const shown = sorted
    .slice(0, MAX_SHOWN)
    .map((d) => formatDiagnostic(d, sources, { color: style.color, displayPath: (f) => shownPath(cwd, f, f) }));
  if (sorted.length > MAX_SHOWN) shown.push(`... and ${sorted.length - MAX_SHOWN} more problems not shown.`);
  return shown.join('\n\n');
}
