import { describe, expect, it } from 'vitest';
import { fitsAtWorst, planLayout } from '../../src/planner/plan-layout.js';
import type { Plan } from '../../src/planner/plan-types.js';
import { file, fp, layer, layoutOf, MiB } from '../helpers/layout.js';
import { resolved } from '../helpers/manifest.js';

function planOf(text: string, layout: ReturnType<typeof layoutOf>): Plan {
  const result = planLayout(resolved(text), layout);
  if (!result.ok) throw new Error(JSON.stringify(result.diagnostics, null, 2));
  return result.plan;
}

function kinds(plan: Plan): string[] {
  return plan.steps.map((s) => s.id);
}

const raw = (path: string, ino: number, extra = {}) =>
  file('raw', [layer(path, ino, { format: 'raw', clusterSize: undefined, qcow2: {}, ...extra })]);

describe('planner: new images from a source', () => {
  it('copies a standalone image in full', () => {
    const plan = planOf(
      'version: 1\nimages:\n  a: { path: out/a.qcow2, from: { path: in/a.raw, format: raw } }\n',
      layoutOf([raw('/work/m/in/a.raw', 10)]),
    );
    expect(kinds(plan)).toEqual(['a:convert']);
    const step = plan.steps[0]!;
    expect(step.temporaryPath).toBe('/work/m/out/.a.qcow2.chainform-tmp');
    expect(step.commands[0]!.argv).toEqual([
      'qemu-img',
      'convert',
      '-p',
      '-f',
      'raw',
      '-O',
      'qcow2',
      '/work/m/in/a.raw',
      '/work/m/out/.a.qcow2.chainform-tmp',
    ]);
    expect(plan.images[0]!.action).toBe('create');
  });

  it('sizes a qcow2 output with qemu-img measure, a raw one by its bound (measure would say the whole disk)', () => {
    const text =
      'version: 1\nimages:\n  q: { path: out/q.qcow2, from: { path: in/a.raw, format: raw } }\n' +
      '  r: { path: out/r.raw, format: raw, from: { path: in/a.raw, format: raw } }\n';
    const plan = planOf(text, layoutOf([raw('/work/m/in/a.raw', 10)]));
    const [q, r] = plan.steps;
    expect(q!.measure).toEqual([
      'qemu-img',
      'measure',
      '--output=json',
      '-f',
      'raw',
      '-O',
      'qcow2',
      '/work/m/in/a.raw',
    ]);
    expect(r!.measure).toBeUndefined();
    expect(r!.writeBytesIsUpperBound).toBe(true);
  });

  it('measures only the top layer of an overlay for convert -B, with its backing cut off', () => {
    const text = `version: 1
images:
  top: { path: out/top.qcow2, from: { path: in/top.qcow2, format: qcow2 }, backing: { path: in/base.qcow2, format: qcow2 } }
`;
    const top = file('qcow2', [layer('/work/m/in/top.qcow2', 1), layer('/work/m/in/base.qcow2', 2)]);
    const plan = planOf(text, layoutOf([top, file('qcow2', [layer('/work/m/in/base.qcow2', 2)])]));
    expect(plan.steps[0]!.measure?.at(-1)).toBe(
      'json:{"driver":"qcow2","file":{"driver":"file","filename":"/work/m/in/top.qcow2"},"backing":null}',
    );
  });

  it('knows when the measures can change no free-space verdict (their worst case fits)', () => {
    const text = 'version: 1\nimages:\n  q: { path: out/q.qcow2, from: { path: in/a.raw, format: raw } }\n';
    const layout = layoutOf([raw('/work/m/in/a.raw', 10)]);
    const plan = planOf(text, layout);
    const step = plan.steps[0]!;
    expect(step.worstCaseWriteBytes).toBeGreaterThan(step.expectedWriteBytes);
    expect(fitsAtWorst(plan, layout)).toBe(true);
    // Room for the planner's figure but not for the worst case: only a measure can tell.
    const space = { dir: '/work/m/out', freeBytes: step.expectedWriteBytes };
    const tight = { ...layout, freeSpace: new Map([['/work/m/out', space]]) };
    const tightPlan = planOf(text, tight);
    expect(tightPlan.space.every((check) => check.fits)).toBe(true);
    expect(fitsAtWorst(tightPlan, tight)).toBe(false);
  });

  it('uses convert -B when the source sits on the declared base (same file)', () => {
    const text = `version: 1
images:
  top:
    path: out/top.qcow2
    from: { path: in/top.qcow2, format: qcow2 }
    backing: { path: in/base.qcow2, format: qcow2 }
    options: { cluster_size: 65536 }
`;
    const top = file('qcow2', [
      layer('/work/m/in/top.qcow2', 1, { clusterSize: 512, actualSize: 300_000 }),
      layer('/work/m/in/base.qcow2', 2),
    ]);
    const base = file('qcow2', [layer('/work/m/in/base.qcow2', 2)]);
    const plan = planOf(text, layoutOf([top, base]));
    expect(kinds(plan)).toEqual(['top:convert-keep-backing']);
    const argv = plan.steps[0]!.commands[0]!.argv;
    expect(argv).toContain('-B');
    expect(argv[argv.indexOf('-B') + 1]).toBe('../in/base.qcow2');
    expect(argv[argv.indexOf('-F') + 1]).toBe('qcow2');
    expect(plan.steps[0]!.expectedWriteBytes).toBe(300_000);
  });

  it("uses convert -B onto a manifest image built from the source's backing, after it", () => {
    const text = `version: 1
images:
  base: { path: out/base.qcow2, from: { path: in/base.raw, format: raw } }
  top:
    path: out/top.qcow2
    from: { path: in/top.qcow2, format: qcow2 }
    backing: base
`;
    const top = file('qcow2', [layer('/work/m/in/top.qcow2', 1), layer('/work/m/in/base.raw', 2, { format: 'raw' })]);
    const plan = planOf(text, layoutOf([top, raw('/work/m/in/base.raw', 2)]));
    expect(kinds(plan)).toEqual(['base:convert', 'top:convert-keep-backing']);
    expect(plan.steps[1]!.dependsOn).toEqual(['base:convert']);
    const argv = plan.steps[1]!.commands[0]!.argv;
    expect(argv[argv.indexOf('-B') + 1]).toBe('base.qcow2');
  });

  it('diffs a flat full copy against its declared base', () => {
    const text = `version: 1
images:
  tpl: { path: out/tpl.qcow2, from: { path: in/tpl.raw, format: raw } }
  vm: { path: out/vm.qcow2, from: { path: in/vm.raw, format: raw }, backing: tpl }
`;
    const plan = planOf(text, layoutOf([raw('/work/m/in/tpl.raw', 1), raw('/work/m/in/vm.raw', 2)]));
    expect(kinds(plan)).toEqual(['tpl:convert', 'vm:diff']);
    const [create, rebase] = plan.steps[1]!.commands;
    expect(create!.argv).toEqual([
      'qemu-img',
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      '/work/m/in/vm.raw',
      '-F',
      'raw',
      '/work/m/out/.vm.qcow2.chainform-tmp',
    ]);
    expect(rebase!.argv).toEqual([
      'qemu-img',
      'rebase',
      '-p',
      '--image-opts',
      '-b',
      'tpl.qcow2',
      '-F',
      'qcow2',
      'driver=qcow2,file.filename=/work/m/out/.vm.qcow2.chainform-tmp,detect-zeroes=on',
    ]);
  });

  it("builds an overlay on a base further down the source's chain with a diff, never a compare", () => {
    const text = `version: 1
images:
  top:
    path: out/top.qcow2
    from: { path: in/top.qcow2, format: qcow2 }
    backing: { path: in/base.qcow2, format: qcow2 }
`;
    const base = layer('/work/m/in/base.qcow2', 3);
    const top = file('qcow2', [layer('/work/m/in/top.qcow2', 1), layer('/work/m/in/mid.qcow2', 2), base]);
    const plan = planOf(text, layoutOf([top, file('qcow2', [base])]));
    expect(kinds(plan)).toEqual(['top:diff']);
    expect(plan.steps[0]!.reason).toContain('reading only those of the skipped layers (/work/m/in/mid.qcow2)');
  });

  it("compares an overlay's backing with a copy of it before choosing (never assumes equality)", () => {
    const text = `version: 1
images:
  top:
    path: out/top.qcow2
    from: { path: in/top.qcow2, format: qcow2 }
    backing: { path: in/base-copy.qcow2, format: qcow2 }
`;
    const top = file('qcow2', [layer('/work/m/in/top.qcow2', 1), layer('/work/m/in/base.qcow2', 2)]);
    const copy = file('qcow2', [layer('/work/m/in/base-copy.qcow2', 3)]);
    const plan = planOf(text, layoutOf([top, copy]));
    expect(kinds(plan)).toEqual(['top:verified-convert-keep-backing']);
    const step = plan.steps[0]!;
    expect(step.commands.map((c) => [c.argv[1], c.check ?? false])).toEqual([
      ['compare', true],
      ['convert', false],
    ]);
    expect(step.commands[0]!.argv).toEqual([
      'qemu-img',
      'compare',
      '-f',
      'qcow2',
      '-F',
      'qcow2',
      '/work/m/in/base.qcow2',
      '/work/m/in/base-copy.qcow2',
    ]);
    expect(step.otherwise?.map((c) => c.argv[1])).toEqual(['create', 'rebase']);
    // Its fallback is a diff, whose figure is an estimate (qemu-img rebase writes whole runs).
    expect(step.writeBytesIsUpperBound).toBe(false);
  });

  it('refuses a backing larger than the image', () => {
    const text = `version: 1
images:
  top:
    path: out/top.qcow2
    from: { path: in/top.raw, format: raw }
    backing: { path: in/big.qcow2, format: qcow2 }
`;
    const big = file('qcow2', [layer('/work/m/in/big.qcow2', 3, { virtualSize: 128 * MiB })]);
    const result = planLayout(resolved(text), layoutOf([raw('/work/m/in/top.raw', 1), big]));
    expect(result.ok).toBe(false);
    expect(!result.ok && result.diagnostics.map((d) => `${d.code}@${d.location?.line}`)).toEqual(['backing-larger@6']);
  });

  it('measures a backing named through another name of an image the manifest grows at its new size', () => {
    const text = `version: 1
images:
  a: { path: in/a.qcow2, size: 128M }
  top:
    path: out/top.qcow2
    from: { path: in/top.raw, format: raw }
    backing: { path: in/alink.qcow2, format: qcow2 }
`;
    // in/alink.qcow2 is a symlink to in/a.qcow2: one file (inode 3), 64 MiB today.
    const a = file('qcow2', [layer('/work/m/in/a.qcow2', 3)]);
    const alink = {
      ...file('qcow2', [layer('/work/m/in/alink.qcow2', 3)]),
      symlink: { target: '/work/m/in/a.qcow2', sameFilesystem: true },
    };
    const result = planLayout(resolved(text), layoutOf([raw('/work/m/in/top.raw', 1), a, alink]));
    expect(!result.ok && result.diagnostics.map((d) => `${d.code}@${d.location?.line}`)).toEqual(['backing-larger@7']);
    // A hard link is another entry: a resize in place grows the file under it too...
    const hard = file('qcow2', [layer('/work/m/in/alink.qcow2', 3)]);
    const inPlace = planLayout(resolved(text), layoutOf([raw('/work/m/in/top.raw', 1), a, hard]));
    expect(!inPlace.ok && inPlace.diagnostics.map((d) => `${d.code}@${d.location?.line}`)).toEqual([
      'backing-larger@7',
    ]);
    // ...but a rewrite of a.qcow2 leaves it the old file, at its old size.
    const rewritten = text.replace('size: 128M', 'size: 128M, options: { cluster_size: 131072 }');
    expect(planLayout(resolved(rewritten), layoutOf([raw('/work/m/in/top.raw', 1), a, hard])).ok).toBe(true);
  });

  it('checks the free space where an external data file lands', () => {
    const text =
      'version: 1\nimages:\n  a: { path: out/a.qcow2, from: { path: in/a.raw, format: raw }, options: { data_file: /data/a.raw } }\n';
    const layout = layoutOf([raw('/work/m/in/a.raw', 1, { actualSize: 3 * MiB })]);
    const data = { dir: '/data', freeBytes: MiB };
    const plan = planOf(text, { ...layout, freeSpace: new Map([...layout.freeSpace, ['/data', data]]) });
    expect(plan.space).toEqual([{ dir: '/data', freeBytes: MiB, expectedWriteBytes: 3 * MiB, fits: false }]);
  });
});

