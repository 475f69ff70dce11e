// Issue 3: `chainform import` captures an existing layout; `--linearize` writes the manifest
// that turns every internal snapshot into its own external link.

import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  chainform,
  checkImage,
  checksums,
  compareImages,
  qemuImg,
  qemuIo,
  topLayerDataBytes,
} from '../helpers/qemu.js';
import { LINKS, makeRfcChain } from '../helpers/rfc-chain.js';
import { useWorkspace } from '../helpers/workspace.js';

const ws = useWorkspace(makeRfcChain);

describe('chainform import', () => {
  it('captures the layout so that plan on it is empty, with snapshots as comments', async () => {
    const { dir } = ws;
    const r = await chainform(dir, 'import', 'imageC.qcow2', '--format', 'qcow2', '-o', 'layout.yaml');
    expect(r.exitCode, r.stderr).toBe(0);
    const text = await readFile(join(dir, 'layout.yaml'), 'utf8');
    const schema = /^# yaml-language-server: \$schema=(\S+)\n/.exec(text)?.[1];
    expect(schema && existsSync(resolve(dir, schema))).toBe(true);
    expect(text).toContain('# internal snapshots: sn0 (id 1, ');
    expect(text).toMatch(/imageB:\n {4}path: imageB\.qcow2\n {4}format: qcow2\n {4}backing: imageA\n/);
    expect((await chainform(dir, 'validate', 'layout.yaml')).exitCode).toBe(0);
    const plan = await chainform(dir, 'plan', 'layout.yaml', '--detailed-exitcode');
    expect(plan.exitCode, plan.stdout + plan.stderr).toBe(0);
    expect(plan.stdout).toContain('No changes: all 3 images match the manifest.');
  });

  it('keeps absolute backing names absolute and copes with spaces and colons in names', async () => {
    const { dir } = ws;
    await mkdir(join(dir, 'odd dir'));
    const base = join(dir, 'odd dir', 'base: v1.qcow2');
    const top = join(dir, 'odd dir', 'top disk.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', base, '16M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    await qemuIo('qcow2', top, 'write -P 0x09 0 64k');
    const r = await chainform(dir, 'import', 'odd dir/top disk.qcow2', '-f', 'qcow2', '-o', 'odd.yaml');
    expect(r.exitCode, r.stderr).toBe(0);
    const manifest = parse(await readFile(join(dir, 'odd.yaml'), 'utf8'));
    expect(manifest.images['base-v1'].path).toBe(base);
    expect(manifest.images['top-disk'].path).toBe('odd dir/top disk.qcow2');
    const plan = await chainform(dir, 'plan', 'odd.yaml', '--detailed-exitcode');
    expect(plan.exitCode, plan.stdout + plan.stderr).toBe(0);
  });

  it('--linearize writes a manifest that validates and applies into the RFC chain', async () => {
    const { dir } = ws;
    const r = await chainform(
      dir,
      'import',
      '--linearize',
      '--out-dir',
      'export',
      'imageC.qcow2',
      '-f',
      'qcow2',
      '-o',
      'linear.yaml',
    );
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await chainform(dir, 'validate', 'linear.yaml')).stdout).toBe('linear.yaml: valid (7 images)');
    const applied = await chainform(dir, 'apply', 'linear.yaml', '--yes', '--jobs', '2');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    for (const link of LINKS) {
      const id = link.id;
      const out = join(dir, 'export', `${id}.qcow2`);
      const reference = join(dir, `${id}.ref.raw`);
      const select = link.snapshot ? ['-l', `snapshot.name=${link.snapshot}`] : [];
      await qemuImg('convert', '-f', 'qcow2', ...select, '-O', 'raw', join(dir, `${link.image}.qcow2`), reference);
      expect(await compareImages(out, 'qcow2', reference, 'raw'), id).toBe(0);
      expect(await checkImage(out, 'qcow2'), id).toBe(0);
      expect(await topLayerDataBytes(out, 'qcow2'), id).toBe(link.dataBytes);
    }
    expect((await chainform(dir, 'plan', 'linear.yaml', '--detailed-exitcode')).exitCode).toBe(0);
  });

  it('refuses to overwrite a file or an input, a missing folder, and --linearize without --out-dir', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'taken.yaml'), 'mine\n');
    const taken = await chainform(dir, 'import', 'imageC.qcow2', '-f', 'qcow2', '-o', 'taken.yaml');
    expect(taken.exitCode).toBe(1);
    expect(taken.stderr).toContain('taken.yaml exists; pass --force to overwrite it');
    expect(await readFile(join(dir, 'taken.yaml'), 'utf8')).toBe('mine\n');
    const clash = await chainform(dir, 'import', '--linearize', '--out-dir', '.', 'imageC.qcow2', '-f', 'qcow2');
    expect(clash.exitCode).toBe(1);
    expect(clash.stderr).toContain('--out-dir would put a new link over an input image');
    const missing = await chainform(dir, 'import', 'imageC.qcow2', '-f', 'qcow2', '-o', 'no/such/dir/m.yaml');
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain('the folder of no/such/dir/m.yaml does not exist');
    await mkdir(join(dir, 'export'));
    const link = `export/${LINKS[0]?.id}.qcow2`;
    const onLink = await chainform(
      dir,
      'import',
      '--linearize',
      '--out-dir',
      'export',
      'imageC.qcow2',
      '-f',
      'qcow2',
      '-o',
      link,
    );
    expect(onLink.exitCode).toBe(1);
    expect(onLink.stderr).toContain(`the manifest would be written where a new link goes: ${join(dir, link)}`);
    expect(existsSync(join(dir, link))).toBe(false);
    const noDir = await chainform(dir, 'import', '--linearize', 'imageC.qcow2');
    expect(noDir.exitCode).toBe(1);
    expect(noDir.stderr).toContain('--linearize needs --out-dir DIR');
  });

  it('names the manifest file --out, as plan names its saved plan, and still takes --output', async () => {
    const { dir } = ws;
    const names: [flag: string, file: string][] = [
      ['--out', 'by-out.yaml'],
      ['--output', 'by-output.yaml'],
    ];
    for (const [flag, file] of names) {
      const r = await chainform(dir, 'import', 'imageC.qcow2', '-f', 'qcow2', flag, file);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stderr).toContain(`wrote ${file}`);
      expect(await readFile(join(dir, file), 'utf8')).toContain('imageC.qcow2');
    }
    const both = await chainform(dir, 'import', 'imageC.qcow2', '-f', 'qcow2', '--out', 'a.yaml', '--output', 'b.yaml');
    expect(both.exitCode).toBe(1);
    expect(both.stderr).toContain("option '--output <file>' cannot be used with option '-o, --out <file>'");
    await mkdir(join(dir, 'folder.yaml'));
    const folder = await chainform(dir, 'import', 'imageC.qcow2', '-f', 'qcow2', '--out', 'folder.yaml', '--force');
    expect(folder.exitCode).toBe(1);
    expect(folder.stderr).toBe(
      'error: folder.yaml is not a plain file (a folder, a symlink or a device): name a file for the manifest (nothing was written)',
    );
    // --force replaces an earlier manifest only: never an image of the chains read (a qcow2 one,
    // a raw one without a header), nor any other file; and a file where a folder should be is
    // named, not a crash.
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 'r.raw'), '1M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'r.raw', '-F', 'raw', join(dir, 'on-raw.qcow2'));
    const images = [join(dir, 'imageC.qcow2'), join(dir, 'r.raw')];
    const before = await checksums(images);
    const overwrites: [top: string, over: string][] = [
      ['imageC.qcow2', 'imageC.qcow2'],
      ['on-raw.qcow2', 'r.raw'],
    ];
    for (const [top, over] of overwrites) {
      const r = await chainform(dir, 'import', top, '-f', 'qcow2', '--out', over, '--force');
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(
        `error: ${over} is not a manifest (a YAML mapping with version and images): --force replaces only an earlier manifest`,
      );
    }
    expect(await checksums(images)).toEqual(before);
    // Text that merely has such lines is no manifest either.
    await writeFile(join(dir, 'notes.md'), '# Notes\n\n```yaml\nversion: 1\nimages:\n```\n\nSee: above\n- and: [\n');
    const notes = await chainform(dir, 'import', 'imageC.qcow2', '-f', 'qcow2', '--out', 'notes.md', '--force');
    expect(notes.exitCode).toBe(1);
    expect(await readFile(join(dir, 'notes.md'), 'utf8')).toContain('# Notes');
    // A raw disk whose guest wrote manifest-like text: still one of the images read.
    await writeFile(join(dir, 'guest.raw'), `version: 1\nimages:\n${'#'.repeat(65535)}\n`);
    const guest = await chainform(dir, 'import', 'guest.raw', '-f', 'raw', '--out', 'guest.raw', '--force');
    expect(guest.exitCode).toBe(1);
    expect(guest.stderr).toContain(
      `the manifest would be written over ${join(dir, 'guest.raw')}, a file of the chains read`,
    );
    const replaced = await chainform(dir, 'import', 'imageC.qcow2', '-f', 'qcow2', '--out', 'by-out.yaml', '--force');
    expect(replaced.exitCode, replaced.stderr).toBe(0);
    const underFile = await chainform(dir, 'import', 'imageC.qcow2', '-f', 'qcow2', '--out', 'imageC.qcow2/m.yaml');
    expect(underFile.exitCode).toBe(1);
    expect(underFile.stderr).toContain('error: the folder of imageC.qcow2/m.yaml does not exist');
    const stray = await chainform(dir, 'import', 'imageC.qcow2', '-f', 'qcow2', '--out-dir', 'links');
    expect(stray.exitCode).toBe(1);
    expect(stray.stderr).toContain('--out-dir is the folder for the new links of --linearize');
    expect(await readdir(dir)).not.toContain('a.yaml');
    expect(await readdir(dir)).not.toContain('b.yaml');
    const help = await chainform(dir, 'import', '--help');
    expect(help.stdout).toContain('-o, --out <file>');
    expect(help.stdout).not.toContain('--output');
  });
});
