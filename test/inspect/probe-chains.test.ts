// Inspection of real chains: chainform follows the qcow2 headers itself, then describes each
// chain with one qemu-img process; the header reader agrees with qemu-img on real images.
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadManifest } from '../../src/api.js';
import { type ImageFile, parseQcow2Header, readImageFile } from '../../src/inspect/image-file.js';
import { inspectLayout } from '../../src/inspect/inspect-layout.js';
import { probeChains } from '../../src/inspect/probe-chains.js';
import type { Argv } from '../../src/qemu/commands.js';
import { type CommandRunner, ExecaRunner } from '../../src/qemu/runner.js';
import type { Ledger } from '../../src/state/ledger.js';
import { qcow2Chain, qemuImg, tempFolder } from '../helpers/qemu.js';

const noLedger = (): Ledger => ({ version: 1, outputs: {} });

/** The real runner, keeping every argv it ran. */
function countingRunner(): CommandRunner & { calls: Argv[] } {
  const real = new ExecaRunner();
  const calls: Argv[] = [];
  return {
    calls,
    run(argv, options) {
      calls.push(argv);
      return real.run(argv, options);
    },
  };
}

describe('inspecting real chains', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempFolder());
  });
  afterEach(() => cleanup());

  it('reads a backing name stored past the first 4 KiB, which it reads first, as qemu-img does', async () => {
    await qcow2Chain(dir, ['base', 'top']);
    const top = join(dir, 'top.qcow2');
    const bytes = await readFile(top);
    const name = Buffer.from('base.qcow2');
    expect(bytes.readUInt32BE(16)).toBe(name.length); // backing_file_size
    // Move the name to offset 6000 of the 64 KiB first cluster (qemu accepts it anywhere there).
    bytes.fill(0, Number(bytes.readBigUInt64BE(8)), Number(bytes.readBigUInt64BE(8)) + name.length);
    name.copy(bytes, 6000);
    bytes.writeBigUInt64BE(6000n, 8);
    await writeFile(top, bytes);
    const info = JSON.parse(await qemuImg('info', '--output=json', '-f', 'qcow2', top));
    expect(info['backing-filename']).toBe('base.qcow2');
    expect(readImageFile(top).qcow2).toEqual({ backingName: 'base.qcow2', backingFormat: 'qcow2' });
  });

  it('reads no header extensions past the start of the backing name, as qemu does', () => {
    // A version 2 header whose backing name starts at byte 72, where extensions would start:
    // the name's first bytes read like a data-file extension ("DATA", length 4, "evil").
    const name = Buffer.concat([Buffer.from('DATA'), Buffer.from([0, 0, 0, 4]), Buffer.from('evil')]);
    const header = Buffer.alloc(72 + name.length);
    Buffer.from([0x51, 0x46, 0x49, 0xfb]).copy(header, 0);
    header.writeUInt32BE(2, 4);
    header.writeBigUInt64BE(72n, 8);
    header.writeUInt32BE(name.length, 16);
    header.writeUInt32BE(16, 20);
    name.copy(header, 72);
    expect(parseQcow2Header(header)).toEqual({ backingName: name.toString('utf8') });
  });

  it('reads backing name, backing format and data file from the qcow2 header as qemu-img does', async () => {
    await qcow2Chain(dir, ['base', 'top']);
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'data_file=top.raw', join(dir, 'ext.qcow2'), '4M');
    const top = readImageFile(join(dir, 'top.qcow2'));
    expect(top.claimedFormat).toBe('qcow2');
    expect(top.qcow2).toEqual({ backingName: 'base.qcow2', backingFormat: 'qcow2' });
    expect(top.pastEnd).toBeUndefined();
    expect(readImageFile(join(dir, 'base.qcow2')).qcow2?.backingName).toBeUndefined();
    expect(readImageFile(join(dir, 'ext.qcow2')).qcow2?.dataFileName).toBe('top.raw');
    expect(readImageFile(join(dir, 'nothing.qcow2')).fingerprint).toBeNull();
    expect(readImageFile(dir).kind).toBe('directory');
  });

  it('spends one qemu-img process on a chain of three images, and reads every layer', async () => {
    await qcow2Chain(dir, ['a', 'b', 'c']);
    await writeFile(
      join(dir, 'm.yaml'),
      [
        'version: 1',
        'images:',
        '  a: { path: a.qcow2 }',
        '  b: { path: b.qcow2, backing: a }',
        '  c: { path: c.qcow2, backing: b }',
        '',
      ].join('\n'),
    );
    const loaded = await loadManifest(join(dir, 'm.yaml'));
    if (!loaded.ok) throw new Error(JSON.stringify(loaded.diagnostics));
    const runner = countingRunner();
    const { layout, diagnostics } = await inspectLayout(loaded.manifest, noLedger(), runner);
    expect(diagnostics).toEqual([]);
    expect(runner.calls).toEqual([
      ['qemu-img', 'info', '--output=json', '--backing-chain', '-f', 'qcow2', join(dir, 'c.qcow2')],
    ]);
    const chain = layout.files.get(join(dir, 'c.qcow2'))?.chain?.map((layer) => layer.path);
    expect(chain).toEqual(['c', 'b', 'a'].map((name) => join(dir, `${name}.qcow2`)));
    expect(layout.files.get(join(dir, 'b.qcow2'))?.chain?.length).toBe(2);
  });

  it('names a loop of backing links, with the files in it, instead of following it 256 times', async () => {
    await qcow2Chain(dir, ['a', 'b']);
    await qemuImg('rebase', '-u', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', join(dir, 'a.qcow2'));
    await writeFile(join(dir, 'm.yaml'), 'version: 1\nimages:\n  b: { path: b.qcow2 }\n');
    const loaded = await loadManifest(join(dir, 'm.yaml'));
    if (!loaded.ok) throw new Error(JSON.stringify(loaded.diagnostics));
    const runner = countingRunner();
    const { diagnostics } = await inspectLayout(loaded.manifest, noLedger(), runner);
    const [b, a] = [join(dir, 'b.qcow2'), join(dir, 'a.qcow2')];
    expect(diagnostics.map((d) => [d.code, d.message])).toEqual([
      ['backing-loop', `the backing chain of ${b} loops back on itself: ${b} -> ${a} -> ${b}`],
    ]);
    expect(runner.calls.length).toBeLessThanOrEqual(3);
  });

  it('names a loop whose backing names qemu never normalises ("./a.qcow2" on a.qcow2 itself)', async () => {
    await qcow2Chain(dir, ['a']);
    await qemuImg('rebase', '-u', '-f', 'qcow2', '-b', './a.qcow2', '-F', 'qcow2', join(dir, 'a.qcow2'));
    await writeFile(join(dir, 'm.yaml'), 'version: 1\nimages:\n  a: { path: a.qcow2 }\n');
    const loaded = await loadManifest(join(dir, 'm.yaml'));
    if (!loaded.ok) throw new Error(JSON.stringify(loaded.diagnostics));
    const { diagnostics } = await inspectLayout(loaded.manifest, noLedger(), countingRunner());
    const a = join(dir, 'a.qcow2');
    expect(diagnostics.map((d) => [d.code, d.message])).toEqual([
      ['backing-loop', `the backing chain of ${a} loops back on itself: ${a} -> ${a}`],
    ]);
  });

  it('names the layer that another process holds open for writing, not only the chain', async () => {
    await qcow2Chain(dir, ['a', 'b']);
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  a: { path: a.qcow2 }\n  b: { path: b.qcow2, backing: a }\n',
    );
    const loaded = await loadManifest(join(dir, 'm.yaml'));
    if (!loaded.ok) throw new Error(JSON.stringify(loaded.diagnostics));
    const socket = join(dir, 'nbd.sock');
    const server = execa('qemu-nbd', ['-f', 'qcow2', '-k', socket, join(dir, 'a.qcow2')], { reject: false });
    try {
      for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 20));
      const runner = countingRunner();
      const { diagnostics } = await inspectLayout(loaded.manifest, noLedger(), runner);
      expect(diagnostics.map((d) => [d.code, d.message.split(' ')[0]])).toEqual([
        ['image-in-use', join(dir, 'a.qcow2')],
      ]);
      // The chain probe failed on the lock, so each file was then probed on its own.
      expect(runner.calls[0]).toContain('--backing-chain');
    } finally {
      server.kill('SIGTERM');
      await server;
    }
  });

  it('reads a chain layer by layer when a header leaves out the backing format', async () => {
    await qcow2Chain(dir, ['a', 'b']);
    // An old image: the backing link without a recorded format (qemu would probe it). qemu-img
    // 7.2 no longer writes such images, so the format extension is renamed to one qemu ignores.
    const header = await readFile(join(dir, 'b.qcow2'));
    const at = header.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca]));
    expect(at).toBeGreaterThan(0);
    header.writeUInt32BE(0x1234_5678, at);
    await writeFile(join(dir, 'b.qcow2'), header);
    expect(readImageFile(join(dir, 'b.qcow2')).qcow2?.backingFormat).toBeUndefined();
    await writeFile(join(dir, 'm.yaml'), 'version: 1\nimages:\n  b: { path: b.qcow2 }\n');
    const loaded = await loadManifest(join(dir, 'm.yaml'));
    if (!loaded.ok) throw new Error(JSON.stringify(loaded.diagnostics));
    const runner = countingRunner();
    const { diagnostics } = await inspectLayout(loaded.manifest, noLedger(), runner);
    expect(diagnostics.map((d) => d.code)).toEqual(['backing-format-missing']);
    expect(runner.calls.some((argv) => argv.includes('--backing-chain'))).toBe(false);
    expect(runner.calls.filter((argv) => argv.includes('-U')).length).toBeGreaterThanOrEqual(2);
  });
});