describe('planner: reshaping in place', () => {
  const inPlace = (backing: string, options = '') => `version: 1
images:
  top:
    path: vm/top.qcow2
    backing: ${backing}
${options}`;

  it('does nothing when the image already matches', () => {
    const top = file('qcow2', [
      layer('/work/m/vm/top.qcow2', 1, { backingName: '../in/base.qcow2' }),
      layer('/work/m/in/base.qcow2', 2),
    ]);
    const plan = planOf(
      inPlace('{ path: in/base.qcow2, format: qcow2 }'),
      layoutOf([top, file('qcow2', [layer('/work/m/in/base.qcow2', 2)])]),
    );
    expect(plan.steps).toEqual([]);
    expect(plan.images[0]!.action).toBe('unchanged');
  });

  it('repoints (rebase -u) when the backing is the same file under another name', () => {
    // The stored name is absolute, the manifest wants a relative name to the same inode.
    const top = file('qcow2', [
      layer('/work/m/vm/top.qcow2', 1, { backingName: '/old/place/base.qcow2' }),
      layer('/old/place/base.qcow2', 2),
    ]);
    const plan = planOf(
      inPlace('{ path: in/base.qcow2, format: qcow2 }'),
      layoutOf([top, file('qcow2', [layer('/work/m/in/base.qcow2', 2)])]),
    );
    expect(kinds(plan)).toEqual(['top:repoint']);
    expect(plan.steps[0]!.commands[0]!.argv).toEqual([
      'qemu-img',
      'rebase',
      '-u',
      '-f',
      'qcow2',
      '-b',
      '../in/base.qcow2',
      '-F',
      'qcow2',
      '/work/m/vm/top.qcow2',
    ]);
    expect(plan.steps[0]!.expectedWriteBytes).toBe(0);
  });

  it('compares old and new base in place: identical repoints, different safely rebases', () => {
    const top = file('qcow2', [layer('/work/m/vm/top.qcow2', 1), layer('/work/m/in/old.qcow2', 2)]);
    const plan = planOf(
      inPlace('{ path: in/new.qcow2, format: qcow2 }'),
      layoutOf([top, file('qcow2', [layer('/work/m/in/new.qcow2', 3)])]),
    );
    expect(kinds(plan)).toEqual(['top:verified-repoint']);
    const step = plan.steps[0]!;
    expect(step.temporaryPath).toBeUndefined();
    expect(step.commands.map((c) => c.argv.slice(0, 3))).toEqual([
      ['qemu-img', 'compare', '-f'],
      ['qemu-img', 'rebase', '-u'],
    ]);
    expect(step.otherwise?.map((c) => c.argv.slice(0, 4))).toEqual([['qemu-img', 'rebase', '-p', '--image-opts']]);
  });

  it('drops a middle link with a safe rebase alone, sized by the skipped layer', () => {
    const base = layer('/work/m/in/base.qcow2', 3);
    const top = file('qcow2', [
      layer('/work/m/vm/top.qcow2', 1),
      layer('/work/m/in/mid.qcow2', 2, { actualSize: 3 * MiB }),
      base,
    ]);
    const plan = planOf(inPlace('{ path: in/base.qcow2, format: qcow2 }'), layoutOf([top, file('qcow2', [base])]));
    // No compare: it would read the whole disk twice, where the rebase reads only mid's clusters.
    expect(kinds(plan)).toEqual(['top:rebase']);
    const step = plan.steps[0]!;
    expect(step.commands.map((c) => c.argv.slice(0, 4))).toEqual([['qemu-img', 'rebase', '-p', '--image-opts']]);
    expect(step.otherwise).toBeUndefined();
    expect(step.expectedWriteBytes).toBe(3 * MiB);
  });

  it('flattens into a new file when the image must become standalone', () => {
    const top = file('qcow2', [layer('/work/m/vm/top.qcow2', 1), layer('/work/m/in/old.qcow2', 2)]);
    const plan = planOf(inPlace('null'), layoutOf([top]));
    expect(kinds(plan)).toEqual(['top:convert']);
    expect(plan.steps[0]!.temporaryPath).toBe('/work/m/vm/.top.qcow2.chainform-tmp');
  });

  it('rewrites with convert -B when only options change, keeping the backing', () => {
    const top = file('qcow2', [
      layer('/work/m/vm/top.qcow2', 1, {
        clusterSize: 512,
        qcow2: { compat: '0.10' },
        backingName: '../in/base.qcow2',
      }),
      layer('/work/m/in/base.qcow2', 2),
    ]);
    const plan = planOf(
      inPlace('{ path: in/base.qcow2, format: qcow2 }', '    options: { cluster_size: 65536, compat: "1.1" }\n'),
      layoutOf([top, file('qcow2', [layer('/work/m/in/base.qcow2', 2)])]),
    );
    expect(kinds(plan)).toEqual(['top:convert-keep-backing']);
    expect(plan.steps[0]!.reason).toContain('cluster_size 512 -> 65536');
    expect(plan.steps[0]!.reason).toContain('compat 0.10 -> 1.1');
  });

  it('makes a step that rewrites a file wait for the steps that still read it', () => {
    const text = `version: 1
images:
  top:
    path: vm/top.qcow2
    backing: { path: in/new.qcow2, format: qcow2 }
  copy:
    path: out/copy.qcow2
    from: { path: vm/top.qcow2, format: qcow2 }
`;
    const top = file('qcow2', [layer('/work/m/vm/top.qcow2', 1), layer('/work/m/in/old.qcow2', 2)]);
    const plan = planOf(text, layoutOf([top, file('qcow2', [layer('/work/m/in/new.qcow2', 3)])]));
    expect(kinds(plan)).toEqual(['copy:convert', 'top:verified-repoint']);
    expect(plan.steps[1]!.dependsOn).toEqual(['copy:convert']);
  });
});

