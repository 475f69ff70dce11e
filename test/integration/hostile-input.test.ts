// Hostile input files. (1) File names with spaces, unicode, leading dashes and colons work end to
// end as sources, outputs and backings, and stored backing names open as files. (2) Broken images
// (corrupt, truncated, wrong format, dangling chains, dirty, not images at all, folders,
// unreadable) are refused by `plan` with one clear located error, no stack trace, and nothing
// written. A source declared raw whose file has a qcow2 header is read as raw, never probed.
import { createHash } from 'node:crypto';
import { chmod, copyFile, cp, lstat, mkdir, open, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  chainform,
  checkImage,
  compareImages,
  imageInfo,
  qemuImg,
  qemuIo,
  tempFolder,
  topLayerDataBytes,
} from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

/** A YAML scalar for a path: JSON strings are valid YAML double-quoted strings. */
const q = (path: string) => JSON.stringify(path);

describe('file names with spaces, unicode, leading dashes and colons', () => {
  const RAW = { uni: 'in/dïsk ✓.raw', dash: 'in/-rf.raw', colon: 'in/a:b.raw', help: 'in/--help.raw' };
  const CHAIN = { base: 'in/nbd:base.qcow2', top: 'in/-rf over ✓.qcow2', copy: 'in/a:b copy.qcow2' };

  const ws = useWorkspace(async (dir) => {
    await mkdir(join(dir, 'in'));
    const at = (p: string) => join(dir, p);
    await qemuImg('create', '-q', '-f', 'raw', at(RAW.uni), '8M');
    await qemuIo('raw', at(RAW.uni), 'write -P 0xaa 0 4M');
    await copyFile(at(RAW.uni), at(RAW.dash));
    await copyFile(at(RAW.uni), at(RAW.colon));
    await qemuIo('raw', at(RAW.dash), 'write -P 0x11 1M 64k');
    await qemuIo('raw', at(RAW.colon), 'write -P 0x22 2M 64k', 'write -z 3M 64k');
    await qemuImg('create', '-q', '-f', 'raw', at(RAW.help), '8M');
    await qemuIo('raw', at(RAW.help), 'write -P 0x33 0 1M');
    // A qcow2 chain whose stored backing name needs the "./" (else qemu reads "nbd:" as a protocol).
    await qemuImg('create', '-q', '-f', 'qcow2', at(CHAIN.base), '8M');
    await qemuIo('qcow2', at(CHAIN.base), 'write -P 0x44 0 2M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', './nbd:base.qcow2', '-F', 'qcow2', at(CHAIN.top));
    await qemuIo('qcow2', at(CHAIN.top), 'write -P 0x55 1M 64k');
    await copyFile(at(CHAIN.base), at(CHAIN.copy));
    return [...Object.values(RAW), ...Object.values(CHAIN)].map(at);
  });

  const MANIFEST = `version: 1
images:
  base:
    path: ${q('out/nbd:x.qcow2')}
    from: { path: ${q(RAW.uni)}, format: raw }
  dash:
    path: ${q('out/-rf.qcow2')}
    from: { path: ${q(RAW.dash)}, format: raw }
    backing: base
  colon:
    path: ${q('out/a:b.qcow2')}
    from: { path: ${q(RAW.colon)}, format: raw }
    backing: base
  uni:
    path: ${q('out/dïsk ✓.qcow2')}
    from: { path: ${q(RAW.help)}, format: raw }
  help:
    path: ${q('out/--help.raw')}
    format: raw
    from: { path: ${q(RAW.help)}, format: raw }
  kept:
    path: ${q('out/-rf kept ✓.qcow2')}
    from: { path: ${q(CHAIN.top)}, format: qcow2 }
    backing: { path: ${q(CHAIN.base)}, format: qcow2 }
  moved:
    path: ${q('out/--moved.qcow2')}
    from: { path: ${q(CHAIN.top)}, format: qcow2 }
    backing: { path: ${q(CHAIN.copy)}, format: qcow2 }
`;

  it('apply builds every image; each presents its source, checks clean, and its backing name opens as a file', async () => {
    const { dir } = ws;
    const at = (p: string) => join(dir, p);
    await writeFile(at('manifest.yaml'), MANIFEST);
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect(applied.stdout).toContain('Apply complete: 7 steps done');
    expect(applied.stderr).not.toMatch(/^\s+at /m);

    // output, its format, its source, the source's format, the stored backing name, the backing file.
    const expected: [string, string, string, string, string | undefined, string | undefined][] = [
      ['out/nbd:x.qcow2', 'qcow2', RAW.uni, 'raw', undefined, undefined],
      ['out/-rf.qcow2', 'qcow2', RAW.dash, 'raw', './nbd:x.qcow2', 'out/nbd:x.qcow2'],
      ['out/a:b.qcow2', 'qcow2', RAW.colon, 'raw', './nbd:x.qcow2', 'out/nbd:x.qcow2'],
      ['out/dïsk ✓.qcow2', 'qcow2', RAW.help, 'raw', undefined, undefined],
      ['out/--help.raw', 'raw', RAW.help, 'raw', undefined, undefined],
      ['out/-rf kept ✓.qcow2', 'qcow2', CHAIN.top, 'qcow2', '../in/nbd:base.qcow2', CHAIN.base],
      ['out/--moved.qcow2', 'qcow2', CHAIN.top, 'qcow2', '../in/a:b copy.qcow2', CHAIN.copy],
    ];
    for (const [out, format, source, sourceFormat, storedName, backingFile] of expected) {
      expect(await compareImages(at(out), format, at(source), sourceFormat), out).toBe(0);
      if (format === 'qcow2') expect(await checkImage(at(out), format), out).toBe(0);
      const info = await imageInfo(at(out), format);
      expect(info['backing-filename'], out).toBe(storedName);
      if (backingFile) {
        expect(info['backing-filename-format'], out).toBe('qcow2');
        // qemu resolves the stored name to the declared file (a file, not an nbd: or a: protocol).
        expect(resolve(info['full-backing-filename'] as string), out).toBe(at(backingFile));
        // The whole chain opens with the stored name, from a working directory elsewhere ('/').
        const chain = JSON.parse(await qemuImg('info', '--backing-chain', '--output=json', '-f', format, at(out)));
        expect(resolve(chain[1].filename), out).toBe(at(backingFile));
      }
    }
    // The overlays store only their own changes, not the template.
    expect(await topLayerDataBytes(at('out/-rf.qcow2'), 'qcow2')).toBe(64 * 1024);
    // Nothing else is left in out/ (no temporary files with these names).
    expect((await readdir(at('out'))).sort()).toEqual(expected.map(([out]) => out.slice('out/'.length)).sort());
    const again = await chainform(dir, 'plan', 'manifest.yaml', '--detailed-exitcode');
    expect(again.exitCode, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toContain('No changes: all 7 images match the manifest.');
  });

  it('re-points an image kept in place at a base whose name has a colon, stored as ./name', async () => {
    const { dir } = ws;
    const at = (p: string) => join(dir, p);
    // A copy the test owns: the manifest reshapes it in place.
    await copyFile(at(CHAIN.top), at('in/-rf in place ✓.qcow2'));
    await writeFile(
      at('manifest.yaml'),
      `version: 1\nimages:\n  top:\n    path: ${q('in/-rf in place ✓.qcow2')}\n    format: qcow2\n    backing: { path: ${q(CHAIN.copy)}, format: qcow2 }\n`,
    );
    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    const info = await imageInfo(at('in/-rf in place ✓.qcow2'), 'qcow2');
    expect(info['backing-filename']).toBe('./a:b copy.qcow2');
    expect(resolve(info['full-backing-filename'] as string)).toBe(at(CHAIN.copy));
    expect(await compareImages(at('in/-rf in place ✓.qcow2'), 'qcow2', at(CHAIN.top), 'qcow2')).toBe(0);
    expect(await checkImage(at('in/-rf in place ✓.qcow2'), 'qcow2')).toBe(0);
    expect((await chainform(dir, 'plan', 'manifest.yaml', '--detailed-exitcode')).exitCode).toBe(0);
  });
});

/** The fields of a qcow2 header that locate its metadata (big-endian, qcow2 spec). */
async function qcow2Layout(file: string): Promise<{ clusterSize: number; l2: number; refcountBlock: number }> {
  const data = await readFile(file);
  const clusterSize = 2 ** data.readUInt32BE(20);
  const l1 = Number(data.readBigUInt64BE(40));
  const refcountTable = Number(data.readBigUInt64BE(48));
  const offsetMask = 0x00fffffffffffe00n;
  return {
    clusterSize,
    l2: Number(data.readBigUInt64BE(l1) & offsetMask),
    refcountBlock: Number(data.readBigUInt64BE(refcountTable)),
  };
}

/** Writes `bytes` at `offset` in place, as `dd conv=notrunc` would. */
async function poke(file: string, offset: number, bytes: number[]): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    await handle.write(Buffer.from(bytes), 0, bytes.length, offset);
  } finally {
    await handle.close();
  }
}