describe('chains longer than inspection follows', () => {
  /** Header facts of a made-up chain /c/l0 <- /c/l1 <- ... (no files: probeChains takes fileOf). */
  const layerFile = (i: number): ImageFile => ({
    fingerprint: { dev: '1', ino: String(i + 1), size: '1', mtimeNs: '1' },
    kind: 'file',
    claimedFormat: 'qcow2',
    qcow2: i === 0 ? {} : { backingName: `l${i - 1}`, backingFormat: 'qcow2' },
  });
  const fileOf = (path: string) => layerFile(Number(/l(\d+)$/.exec(path)?.[1]));
  /** Answers a chain probe of /c/lN with its N + 1 layers, as qemu-img would. */
  const probeRunner: CommandRunner = {
    async run(argv) {
      const top = Number(/l(\d+)$/.exec(argv.at(-1) ?? '')?.[1]);
      const layers = [];
      for (let i = top; i >= 0; i--) {
        layers.push({
          filename: `/c/l${i}`,
          format: 'qcow2',
          'virtual-size': 1,
          'actual-size': 1,
          ...(i > 0 ? { 'backing-filename': `l${i - 1}`, 'backing-filename-format': 'qcow2' } : {}),
          'format-specific': { type: 'qcow2', data: { compat: '1.1', 'lazy-refcounts': false, corrupt: false } },
        });
      }
      return { exitCode: 0, stdout: JSON.stringify(layers), stderr: '' };
    },
  };

  it('leaves a chain over 256 links to the layer-by-layer reading whatever order the roots come in', async () => {
    const top = { path: '/c/l299', format: 'qcow2' };
    const middle = { path: '/c/l100', format: 'qcow2' };
    for (const roots of [
      [top, middle],
      [middle, top],
    ]) {
      const probes = await probeChains(roots, fileOf, probeRunner);
      // 300 links: read-chain.ts reports it (chain-too-deep); 101 links are fine.
      expect(probes.chain(top.path, 'qcow2')).toBeUndefined();
      expect(probes.chain(middle.path, 'qcow2')?.length).toBe(101);
    }
  });
});