describe('planner: outputs that already exist', () => {
  const text = 'version: 1\nimages:\n  a: { path: out/a.qcow2, from: { path: in/a.raw, format: raw } }\n';
  const output = file('qcow2', [layer('/work/m/out/a.qcow2', 20)]);
  const source = raw('/work/m/in/a.raw', 10);
  const entry = {
    id: 'a',
    format: 'qcow2',
    output: fp(20),
    source: { path: '/work/m/in/a.raw', format: 'raw' },
    sourceChain: [fp(10)],
    backingChain: [],
    appliedAt: '2026-01-01T00:00:00.000Z',
  };

  it('plans nothing when the ledger shows the output was built from the unchanged source', () => {
    const plan = planOf(text, layoutOf([output, source], { version: 1, outputs: { '/work/m/out/a.qcow2': entry } }));
    expect(plan.steps).toEqual([]);
  });

  it('rebuilds its own output when the source changed since', () => {
    const changed = { ...entry, sourceChain: [fp(10, 999)] };
    const plan = planOf(text, layoutOf([output, source], { version: 1, outputs: { '/work/m/out/a.qcow2': changed } }));
    expect(kinds(plan)).toEqual(['a:convert']);
    expect(plan.images[0]!.action).toBe('replace');
  });

  it('rebuilds its own output left half-changed by a run that died', () => {
    const interrupted = { ...entry, output: fp(20, 5), inProgress: true };
    const plan = planOf(
      text,
      layoutOf([output, source], { version: 1, outputs: { '/work/m/out/a.qcow2': interrupted } }),
    );
    expect(kinds(plan)).toEqual(['a:convert']);
    expect(plan.images[0]!.action).toBe('replace');
  });

  it('refuses to replace a file chainform did not create', () => {
    const result = planLayout(resolved(text), layoutOf([output, source]));
    expect(!result.ok && result.diagnostics.map((d) => d.code)).toEqual(['output-exists']);
  });

  it('refuses to replace an output modified since chainform built it', () => {
    const modified = { ...entry, output: fp(20, 5) };
    const result = planLayout(
      resolved(text),
      layoutOf([output, source], { version: 1, outputs: { '/work/m/out/a.qcow2': modified } }),
    );
    expect(!result.ok && result.diagnostics[0]?.message).toContain('changed since chainform built it');
  });
});

