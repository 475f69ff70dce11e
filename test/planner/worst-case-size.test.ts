// The qcow2 worst case that lets `apply --quiet` skip `qemu-img measure` must never be below what
// qemu-img itself says a fully allocated image takes (real qemu-img measure --size, and a real
// fully written image), and must stay close enough to it to be of use.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Options } from '../../src/manifest/manifest.generated.js';
import { qcow2WorstCaseBytes } from '../../src/planner/worst-case-size.js';
import { MiB, qemuImg, qemuIo, tempFolder } from '../helpers/qemu.js';

/** `-o` text of creation options. */
const optionText = (options: Options) =>
  Object.entries(options)
    .map(([key, value]) => `${key}=${value === true ? 'on' : value}`)
    .join(',');

const CONFIGURATIONS: Options[] = [
  {},
  { cluster_size: 512 },
  { cluster_size: 512, refcount_bits: 64 },
  { cluster_size: 2 * MiB },
  { cluster_size: 65536, extended_l2: true },
  { cluster_size: 16384, extended_l2: true, refcount_bits: 64 },
  { cluster_size: 65536, refcount_bits: 1 },
];
const SIZES = [MiB, 1024 * MiB, 100 * 1024 * MiB];

describe('qcow2WorstCaseBytes', () => {
  for (const options of CONFIGURATIONS) {
    it(`covers qemu-img measure's fully-allocated figure (${optionText(options) || 'defaults'})`, async () => {
      for (const size of SIZES) {
        const args = ['measure', '--output=json', '-O', 'qcow2', '--size', String(size)];
        const text = optionText(options);
        const measured = JSON.parse(await qemuImg(...args, ...(text ? ['-o', text] : [])));
        const full = measured['fully-allocated'] as number;
        const bound = qcow2WorstCaseBytes(size, options);
        expect(bound, `${size} bytes`).toBeGreaterThanOrEqual(full);
        expect(bound, `${size} bytes`).toBeLessThanOrEqual(full * 1.1 + 32 * MiB);
      }
    });
  }

  it('covers a real convert of a fully written image, with preallocation=full too', async () => {
    const { dir, cleanup } = await tempFolder();
    try {
      const source = join(dir, 'full.raw');
      await qemuImg('create', '-q', '-f', 'raw', source, '16M');
      await qemuIo('raw', source, 'write -P 0x5a 0 16M');
      const configurations: Options[] = [
        { cluster_size: 512, refcount_bits: 64 },
        { cluster_size: 65536, preallocation: 'full' },
      ];
      for (const options of configurations) {
        const out = join(dir, `out-${optionText(options)}.qcow2`);
        await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', '-o', optionText(options), source, out);
        const onDisk = Number((await stat(out)).blocks) * 512;
        expect(qcow2WorstCaseBytes(16 * MiB, options)).toBeGreaterThanOrEqual(Math.max(onDisk, (await stat(out)).size));
      }
    } finally {
      await cleanup();
    }
  });
});