async function sha256(file: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
}

/**
 * Every entry under `dir` (files with size and mtime; files under out/ and .chainform/ with
 * their sha256 too), to prove a refused plan or apply wrote nothing.
 */
async function tree(dir: string): Promise<string[]> {
  const names = (await readdir(dir, { recursive: true })).sort();
  return Promise.all(
    names.map(async (name) => {
      const path = join(dir, name);
      const stat = await lstat(path);
      if (!stat.isFile()) return `${name}/`;
      const guarded = name.startsWith('out/') || name.startsWith('.chainform/');
      return `${name} ${stat.size} ${stat.mtimeMs}${guarded ? ` ${await sha256(path)}` : ''}`;
    }),
  );
}

type Run = (dir: string, ...args: string[]) => Promise<{ exitCode: number; stdout: string; stderr: string }>;

describe('broken images are refused at plan time, clearly, and nothing is written', () => {
  let fixtures = '';
  let removeFixtures: () => Promise<void> = async () => undefined;

  // Built once, copied into each test's workspace (with a prior apply's out/ and .chainform/).
  beforeAll(async () => {
    const folder = await tempFolder();
    fixtures = folder.dir;
    removeFixtures = folder.cleanup;
    const at = (p: string) => join(fixtures, p);
    const qcow2 = async (name: string, ...backing: string[]) => {
      await qemuImg('create', '-q', '-f', 'qcow2', ...backing, at(name), ...(backing.length ? [] : ['4M']));
      await qemuIo('qcow2', at(name), 'write -P 0xaa 0 1M');
    };
    await qcow2('good.qcow2');

    // The "corrupt" incompatible-feature bit (bit 1 of the 8-byte big-endian field at 72).
    await qcow2('corrupt.qcow2');
    await poke(at('corrupt.qcow2'), 79, [0x02]);
    const corrupt = (await imageInfo(at('corrupt.qcow2'), 'qcow2'))['format-specific'] as {
      data: { corrupt: boolean };
    };
    if (!corrupt.data.corrupt) throw new Error('fixture: the corrupt bit did not take');

    // Garbage (unaligned) L1 table offset.
    await qcow2('bad-l1.qcow2');
    await poke(at('bad-l1.qcow2'), 40, [0, 0, 0, 0, 0, 0, 0x12, 0x34]);

    // Truncations: to 100 bytes; in the middle of the L2 table (data clusters past the end);
    // in the middle of the refcount block (L1 and L2 tables past the end).
    await qcow2('short.qcow2');
    await truncate(at('short.qcow2'), 100);
    await qcow2('cut-l2.qcow2');
    await copyFile(at('cut-l2.qcow2'), at('cut-refcounts.qcow2'));
    const layout = await qcow2Layout(at('cut-l2.qcow2'));
    if (!(layout.refcountBlock < layout.l2)) throw new Error('fixture: unexpected qcow2 layout');
    await truncate(at('cut-l2.qcow2'), layout.l2 + layout.clusterSize / 2);
    await truncate(at('cut-refcounts.qcow2'), layout.refcountBlock + layout.clusterSize / 2);
    // Cut in its data: every table stays inside the file, only data clusters are lost.
    await qemuImg('create', '-q', '-f', 'qcow2', at('cut-data.qcow2'), '16M');
    await qemuIo('qcow2', at('cut-data.qcow2'), 'write -P 0xbb 0 8M');
    await truncate(at('cut-data.qcow2'), 2 * 1024 * 1024);

    await qemuImg('create', '-q', '-f', 'raw', at('plain.raw'), '4M');
    await qemuIo('raw', at('plain.raw'), 'write -P 0x11 0 64k');

    // Dangling chains: the backing deleted; and the base two levels down deleted.
    await qcow2('gone.qcow2');
    await qcow2('orphan.qcow2', '-b', 'gone.qcow2', '-F', 'qcow2');
    await rm(at('gone.qcow2'));
    await qcow2('b0.qcow2');
    await qcow2('b1.qcow2', '-b', 'b0.qcow2', '-F', 'qcow2');
    await qcow2('b2.qcow2', '-b', 'b1.qcow2', '-F', 'qcow2');
    await rm(at('b0.qcow2'));

    // Dirty: lazy refcounts, a write, then killed before closing.
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', at('dirty.qcow2'), '4M');
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xaa 0 64k', '-c', 'sigraise 9', at('dirty.qcow2')], {
      reject: false,
    });
    if ((await imageInfo(at('dirty.qcow2'), 'qcow2'))['dirty-flag'] !== true) {
      throw new Error('fixture: the dirty flag is not set');
    }

    await writeFile(at('notes.txt'), 'hello, I am a text file, not a disk image\n');
    await mkdir(at('folder.qcow2'));

    await writeFile(
      at('good.yaml'),
      'version: 1\nimages:\n  good: { path: out/good.qcow2, from: { path: good.qcow2, format: qcow2 } }\n',
    );
    const prior = await chainform(fixtures, 'apply', 'good.yaml', '--yes');
    if (prior.exitCode !== 0) throw new Error(`fixture: apply failed: ${prior.stderr}`);
  });

  afterAll(() => removeFixtures());

  const ws = useWorkspace(async (dir) => {
    await cp(fixtures, dir, { recursive: true, preserveTimestamps: true });
    const names = await readdir(dir, { recursive: true });
    const inputs = [];
    for (const name of names) {
      if (name.startsWith('out') || name.startsWith('.chainform')) continue;
      if ((await lstat(join(dir, name))).isFile()) inputs.push(join(dir, name));
    }
    return inputs;
  });

  /**
   * Writes a one-image manifest, then expects `plan` (and `apply --yes`, which plans first) to
   * exit 1 with a located error that names every file in `names` and matches `problem`, a hint,
   * no stack trace, and no change on disk.
   */
  async function expectRefused(
    image: string,
    names: string[],
    problem: RegExp,
    options: { run?: Run; alsoApply?: boolean } = {},
  ): Promise<void> {
    const { dir } = ws;
    const run = options.run ?? chainform;
    await writeFile(join(dir, 'm.yaml'), `version: 1\nimages:\n  x:\n${image}`);
    const before = await tree(dir);
    const commands = [['plan', 'm.yaml'], ...(options.alsoApply === false ? [] : [['apply', 'm.yaml', '--yes']])];
    // Both at once (plan writes nothing, so they cannot interfere), to keep the suite quick.
    const results = await Promise.all(commands.map((args) => run(dir, ...args)));
    for (const [i, r] of results.entries()) {
      const args = commands[i]!;
      const output = `${r.stdout}\n${r.stderr}`;
      const what = `${args[0]}:\n${output}`;
      expect(r.exitCode, what).toBe(1);
      expect(r.stderr, what).toMatch(/^m\.yaml:\d+:\d+: error: /m);
      for (const name of names) expect(output, what).toContain(name);
      expect(output, what).toMatch(problem);
      expect(output, what).toMatch(/^\s+hint: \S/m);
      // No stack trace, no raw exception from node.
      expect(output, what).not.toMatch(/^\s+at /m);
      expect(output, what).not.toMatch(/\b[A-Z][A-Za-z]*Error\b|\bError:|internal:|node:internal/);
    }
    expect(await tree(dir)).toEqual(before);
  }

  const source = (file: string, format: string) =>
    `    path: out/x.qcow2\n    from: { path: ${q(file)}, format: ${format} }\n`;

  it('a qcow2 marked corrupt in its header', async () => {
    await expectRefused(source('corrupt.qcow2', 'qcow2'), ['corrupt.qcow2'], /corrupt/i);
  });

  it('a qcow2 whose L1 table offset is garbage', async () => {
    await expectRefused(source('bad-l1.qcow2', 'qcow2'), ['bad-l1.qcow2'], /L1 table offset invalid/);
  });

  it('a qcow2 truncated to 100 bytes', async () => {
    await expectRefused(source('short.qcow2', 'qcow2'), ['short.qcow2'], /header too short/);
  });

  it('a qcow2 truncated in the middle of its L2 table', async () => {
    await expectRefused(source('cut-l2.qcow2', 'qcow2'), ['cut-l2.qcow2'], /truncat|end of the file|corrupt/i);
  });

  it('a qcow2 truncated in the middle of its refcount block', async () => {
    await expectRefused(
      source('cut-refcounts.qcow2', 'qcow2'),
      ['cut-refcounts.qcow2'],
      /truncat|end of the file|corrupt/i,
    );
  });

  it('a qcow2 cut in its data clusters, with every table intact', async () => {
    await expectRefused(
      source('cut-data.qcow2', 'qcow2'),
      ['cut-data.qcow2'],
      /is cut short: a cluster in use starts at byte \d+, past the end of the file \(2097152 bytes\) \[image-truncated\]/,
    );
  });

  it('a raw file declared qcow2', async () => {
    await expectRefused(source('plain.raw', 'qcow2'), ['plain.raw'], /not in qcow2 format/);
  });

  it('a qcow2 kept in place but declared raw', async () => {
    await expectRefused(
      '    path: good.qcow2\n    format: raw\n',
      ['good.qcow2'],
      /is a qcow2 image \(by its header\), but the manifest says raw \[format-mismatch\]/,
    );
  });

  it('an overlay whose backing file was deleted', async () => {
    await expectRefused(
      source('orphan.qcow2', 'qcow2'),
      ['orphan.qcow2', 'gone.qcow2'],
      /gone\.qcow2.*No such file or directory/,
    );
  });

  it('a chain whose base two levels down was deleted', async () => {
    await expectRefused(source('b2.qcow2', 'qcow2'), ['b2.qcow2', 'b0.qcow2'], /b0\.qcow2.*No such file or directory/);
  });

  it('a declared base that is itself a broken image', async () => {
    await expectRefused(
      '    path: out/x.qcow2\n    from: { path: good.qcow2, format: qcow2 }\n    backing: { path: bad-l1.qcow2, format: qcow2 }\n',
      ['bad-l1.qcow2'],
      /L1 table offset invalid/,
    );
  });

  it('a qcow2 with the dirty flag set', async () => {
    await expectRefused(source('dirty.qcow2', 'qcow2'), ['dirty.qcow2'], /dirty|not closed cleanly/i);
  });

  it('a text file declared qcow2', async () => {
    await expectRefused(source('notes.txt', 'qcow2'), ['notes.txt'], /not in qcow2 format/);
  });

  it('a directory given as a source, as an image kept in place, and as an output', async () => {
    await expectRefused(source('folder.qcow2', 'qcow2'), ['folder.qcow2'], /is a directory, not an image file/);
    await expectRefused(
      '    path: folder.qcow2\n    format: qcow2\n',
      ['folder.qcow2'],
      /is a directory, not an image file/,
    );
    // As an output: named for what it is, with advice for an output path, not "move the file away".
    await expectRefused(
      '    path: folder.qcow2\n    from: { path: good.qcow2, format: qcow2 }\n',
      ['folder.qcow2'],
      /is a directory, where the manifest makes a new image \[output-exists\][\s\S]*hint: give the image another path, or move the directory away/,
    );
  });

  it('a named pipe as a source is refused before anything opens it (an open would block)', async () => {
    await execa('mkfifo', [join(ws.dir, 'pipe.raw')]);
    await expectRefused(source('pipe.raw', 'raw'), ['pipe.raw'], /is a FIFO \(named pipe\), not an image file/);
  });

  it('an unreadable file (mode 000; as root, plan runs as nobody so that the mode applies)', async () => {
    const { dir } = ws;
    await copyFile(join(dir, 'good.qcow2'), join(dir, 'locked.qcow2'));
    await chmod(join(dir, 'locked.qcow2'), 0o000);
    // Root reads a mode-000 file anyway; nobody (65534) cannot. mkdtemp made the folder 0700.
    const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    await chmod(dir, 0o755);
    const runAs: Run = async (cwd, ...args) => {
      const r = await execa('node', [CLI, '--no-color', ...args], { cwd, reject: false, stdin: 'ignore', ...asUser });
      return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
    };
    // apply is not run as nobody: it would fail on the root-owned .chainform/ first.
    await expectRefused(source('locked.qcow2', 'qcow2'), ['locked.qcow2'], /Permission denied/, {
      run: runAs,
      alsoApply: false,
    });
  });
});