describe('planner: content that changes under a chain', () => {
  const text = `version: 1
images:
  tpl: { path: out/tpl.qcow2, from: { path: in/tpl.raw, format: raw } }
  vm: { path: out/vm.qcow2, from: { path: in/vm.raw, format: raw }, backing: tpl }
`;
  const entry = (id: string, output: number, source: number, sourceMtime: number, backing: number[]) => ({
    id,
    format: 'qcow2',
    output: fp(output),
    source: { path: `/work/m/in/${id}.raw`, format: 'raw' },
    sourceChain: [fp(source, sourceMtime)],
    backingChain: backing.map((ino) => fp(ino)),
    appliedAt: '2026-01-01T00:00:00.000Z',
  });

  it('rebuilds an overlay whose base is rebuilt, instead of rebasing it onto itself', () => {
    const tplOut = file('qcow2', [layer('/work/m/out/tpl.qcow2', 20)]);
    const vmOut = file('qcow2', [
      layer('/work/m/out/vm.qcow2', 21, { backingName: 'tpl.qcow2' }),
      layer('/work/m/out/tpl.qcow2', 20),
    ]);
    const ledger = {
      version: 1 as const,
      outputs: {
        // The template's source changed since (mtime 1 recorded, the file now has another).
        '/work/m/out/tpl.qcow2': entry('tpl', 20, 10, 0, []),
        '/work/m/out/vm.qcow2': entry('vm', 21, 11, 1, [20]),
      },
    };
    const plan = planOf(
      text,
      layoutOf([tplOut, vmOut, raw('/work/m/in/tpl.raw', 10), raw('/work/m/in/vm.raw', 11)], ledger),
    );
    expect(kinds(plan)).toEqual(['tpl:convert', 'vm:diff']);
    expect(plan.images.map((i) => i.action)).toEqual(['replace', 'replace']);
  });

  it('refuses an in-place image whose chain reads through a file the plan rebuilds', () => {
    const inPlace = `${text}  kept: { path: vm/kept.qcow2, backing: tpl }
`;
    const tplOut = file('qcow2', [layer('/work/m/out/tpl.qcow2', 20)]);
    const kept = file('qcow2', [
      layer('/work/m/vm/kept.qcow2', 30, { backingName: '../out/tpl.qcow2' }),
      layer('/work/m/out/tpl.qcow2', 20),
    ]);
    const ledger = { version: 1 as const, outputs: { '/work/m/out/tpl.qcow2': entry('tpl', 20, 10, 0, []) } };
    const result = planLayout(
      resolved(inPlace),
      layoutOf([tplOut, kept, raw('/work/m/in/tpl.raw', 10), raw('/work/m/in/vm.raw', 11)], ledger),
    );
    expect(!result.ok && result.diagnostics.map((d) => d.code)).toEqual(['backing-rebuilt']);
  });

  it('accepts an in-place overlay on a managed image that is not rebuilt', () => {
    const inPlace = `${text}  kept: { path: vm/kept.qcow2, backing: tpl }\n`;
    const tplOut = file('qcow2', [layer('/work/m/out/tpl.qcow2', 20)]);
    const kept = file('qcow2', [
      layer('/work/m/vm/kept.qcow2', 30, { backingName: '../out/tpl.qcow2' }),
      layer('/work/m/out/tpl.qcow2', 20),
    ]);
    const ledger = { version: 1 as const, outputs: { '/work/m/out/tpl.qcow2': entry('tpl', 20, 10, 1, []) } };
    const plan = planOf(
      inPlace,
      layoutOf([tplOut, kept, raw('/work/m/in/tpl.raw', 10), raw('/work/m/in/vm.raw', 11)], ledger),
    );
    expect(plan.images.map((i) => `${i.id}:${i.action}`)).toEqual(['tpl:unchanged', 'vm:create', 'kept:unchanged']);
  });

  it("refuses to rebuild a file that another image's source reads through", () => {
    const damaging = `${text}  copy: { path: out/copy.qcow2, from: { path: in/overlay.qcow2, format: qcow2 } }\n`;
    const tplOut = file('qcow2', [layer('/work/m/out/tpl.qcow2', 20)]);
    const overlay = file('qcow2', [layer('/work/m/in/overlay.qcow2', 40), layer('/work/m/out/tpl.qcow2', 20)]);
    const ledger = { version: 1 as const, outputs: { '/work/m/out/tpl.qcow2': entry('tpl', 20, 10, 0, []) } };
    const result = planLayout(
      resolved(damaging),
      layoutOf([tplOut, overlay, raw('/work/m/in/tpl.raw', 10), raw('/work/m/in/vm.raw', 11)], ledger),
    );
    expect(!result.ok && result.diagnostics.map((d) => d.code)).toEqual(['overwrites-input']);
  });

  it('never treats one file read under two formats as the same content', () => {
    const overlay = `version: 1
images:
  top:
    path: out/top.qcow2
    from: { path: in/top.qcow2, format: qcow2 }
    backing: { path: in/base.img, format: raw }
`;
    // The source's backing is in/base.img read as qcow2; the manifest names it as raw.
    const top = file('qcow2', [layer('/work/m/in/top.qcow2', 1), layer('/work/m/in/base.img', 2)]);
    const base = file('raw', [layer('/work/m/in/base.img', 2, { format: 'raw' })]);
    const plan = planOf(overlay, layoutOf([top, base]));
    expect(kinds(plan)).toEqual(['top:verified-convert-keep-backing']);
  });
});

