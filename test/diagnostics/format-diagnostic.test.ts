import { describe, expect, it } from 'vitest';
import { formatDiagnostic } from '../../src/diagnostics/format-diagnostic.js';
import { MANIFEST_FILE, semanticDiagnostics } from '../helpers/manifest.js';

describe('diagnostic output', () => {
  it('prints file:line:column, the message, a code frame marking the span, related places and a hint', () => {
    const text =
      'version: 1\nimages:\n  a:\n    path: a.qcow2\n    backing: b\n  b:\n    path: b.qcow2\n    backing: a\n';
    const [cycle] = semanticDiagnostics(text);
    const out = formatDiagnostic(cycle!, () => text, {
      color: false,
      displayPath: () => 'manifest.yaml',
    });
    expect(out).toBe(
      [
        'manifest.yaml:5:14: error: backing cycle: a -> b -> a [backing-cycle]',
        '  3 |   a:',
        '  4 |     path: a.qcow2',
        '> 5 |     backing: b',
        '    |              ^',
        '  6 |   b:',
        '  manifest.yaml:5:14: a is backed by b',
        '  manifest.yaml:8:14: b is backed by a',
        '  hint: a backing chain must end in a standalone image; remove one of these links',
      ].join('\n'),
    );
    expect(cycle!.location?.file).toBe(MANIFEST_FILE);
  });
});

describe('code frames of files that are not YAML text', () => {
  it('cuts a megabyte-long line to a window around the column and keeps control bytes off the terminal', () => {
    const line = `${'\u0001\u001b[2J'.repeat(300_000)}X${'y'.repeat(1_000_000)}`;
    const column = line.indexOf('X') + 1;
    const text = `first: 1\n${line}\nlast: 2\n`;
    const out = formatDiagnostic(
      {
        code: 'manifest-not-yaml',
        severity: 'error',
        message: 'not YAML',
        location: { file: '/m.yaml', line: 2, column, endLine: 2, endColumn: column + 1 },
      },
      () => text,
      { color: false },
    );
    expect(out.length).toBeLessThan(1000);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control bytes are what is kept out.
    expect(out).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f]/);
    const lines = out.split('\n');
    const marked = lines.findIndex((l) => l.startsWith('> 2 |'));
    expect(lines[0]).toBe(`/m.yaml:2:${column}: error: not YAML [manifest-not-yaml]`);
    expect(lines[marked - 1]).toBe('  1 | first: 1');
    expect(lines[marked + 2]).toBe('  3 | last: 2');
    // The caret stands under the X.
    const caret = lines[marked + 1]!.indexOf('^');
    expect(lines[marked]![caret]).toBe('X');
  });
});
