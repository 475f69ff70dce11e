// A small "full copy of a template" workspace: template.raw (8 MiB, 4 MiB written), full.raw (a
// copy with 64 KiB changed) and m.yaml turning them into a qcow2 base and an overlay.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { qemuImg, qemuIo } from './qemu.js';

/** Makes the files in `dir`; outputs go under `outDir` (relative to the manifest). */
export async function templateAndCopy(dir: string, outDir = '.'): Promise<{ template: string; copy: string }> {
  const template = join(dir, 'template.raw');
  const copy = join(dir, 'full.raw');
  await qemuImg('create', '-q', '-f', 'raw', template, '8M');
  await qemuIo('raw', template, 'write -P 0x11 0 4M');
  await qemuImg('convert', '-f', 'raw', '-O', 'raw', template, copy);
  await qemuIo('raw', copy, 'write -P 0x22 0 64k');
  await writeFile(
    join(dir, 'm.yaml'),
    [
      'version: 1',
      'images:',
      `  base: { path: ${join(outDir, 'base.qcow2')}, from: { path: template.raw, format: raw } }`,
      `  vm: { path: ${join(outDir, 'vm.qcow2')}, from: { path: full.raw, format: raw }, backing: base }`,
      '',
    ].join('\n'),
  );
  return { template, copy };
}
