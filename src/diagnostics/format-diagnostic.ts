// Renders diagnostics for people: `file:line:column: message`, then a code frame marking the span.
import { codeFrameColumns } from '@babel/code-frame';
import type { Diagnostic, SourceLocation } from './diagnostic.js';

/** Reads the text of a file a diagnostic points into (cached by the caller). */
export type SourceLookup = (file: string) => string | undefined;

/** Options for {@link formatDiagnostic}. */
export interface FormatOptions {
  color: boolean;
  /** Shown instead of absolute file names, e.g. paths relative to the working directory. */
  displayPath?: (file: string) => string;
}

function formatLocation(location: SourceLocation, displayPath: (file: string) => string): string {
  return `${displayPath(location.file)}:${location.line}:${location.column}`;
}

function frame(location: SourceLocation, sources: SourceLookup, color: boolean): string | undefined {
  const text = sources(location.file);
  if (text === undefined) return undefined;
  const start = { line: location.line, column: location.column };
  const end =
    location.endLine !== undefined && location.endColumn !== undefined
      ? { line: location.endLine, column: location.endColumn }
      : undefined;
  return codeFrameColumns(text, end ? { start, end } : { start }, {
    highlightCode: color,
    forceColor: color,
    linesAbove: 2,
    linesBelow: 1,
  });
}

/** One diagnostic as the multi-line text a person reads. */
export function formatDiagnostic(diagnostic: Diagnostic, sources: SourceLookup, options: FormatOptions): string {
  const displayPath = options.displayPath ?? ((file: string) => file);
  const where = diagnostic.location ? `${formatLocation(diagnostic.location, displayPath)}: ` : '';
  const label = diagnostic.severity === 'error' ? 'error' : 'warning';
  const lines = [`${where}${label}: ${diagnostic.message} [${diagnostic.code}]`];
  if (diagnostic.location) {
    const codeFrame = frame(diagnostic.location, sources, options.color);
    if (codeFrame) lines.push(codeFrame);
  }
  for (const related of diagnostic.related ?? []) {
    const at = related.location ? `${formatLocation(related.location, displayPath)}: ` : '';
    lines.push(`  ${at}${related.message}`);
  }
  if (diagnostic.hint) lines.push(`  hint: ${diagnostic.hint}`);
  return lines.join('\n');
}