describe('a source declared raw whose file has a qcow2 header', () => {
  const ws = useWorkspace(async (dir) => {
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 'secret.raw'), '4M');
    await qemuIo('raw', join(dir, 'secret.raw'), 'write -P 0x5e 0 4M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'secret.raw', '-F', 'raw', join(dir, 'trojan.qcow2'));
    return [join(dir, 'secret.raw'), join(dir, 'trojan.qcow2')];
  });

  // By design (README: a raw disk may hold any bytes): a warning, and the file is read as raw, so
  // its header's backing link is never followed.
  it('is read as raw bytes with a warning naming the file; the header backing is never followed', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  x: { path: out/x.qcow2, from: { path: trojan.qcow2, format: raw } }\n',
    );
    const plan = await chainform(dir, 'plan', 'm.yaml');
    expect(plan.exitCode, plan.stderr).toBe(0);
    expect(plan.stderr).toContain(
      `m.yaml:3:41: warning: ${join(dir, 'trojan.qcow2')} is declared raw, but its header says qcow2 [raw-has-header]`,
    );
    expect(plan.stderr).toContain('hint: if it is a qcow2 image, declare format: qcow2');
    expect(plan.stdout).toContain(`$ qemu-img convert -p -f raw -O qcow2 ${join(dir, 'trojan.qcow2')} `);
    expect(plan.stdout + plan.stderr).not.toContain('secret.raw');
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);
    const out = join(dir, 'out/x.qcow2');
    expect(await compareImages(out, 'qcow2', join(dir, 'trojan.qcow2'), 'raw')).toBe(0);
    // Read as qcow2, the file would present secret.raw's bytes: the output does not.
    expect(await compareImages(out, 'qcow2', join(dir, 'trojan.qcow2'), 'qcow2')).toBe(1);
    expect((await imageInfo(out, 'qcow2'))['backing-filename']).toBeUndefined();
  });
});