describe('planner: order and space', () => {
  it('orders steps deterministically and leaves independent chains unlinked', () => {
    const text = `version: 1
images:
  b: { path: out/b.qcow2, from: { path: in/b.raw, format: raw } }
  a: { path: out/a.qcow2, from: { path: in/a.raw, format: raw } }
  c: { path: out/c.qcow2, from: { path: in/c.raw, format: raw }, backing: a }
`;
    const layout = layoutOf([raw('/work/m/in/a.raw', 1), raw('/work/m/in/b.raw', 2), raw('/work/m/in/c.raw', 3)]);
    const plan = planOf(text, layout);
    expect(kinds(plan)).toEqual(['b:convert', 'a:convert', 'c:diff']);
    expect(plan.steps.map((s) => s.dependsOn)).toEqual([[], [], ['a:convert']]);
    expect(planOf(text, layout)).toEqual(plan);
  });

  it('sums expected writes per filesystem against free space', () => {
    const text = 'version: 1\nimages:\n  a: { path: out/a.qcow2, from: { path: in/a.raw, format: raw } }\n';
    const plan = planOf(text, layoutOf([raw('/work/m/in/a.raw', 1, { actualSize: 3 * MiB })]));
    expect(plan.space).toEqual([
      { dir: '/work/m/out', freeBytes: 10 * 1024 * MiB, expectedWriteBytes: 3 * MiB, fits: true },
    ]);
  });
});

