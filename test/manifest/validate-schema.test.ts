import { describe, expect, it } from 'vitest';
import { brief, schemaDiagnostics } from '../helpers/manifest.js';

describe('schema validation', () => {
  it('accepts the manifest of the contract', () => {
    const text = `version: 1
defaults:
  format: qcow2
  options: { cluster_size: 65536 }
images:
  base:
    path: out/base.qcow2
    from: { path: in/base.raw, format: raw }
  disk:
    path: out/disk.qcow2
    format: qcow2
    from: { path: in/disk.qcow2, format: qcow2, snapshot: sn0 }
    backing: base
    options: { cluster_size: 65536, compat: "1.1", lazy_refcounts: true }
  fixed:
    path: out/fixed.qcow2
    backing: { path: /srv/base.qcow2, format: qcow2 }
  flat:
    path: out/flat.raw
    format: raw
    backing: null
`;
    expect(schemaDiagnostics(text)).toEqual([]);
  });

  it('points an unknown key at the key itself, listing the allowed ones', () => {
    const text = 'version: 1\nimages:\n  a:\n    path: x.qcow2\n    bakcing: b\n';
    const [d, ...rest] = schemaDiagnostics(text);
    expect(rest).toEqual([]);
    expect(brief(d!)).toBe('unknown-key@5:5');
    expect(d!.message).toBe('unknown key "bakcing" in images.a');
    expect(d!.hint).toContain('backing');
  });

  it('reports a wrong type at the value', () => {
    const d = schemaDiagnostics('version: 1\nimages:\n  a:\n    path: 42\n');
    expect(d.map(brief)).toEqual(['wrong-type@4:11']);
    expect(d[0]!.message).toBe('images.a.path must be string, not number 42');
  });

  it('says to quote a number or boolean given for text, as it was typed', () => {
    const d = schemaDiagnostics(
      'version: 1\nimages:\n  a:\n    path: x.qcow2\n    from: { path: v.qcow2, format: qcow2, snapshot: 1.10 }\n  b:\n    path: true\n',
    );
    expect(d.map(brief)).toEqual(['wrong-type@5:53', 'wrong-type@7:11']);
    expect(d.map((x) => x.hint)).toEqual([
      'to give it as text, put it in quotes: "1.10"',
      'to give it as text, put it in quotes: "true"',
    ]);
    // A mapping where text belongs is another slip: no quoting hint.
    expect(schemaDiagnostics('version: 1\nimages:\n  a:\n    path: { x: 1 }\n')[0]!.hint).toBeUndefined();
  });

  it('reports a missing required key at the mapping that lacks it', () => {
    const d = schemaDiagnostics('version: 1\nimages:\n  a:\n    format: raw\n');
    expect(d.map(brief)).toEqual(['missing-key@3:3']);
    expect(d[0]!.message).toContain('"path"');
  });

  it('lists the allowed values of an enum', () => {
    const d = schemaDiagnostics('version: 1\nimages:\n  a:\n    path: a\n    format: qcow3\n');
    expect(d.map(brief)).toEqual(['invalid-value@5:13']);
    expect(d[0]!.message).toContain('"qcow2"');
  });

  it('rejects a bad image id at the key', () => {
    const d = schemaDiagnostics('version: 1\nimages:\n  -bad:\n    path: a\n');
    expect(d.map(brief)).toEqual(['invalid-image-id@3:3']);
  });

  it('explains what backing accepts when it is neither id, mapping nor null', () => {
    const d = schemaDiagnostics('version: 1\nimages:\n  a:\n    path: a\n    backing: [x]\n');
    expect(d.map(brief)).toEqual(['invalid-value@5:14']);
    expect(d[0]!.message).toBe(
      'images.a.backing is a list. What the image is backed by: the id of another image of this manifest, an existing image the manifest does not manage, or null (omitted) for a standalone image.',
    );
  });

  it('reports the missing format of an external backing inside the mapping', () => {
    const d = schemaDiagnostics('version: 1\nimages:\n  a:\n    path: a\n    backing: { path: b }\n');
    expect(d.map(brief)).toEqual(['missing-key@5:5']);
    expect(d[0]!.message).toContain('"format"');
  });

  it('requires the format of a source: chainform never lets qemu-img guess one', () => {
    const d = schemaDiagnostics('version: 1\nimages:\n  a:\n    path: a\n    from: { path: b }\n');
    expect(d.map(brief)).toEqual(['missing-key@5:5']);
    expect(d[0]!.message).toContain('"format"');
  });

  it('requires version 1', () => {
    const d = schemaDiagnostics('version: 2\nimages:\n  a: { path: a }\n');
    expect(d.map(brief)).toEqual(['invalid-value@1:10']);
  });

  it('reports YAML syntax errors with their position', () => {
    const d = schemaDiagnostics('version: 1\nimages:\n  a:\n    path: "unterminated\n');
    expect(d[0]!.code).toBe('yaml-syntax');
    expect(d[0]!.message).toContain('quote');
    // yaml notices the missing quote at the end of the input.
    expect(d[0]!.location?.line).toBe(5);
  });

  it('counts lines from the text itself, also after a broken token that spans a line break', () => {
    // yaml's own line counter missed the break inside "1\n  c" and put later errors on line 2.
    const text = '  a: 1\nb: 1\n  c: {d: 1}\n';
    const lines = text.split('\n');
    const d = schemaDiagnostics(text);
    expect(d.map(brief)).toContain('yaml-syntax@3:6');
    // Every location lies within its line (the shifted ones pointed past the end of line 2).
    for (const x of d) expect(x.location!.column, x.message).toBeLessThanOrEqual(lines[x.location!.line - 1]!.length);
  });

  it('reports nesting too deep for the parser at a location, not as a crash', () => {
    const d = schemaDiagnostics(`a:\n  ${'- '.repeat(3000)}x\nb: 1\n`);
    expect(d.map((x) => x.code)).toEqual(['yaml-too-deep']);
    expect(d[0]!.location).toMatchObject({ line: 1, column: 1 });
  });

  it('reports more schema errors than anyone reads as one counted line, quickly', () => {
    const keys = Array.from({ length: 5000 }, (_, i) => `k${i}: ${i}`).join('\n');
    const d = schemaDiagnostics(`version: 1\nimages: { a: { path: a } }\n${keys}\n`);
    expect(d).toHaveLength(51);
    expect(d.at(-1)).toMatchObject({ code: 'more-schema-errors', message: '4950 more schema errors are not shown' });
  });

  it('rejects duplicate keys', () => {
    const d = schemaDiagnostics('version: 1\nimages:\n  a: { path: a }\n  a: { path: b }\n');
    expect(d.map((x) => x.code)).toEqual(['yaml-syntax']);
    expect(d[0]!.location?.line).toBe(4);
  });

  it('rejects duplicate keys at any depth, in document order, also inside YAML 1.1 !!pairs', () => {
    const d = schemaDiagnostics(
      '%YAML 1.1\n---\nversion: 1\nimages:\n  a: { path: a, path: b }\nx: !!pairs [ k: { y: 1, y: 2 } ]\nversion: 2\n',
    );
    expect(d.filter((x) => x.code === 'yaml-syntax').map((x) => x.location?.line)).toEqual([7, 5, 6]);
  });

  it('stops alias bombs', () => {
    const bomb = [
      'a: &a [x, x, x, x, x, x, x, x, x]',
      'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]',
      'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]',
      'd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]',
      'version: 1',
      'images: { a: { path: a } }',
    ].join('\n');
    const d = schemaDiagnostics(bomb);
    expect(d.map((x) => x.code)).toEqual(['yaml-aliases']);
  });
});
