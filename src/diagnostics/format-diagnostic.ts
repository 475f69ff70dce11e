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

/** The widest line a code frame shows; longer lines are cut to a window around the span. */
const FRAME_WIDTH = 120;
/** Control characters other than tab: a binary file given as a manifest must not reach the terminal. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control bytes are what is kept out.
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f]/g;

/** Lines `first`..`last` (1-based) of `text`, found without splitting all of it. */
function linesOf(text: string, first: number, last: number): string[] {
  const lines: string[] = [];
  let start = 0;
  for (let line = 1; line <= last && start <= text.length; line++) {
    const newline = text.indexOf('\n', start);
    const end = newline < 0 ? text.length : newline;
    if (line >= first) lines.push(text.slice(start, end));
    if (newline < 0) break;
    start = newline + 1;
  }
  return lines;
}

/** `line` cut to FRAME_WIDTH characters around column `focus`, and how far columns moved left. */
function clip(line: string, focus: number): { text: string; shift: number } {
  const clean = line.replace(CONTROL, '\ufffd');
  if (clean.length <= FRAME_WIDTH) return { text: clean, shift: 0 };
  const from = Math.max(0, Math.min(focus - 1 - FRAME_WIDTH / 2, clean.length - FRAME_WIDTH));
  const cut = clean.slice(from, from + FRAME_WIDTH);
  const text = `${from > 0 ? '…' : ''}${cut}${from + FRAME_WIDTH < clean.length ? '…' : ''}`;
  return { text, shift: from > 0 ? from - 1 : 0 };
}

function frame(location: SourceLocation, sources: SourceLookup, color: boolean): string | undefined {
  const text = sources(location.file);
  if (text === undefined) return undefined;
  const endLine = location.endLine !== undefined && location.endColumn !== undefined ? location.endLine : undefined;
  // Only the lines the frame shows, each cut to a window (a binary file has lines of megabytes);
  // empty lines before them keep the line numbers right.
  const first = Math.max(1, location.line - 2);
  const last = (endLine ?? location.line) + 1;
  const shown = linesOf(text, first, last);
  const shifts: number[] = [];
  const excerpt = shown.map((line, i) => {
    const number = first + i;
    const focus = number === location.line ? location.column : number === endLine ? (location.endColumn ?? 1) : 1;
    const clipped = clip(line, focus);
    shifts.push(clipped.shift);
    return clipped.text;
  });
  const shiftOf = (line: number) => shifts[line - first] ?? 0;
  const widthOf = (line: number) => excerpt[line - first]?.length ?? 0;
  const start = { line: location.line, column: location.column - shiftOf(location.line) };
  const end =
    endLine !== undefined
      ? {
          line: endLine,
          column: Math.min((location.endColumn ?? 1) - shiftOf(endLine), widthOf(endLine) + 1),
        }
      : undefined;
  return codeFrameColumns(`${'\n'.repeat(first - 1)}${excerpt.join('\n')}`, end ? { start, end } : { start }, {
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