describe('planner: an image whose path is another name of its file', () => {
  const rewrite = 'version: 1\nimages:\n  top: { path: vm/top.qcow2, backing: null }\n';
  /** vm/top.qcow2 on a backing, so that `backing: null` rewrites it (a flatten into a new file). */
  const linked = (extra: Partial<ReturnType<typeof file>>) => {
    const top = file('qcow2', [
      layer('/work/m/vm/top.qcow2', 1, { backingName: '../in/old.qcow2' }),
      layer('/work/m/in/old.qcow2', 2),
    ]);
    return { ...top, ...extra };
  };

  it('writes beside a symlink and renames onto the file it names, on one filesystem', () => {
    const symlink = { target: '/work/store/top.qcow2', sameFilesystem: true };
    const plan = planOf(rewrite, layoutOf([linked({ symlink })]));
    const step = plan.steps[0]!;
    // Beside the link, qemu resolves a relative backing name as it will through the link.
    expect(step.temporaryPath).toBe('/work/m/vm/.top.qcow2.chainform-tmp');
    expect(step.renameOnto).toBe('/work/store/top.qcow2');
    expect(plan.warnings).toEqual([]);
  });

  it('writes beside the file a symlink names when it is on another filesystem (a rename cannot cross)', () => {
    const symlink = { target: '/mnt/disks/top.qcow2', sameFilesystem: false };
    const layout = layoutOf([linked({ symlink })]);
    const elsewhere = { dir: '/mnt/disks', freeBytes: 5 * MiB };
    const plan = planOf(rewrite, { ...layout, freeSpace: new Map([...layout.freeSpace, ['/mnt/disks', elsewhere]]) });
    const step = plan.steps[0]!;
    expect(step.temporaryPath).toBe('/mnt/disks/.top.qcow2.chainform-tmp');
    expect(step.renameOnto).toBe('/mnt/disks/top.qcow2');
    // The space is checked where the bytes land.
    expect(plan.space.map((s) => s.dir)).toEqual(['/mnt/disks']);
  });

  it('warns that other hard links keep the old file when the image is rewritten, not when amended', () => {
    const plan = planOf(rewrite, layoutOf([linked({ links: 3 })]));
    expect(plan.steps[0]!.renameOnto).toBeUndefined();
    expect(plan.warnings.map((w) => [w.code, w.severity, w.message])).toEqual([
      [
        'hard-linked',
        'warning',
        '/work/m/vm/top.qcow2 has 2 other names (hard links): the rewrite puts a new file under this name only, and the other names keep the old file',
      ],
    ]);
    const amend =
      'version: 1\nimages:\n  top: { path: vm/top.qcow2, backing: { path: in/old.qcow2, format: qcow2 }, options: { lazy_refcounts: true } }\n';
    const old = file('qcow2', [layer('/work/m/in/old.qcow2', 2)]);
    const amended = planOf(amend, layoutOf([linked({ links: 3 }), old]));
    expect(kinds(amended)).toEqual(['top:amend']);
    expect(amended.warnings).toEqual([]);
  });
});

