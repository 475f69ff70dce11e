// The reference parse (yaml) runs with process.env swapped for a plain copy (yaml reads it per token):
// the real environment must be back afterwards, also when the parser gives up. loadManifestFile
// refuses files that cannot be a manifest before reading them.
import { truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { loadManifestFile, parseManifestText, parseWithReference } from '../../src/manifest/load-manifest.js';
import { tempFolder } from '../helpers/qemu.js';

describe('parseManifestText', () => {
  it('puts the real process.env back after a parse, a located one, and one that overflows the stack', () => {
    const env = process.env;
    const text = 'version: 1\nimages:\n  a: { path: a.qcow2 }\n';
    expect(parseWithReference('/m.yaml', text).ok).toBe(true);
    expect(process.env).toBe(env);
    // Read by the fast path: yaml parses it when a location is first asked for.
    const parsed = parseManifestText('/m.yaml', text);
    expect(parsed.ok && parsed.source.document.errors).toEqual([]);
    expect(process.env).toBe(env);
    const tooDeep = parseManifestText('/m.yaml', `a:\n  ${'- '.repeat(3000)}x\n`);
    expect(tooDeep.ok || tooDeep.diagnostics.map((d) => d.code)).toEqual(['yaml-too-deep']);
    expect(process.env).toBe(env);
  });
});

describe('loadManifestFile', () => {
  it('refuses a file too large to be a manifest (a disk image) without reading it, and a FIFO without opening it', async () => {
    const { dir, cleanup } = await tempFolder();
    try {
      const image = join(dir, 'disk.raw');
      await writeFile(image, '');
      await truncate(image, 2 * 1024 ** 3); // sparse: 2 GiB that would not fit in a string
      const big = await loadManifestFile(image);
      expect(big.ok || big.diagnostics.map((d) => d.code)).toEqual(['manifest-too-large']);
      const fifo = join(dir, 'm.yaml');
      await execa('mkfifo', [fifo]);
      const pipe = await loadManifestFile(fifo);
      expect(pipe.ok || pipe.diagnostics.map((d) => d.message)).toEqual([
        `cannot read manifest ${fifo}: it is not a regular file`,
      ]);
    } finally {
      await cleanup();
    }
  });
});
