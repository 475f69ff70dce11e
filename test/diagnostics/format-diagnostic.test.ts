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