describe('planner: names through a symlinked folder (realPath)', () => {
  // /work/m/d is a symlink to /work/m: d/a.qcow2 is the very entry a.qcow2, not just its inode.
  const a = file('qcow2', [layer('/work/m/a.qcow2', 3)]);
  const viaFolder = { ...file('qcow2', [layer('/work/m/d/a.qcow2', 3)]), realPath: '/work/m/a.qcow2' };

  it('measures such a backing at the declared size of an image rewritten and grown: the rename reaches it', () => {
    const text =
      'version: 1\nimages:\n  a: { path: a.qcow2, size: 128M, options: { cluster_size: 131072 } }\n' +
      '  o: { path: out/o.qcow2, from: { path: in/o.raw, format: raw }, backing: { path: d/a.qcow2, format: qcow2 } }\n';
    const result = planLayout(resolved(text), layoutOf([a, viaFolder, raw('/work/m/in/o.raw', 1)]));
    expect(!result.ok && result.diagnostics.map((d) => d.code)).toEqual(['backing-larger']);
  });

  it('refuses to retire the entry of an image it rewrites under that other name', () => {
    const text =
      'version: 1\nimages:\n  a: { path: a.qcow2, options: { cluster_size: 131072 } }\nretire: [d/a.qcow2]\n';
    const result = planLayout(resolved(text), layoutOf([a, viaFolder]));
    expect(!result.ok && result.diagnostics.map((d) => d.code)).toEqual(['retire-in-use']);
  });

  it('retires a hard link of a rewritten image that a backing reaches only through a symlink to its entry', () => {
    const text =
      'version: 1\nimages:\n  a: { path: a.qcow2, options: { cluster_size: 131072 } }\n' +
      '  o: { path: out/o.qcow2, from: { path: in/o.raw, format: raw }, backing: { path: l.qcow2, format: qcow2 } }\n' +
      'retire: [h.qcow2]\n';
    const link = {
      ...file('qcow2', [layer('/work/m/l.qcow2', 3)]),
      symlink: { target: '/work/m/a.qcow2', sameFilesystem: true },
    };
    const hard = file('qcow2', [layer('/work/m/h.qcow2', 3)]);
    const result = planLayout(resolved(text), layoutOf([a, link, hard, raw('/work/m/in/o.raw', 1)]));
    expect(result.ok ? result.plan.retire : result.diagnostics).toEqual(['/work/m/h.qcow2']);
  });
});

