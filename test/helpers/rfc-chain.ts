// The internal-snapshot RFC's example: imageA(sn0) <- imageB(sn0, sn1) <- imageC(sn0), made with
// qemu-img/qemu-io: patterns at distinct offsets, zero writes, snapshots at several points.
import { join } from 'node:path';
import { MiB, qemuImg, qemuIo } from './qemu.js';

/** One link of the linear chain: its id, the image and snapshot it stands for, and its delta. */
export interface Link {
  id: string;
  image: 'imageA' | 'imageB' | 'imageC';
  snapshot?: string;
  /** Bytes of data the link must store itself (what differs from the link below). */
  dataBytes: number;
}

/** The links of the linear chain, bottom first, with the data each one changes. */
export const LINKS: readonly Link[] = [
  { id: 'imageA_sn0', image: 'imageA', snapshot: 'sn0', dataBytes: 16 * MiB },
  { id: 'imageA', image: 'imageA', dataBytes: 1 * MiB },
  { id: 'imageB_sn0', image: 'imageB', snapshot: 'sn0', dataBytes: 2 * MiB },
  { id: 'imageB_sn1', image: 'imageB', snapshot: 'sn1', dataBytes: 1 * MiB },
  { id: 'imageB', image: 'imageB', dataBytes: 1 * MiB },
  { id: 'imageC_sn0', image: 'imageC', snapshot: 'sn0', dataBytes: 1 * MiB },
  // imageC's active layer writes 1 MiB of data and zeroes 1 MiB of base data (a zero cluster).
  { id: 'imageC', image: 'imageC', dataBytes: 1 * MiB },
];

async function snapshot(file: string, name: string): Promise<void> {
  await qemuImg('snapshot', '-c', name, '--image-opts', `driver=qcow2,file.filename=${file}`);
}

/** Builds the three images in `dir`; returns their paths. */
export async function makeRfcChain(dir: string): Promise<string[]> {
  const a = join(dir, 'imageA.qcow2');
  const b = join(dir, 'imageB.qcow2');
  const c = join(dir, 'imageC.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', a, '64M');
  await qemuIo('qcow2', a, 'write -P 0x01 0 16M');
  await snapshot(a, 'sn0');
  await qemuIo('qcow2', a, 'write -P 0x02 1M 1M');
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'imageA.qcow2', '-F', 'qcow2', b);
  await qemuIo('qcow2', b, 'write -P 0x03 4M 2M');
  await snapshot(b, 'sn0');
  await qemuIo('qcow2', b, 'write -P 0x04 8M 1M');
  await snapshot(b, 'sn1');
  await qemuIo('qcow2', b, 'write -P 0x05 12M 1M');
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'imageB.qcow2', '-F', 'qcow2', c);
  await qemuIo('qcow2', c, 'write -P 0x06 20M 1M');
  await snapshot(c, 'sn0');
  await qemuIo('qcow2', c, 'write -P 0x07 24M 1M', 'write -z 2M 1M');
  return [a, b, c];
}

/** A manifest for the linear chain under `outDir` (relative to the manifest's folder). */
export function linearManifest(outDir: string): string {
  const lines = ['version: 1', 'images:'];
  LINKS.forEach((link, i) => {
    const below = i > 0 ? LINKS[i - 1]?.id : undefined;
    const from = `{ path: ${link.image}.qcow2, format: qcow2${link.snapshot ? `, snapshot: ${link.snapshot}` : ''} }`;
    lines.push(
      `  ${link.id}: { path: ${outDir}/${link.id}.qcow2, from: ${from}${below ? `, backing: ${below}` : ''} }`,
    );
  });
  return `${lines.join('\n')}\n`;
}
