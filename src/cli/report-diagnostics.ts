// Prints diagnostics with code frames from the files they point into.
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import type { Diagnostic } from '../diagnostics/diagnostic.js';
import { sortDiagnostics } from '../diagnostics/diagnostic.js';
import { formatDiagnostic } from '../diagnostics/format-diagnostic.js';
import type { Styler } from './style.js';

/** Renders all diagnostics, sorted by location, with paths relative to `cwd`. */
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
  return sortDiagnostics(diagnostics)
    .map((d) =>
      formatDiagnostic(d, sources, {
        color: style.color,
        displayPath: (f) => relative(cwd, f) || f,
      }),
    )
    .join('\n\n');
}