describe('planner: the data file of an image kept in place', () => {
  it('is never replaced by a rewrite, under any name', () => {
    const text =
      'version: 1\nimages:\n  top: { path: vm/top.qcow2, backing: null, options: { data_file: /work/m/vm/top.data } }\n';
    const top = file('qcow2', [
      layer('/work/m/vm/top.qcow2', 1, { dataFilePath: '/work/m/vm/top.data', dataFileFingerprint: fp(5) }),
      layer('/work/m/in/old.qcow2', 2),
    ]);
    const data: ReturnType<typeof file> = {
      path: '/work/m/vm/top.data',
      fingerprint: fp(5),
      format: 'raw',
      chain: null,
      links: 2,
    };
    const result = planLayout(resolved(text), layoutOf([top, data]));
    expect(!result.ok && result.diagnostics.map((d) => d.code)).toEqual(['data-file-rewrite']);
    // A new data file is written beside the image; the old one is left to retire.
    const moved = text.replace('/work/m/vm/top.data', '/work/m/vm/new.data');
    const plan = planOf(moved, layoutOf([top, data]));
    expect(plan.steps[0]!.extraTemporaries?.[0]?.path).toBe('/work/m/vm/new.data');
  });
});

describe('planner: a symlink to a file on another filesystem, with a relative backing name', () => {
  it('refuses the rewrite: beside that file, the name would resolve from another folder', () => {
    const text =
      'version: 1\nimages:\n  top: { path: vm/top.qcow2, backing: { path: in/base.qcow2, format: qcow2 }, options: { cluster_size: 131072 } }\n';
    const base = file('qcow2', [layer('/work/m/in/base.qcow2', 2)]);
    const top = file('qcow2', [
      layer('/work/m/vm/top.qcow2', 1, { backingName: '../in/base.qcow2' }),
      layer('/work/m/in/base.qcow2', 2),
    ]);
    const elsewhere = { ...top, symlink: { target: '/mnt/disks/top.qcow2', sameFilesystem: false } };
    const refused = planLayout(resolved(text), layoutOf([elsewhere, base]));
    expect(refused.ok).toBe(false);
    expect(refused.ok ? [] : refused.diagnostics.map((d) => d.code)).toEqual(['symlink-across-filesystems']);
    // An absolute backing name, or a link on the same filesystem, is planned.
    const absolute = text.replace('in/base.qcow2', '/work/m/in/base.qcow2');
    expect(planLayout(resolved(absolute), layoutOf([elsewhere, base])).ok).toBe(true);
    const near = { ...top, symlink: { target: '/work/store/top.qcow2', sameFilesystem: true } };
    expect(planLayout(resolved(text), layoutOf([near, base])).ok).toBe(true);
  });
});
