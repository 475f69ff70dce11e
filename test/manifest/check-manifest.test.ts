import { describe, expect, it } from 'vitest';
import { checkManifest } from '../../src/manifest/check-manifest.js';
import { brief, resolved, semanticDiagnostics } from '../helpers/manifest.js';

describe('semantic checks', () => {
  it('accepts a consistent manifest', () => {
    const text = `version: 1
images:
  base: { path: out/base.qcow2, from: { path: in/base.raw, format: raw } }
  disk: { path: out/disk.qcow2, from: { path: in/disk.raw, format: raw }, backing: base }
`;
    expect(semanticDiagnostics(text)).toEqual([]);
  });

  it('reports an unknown backing id at the backing value', () => {
    const text = 'version: 1\nimages:\n  a:\n    path: a.qcow2\n    backing: nope\n  b: { path: b.qcow2 }\n';
    const d = semanticDiagnostics(text);
    expect(d.map(brief)).toEqual(['unknown-backing@5:14']);
    // The image itself is not suggested: that would be a cycle.
    expect(d[0]!.hint).toBe('use one of: b; or {path: ..., format: ...} for a base the manifest does not manage');
  });

  it('reports a backing cycle once, with every edge and its location', () => {
    const text = `version: 1
images:
  a:
    path: a.qcow2
    backing: b
  b:
    path: b.qcow2
    backing: c
  c:
    path: c.qcow2
    backing: a
`;
    const d = semanticDiagnostics(text).filter((x) => x.code === 'backing-cycle');
    expect(d).toHaveLength(1);
    expect(d[0]!.message).toBe('backing cycle: a -> b -> c -> a');
    expect(d[0]!.related?.map((r) => `${r.message}@${r.location?.line}`)).toEqual([
      'a is backed by b@5',
      'b is backed by c@8',
      'c is backed by a@11',
    ]);
  });

  it('reports an image backed by itself as a cycle', () => {
    const d = semanticDiagnostics('version: 1\nimages:\n  a: { path: a.qcow2, backing: a }\n');
    expect(d.map((x) => x.message)).toEqual(['backing cycle: a -> a']);
  });

  it('follows a backing named by path to the image of the manifest at that path (a review saw apply write such a loop)', () => {
    const text =
      'version: 1\nimages:\n  a: { path: a.qcow2, backing: { path: b.qcow2, format: qcow2 } }\n  b: { path: b.qcow2, backing: a }\n';
    const d = semanticDiagnostics(text, ['/work/m/b.qcow2']).filter((x) => x.code === 'backing-cycle');
    expect(d.map((x) => x.message)).toEqual(['backing cycle: a -> b -> a']);
  });

  it('reports two images with the same path at the second one', () => {
    const text = 'version: 1\nimages:\n  a: { path: x.qcow2 }\n  b: { path: ./x.qcow2 }\n';
    const d = semanticDiagnostics(text);
    expect(d.map(brief)).toEqual(['duplicate-path@4:14']);
    expect(d[0]!.related?.[0]?.location?.line).toBe(3);
  });

  it('reports a source that does not exist at from.path', () => {
    const text = 'version: 1\nimages:\n  a:\n    path: a.qcow2\n    from: { path: in/gone.raw, format: raw }\n';
    const d = semanticDiagnostics(text, ['/work/m/in/gone.raw']);
    expect(d.map(brief)).toEqual(['source-missing@5:19']);
  });

  it('reports an in-place image whose file does not exist', () => {
    const d = semanticDiagnostics('version: 1\nimages:\n  a:\n    path: a.qcow2\n', ['/work/m/a.qcow2']);
    expect(d.map(brief)).toEqual(['in-place-missing@4:11']);
  });

  it("refuses an output that replaces another image's source", () => {
    const text = `version: 1
images:
  a: { path: in/disk.raw, format: raw, from: { path: in/other.raw, format: raw } }
  b: { path: out/b.qcow2, from: { path: in/disk.raw, format: raw } }
`;
    const d = semanticDiagnostics(text);
    expect(d.map(brief)).toEqual(['overwrites-input@3:14']);
  });

  it('refuses an output that replaces a fixed base another image uses', () => {
    const text = `version: 1
images:
  a: { path: base.qcow2, from: { path: in/other.qcow2, format: qcow2 } }
  b: { path: b.qcow2, backing: { path: base.qcow2, format: qcow2 } }
`;
    const d = semanticDiagnostics(text);
    expect(d.map((x) => x.code)).toEqual(['overwrites-input']);
    expect(d[0]!.hint).toContain('backing: a');
  });

  it('refuses a file name longer than any filesystem holds, at its line', () => {
    const d = semanticDiagnostics(
      `version: 1\nimages:\n  a: { path: ${'x'.repeat(300)}/a.qcow2, from: { path: in.raw, format: raw } }\n`,
    );
    expect(d.map(brief)).toEqual(['name-too-long@3:14']);
  });

  it('names every image that reads a replaced file, in manifest order, as source and as backing', () => {
    const text = `version: 1
images:
  c: { path: c.qcow2, backing: { path: base.qcow2, format: qcow2 } }
  a: { path: base.qcow2, from: { path: in/other.qcow2, format: qcow2 } }
  b: { path: b.qcow2, from: { path: base.qcow2, format: qcow2 }, backing: { path: base.qcow2, format: qcow2 } }
  d: { path: d.qcow2, from: { path: base.qcow2, format: qcow2 } }
`;
    const d = semanticDiagnostics(text).filter((x) => x.code === 'overwrites-input');
    expect(d.map((x) => x.message)).toEqual([
      `"a" would replace ${'/work/m/base.qcow2'}, which "c" uses as its backing`,
      `"a" would replace ${'/work/m/base.qcow2'}, which "b" reads as its source`,
      `"a" would replace ${'/work/m/base.qcow2'}, which "b" uses as its backing`,
      `"a" would replace ${'/work/m/base.qcow2'}, which "d" reads as its source`,
    ]);
  });

  it('refuses an image that names itself as its source', () => {
    const d = semanticDiagnostics(
      'version: 1\nimages:\n  a: { path: a.qcow2, from: { path: a.qcow2, format: qcow2 } }\n',
    );
    expect(d.map((x) => x.code)).toEqual(['overwrites-input']);
  });

  it('reports options that do not apply to the format at the option; defaults apply where they fit', () => {
    const text = `version: 1
defaults:
  options: { lazy_refcounts: true }
images:
  a:
    path: a.raw
    format: raw
    options: { cluster_size: 65536 }
  b: { path: b.qcow2 }
`;
    const d = semanticDiagnostics(text);
    expect(d.map(brief)).toEqual(['unknown-option@8:16']);
    expect(resolved(text).byId.get('a')?.options).toEqual({ cluster_size: 65536 });
    expect(resolved(text).byId.get('b')?.options).toEqual({ lazy_refcounts: true });
  });

  it('refuses option values qemu-img would refuse', () => {
    const text = `version: 1
images:
  a: { path: a.qcow2, options: { cluster_size: 3000 } }
  b: { path: b.raw, format: raw, options: { preallocation: metadata } }
  c: { path: c.vmdk, format: vmdk, options: { subformat: bogus } }
  d: { path: d.qcow2, options: { compat: "0.10", refcount_bits: 8, compression_type: zstd } }
  e: { path: e.qcow2, options: { extended_l2: true, cluster_size: 4096 } }
  f: { path: f.qcow2, backing: a, options: { preallocation: metadata } }
`;
    expect(semanticDiagnostics(text).map((x) => `${x.code}@${x.location?.line}`)).toEqual([
      'invalid-option@3',
      'invalid-option@4',
      'invalid-option@5',
      'option-needs-compat@6',
      'option-needs-compat@6',
      'invalid-option@7',
      'invalid-option@8',
    ]);
  });

  it('refuses a size that is not a whole number of 512-byte sectors, at the size', () => {
    const text = 'version: 1\nimages:\n  a: { path: a.qcow2, size: 3000 }\n  b: { path: b.qcow2, size: 1.5K }\n';
    const d = semanticDiagnostics(text);
    expect(d.filter((x) => x.code === 'invalid-size').map(brief)).toEqual(['invalid-size@3:29']);
    expect(d.find((x) => x.code === 'invalid-size')?.hint).toBe(
      'qemu sizes disks in 512-byte sectors: use 2560 or 3072',
    );
  });

  it('reports an external backing that does not exist', () => {
    const text = 'version: 1\nimages:\n  a:\n    path: a.qcow2\n    backing: { path: gone.qcow2, format: qcow2 }\n';
    expect(semanticDiagnostics(text, ['/work/m/gone.qcow2']).map(brief)).toEqual(['backing-missing@5:14']);
  });

  it('refuses one file declared with two formats', () => {
    const text = `version: 1
images:
  a:
    path: out/a.qcow2
    from: { path: in/t.raw, format: raw }
    backing: { path: in/t.raw, format: qcow2 }
`;
    const d = semanticDiagnostics(text);
    expect(d.map(brief)).toEqual(['format-conflict@6:14']);
    expect(d[0]!.related?.[0]?.location?.line).toBe(5);
  });

  it('refuses an output whose folder would have to be made inside a file', () => {
    const text = 'version: 1\nimages:\n  a: { path: in/a.raw/out.qcow2, from: { path: in/b.raw, format: raw } }\n';
    const d = checkManifest(resolved(text), { fileExists: () => true, parentBlocked: () => '/work/m/in/a.raw' });
    expect(d.map(brief)).toEqual(['path-blocked@3:14']);
  });

  it('refuses a data file that is another image, source or data file', () => {
    const text = `version: 1
images:
  a: { path: a.qcow2, options: { data_file: b.qcow2 } }
  b: { path: b.qcow2, options: { data_file: shared.data } }
  c: { path: c.qcow2, options: { data_file: shared.data } }
  d: { path: d.qcow2, options: { data_file_raw: true } }
`;
    expect(semanticDiagnostics(text).map(brief)).toEqual([
      'data-file-collision@3:34',
      'data-file-collision@5:34',
      'invalid-option@6:34',
    ]);
  });

  it('refuses a path that names a folder', () => {
    expect(semanticDiagnostics('version: 1\nimages:\n  a: { path: out/ }\n').map((x) => x.code)).toContain(
      'path-is-folder',
    );
  });

  it('refuses lazy_refcounts with compat 0.10', () => {
    const text =
      'version: 1\nimages:\n  a:\n    path: a.qcow2\n    options: { compat: "0.10", lazy_refcounts: true }\n';
    expect(semanticDiagnostics(text).map(brief)).toEqual(['option-needs-compat@5:32']);
  });

  it('refuses an external data file with compat 0.10 (qemu-img convert failed midway on it)', () => {
    const text = 'version: 1\nimages:\n  a:\n    path: a.qcow2\n    options: { compat: "v2", data_file: a.data }\n';
    expect(semanticDiagnostics(text).map(brief)).toEqual(['option-needs-compat@5:30']);
    expect(semanticDiagnostics(text)[0]?.message).toBe('data_file needs compat 1.1, but "a" asks for compat v2');
  });

  it('refuses a backing on a format that cannot have one', () => {
    const text = `version: 1
images:
  a: { path: a.qcow2 }
  b: { path: b.raw, format: raw, backing: a }
`;
    expect(semanticDiagnostics(text).map(brief)).toEqual(['backing-unsupported@4:43']);
  });
});
