// Reads the chains of the images given to `chainform import`: read-only, one qemu-img process
// per chain. A format not given is detected by qemu-img once and reported.
import { resolve } from 'node:path';
import { type Diagnostic, warning } from '../diagnostics/diagnostic.js';
import { recordedSnapshotSizes } from '../inspect/qcow2-delta.js';
import { detectFormat, readChain } from '../inspect/read-chain.js';
import { resizeCommand } from '../qemu/commands.js';
import type { ImageInfo } from '../qemu/image-info.js';
import type { CommandRunner } from '../qemu/runner.js';

/** One image file of an imported layout, with the layer below it. */
export interface ImportedLayer {
  /** Absolute path. */
  path: string;
  info: ImageInfo;
  /** Absolute path of its backing file, if any. */
  backing: string | undefined;
  /** True when some overlay stores its name as an absolute path (the manifest keeps it so). */
  referencedAbsolute: boolean;
}

/** The layers of all chains, each file once, every backing before the images on top of it. */
export interface ImportedLayout {
  layers: ImportedLayer[];
  /** The top layer of each chain given, in the order given. */
  tops: string[];
}

/** Inspects the chain of every image; diagnostics explain what could not be read. */
export async function inspectChains(
  images: readonly string[],
  format: string | undefined,
  runner: CommandRunner,
): Promise<{ layout: ImportedLayout; diagnostics: Diagnostic[] }> {
  const diagnostics: Diagnostic[] = [];
  const byPath = new Map<string, ImportedLayer>();
  const order: string[] = [];
  const tops: string[] = [];
  for (const image of images) {
    const path = resolve(image);
    let topFormat = format;
    topFormat ??= await detectFormat(path, runner, diagnostics, {
      pinHint: () => 'pass --format to state it; detection trusts the header, which a guest can write into a raw disk',
    });
    if (!topFormat) continue;
    const chain = await readChain(path, topFormat, runner, diagnostics);
    if (!chain) continue;
    tops.push(resolve(chain[0]?.filename ?? path));
    const chainOrder: string[] = [];
    chain.forEach((info, i) => {
      const layerPath = resolve(info.filename);
      const below = chain[i + 1];
      const known = byPath.get(layerPath);
      if (!known) {
        byPath.set(layerPath, {
          path: layerPath,
          info,
          backing: below ? resolve(below.filename) : undefined,
          referencedAbsolute: false,
        });
        chainOrder.unshift(layerPath);
      }
    });
    order.push(...chainOrder.filter((p) => !order.includes(p)));
  }
  // A backing some overlay names by an absolute path keeps an absolute path in the manifest.
  for (const layer of byPath.values()) {
    if (layer.info.backingName?.startsWith('/') && layer.backing) {
      const below = byPath.get(layer.backing);
      if (below) below.referencedAbsolute = true;
    }
  }
  return { layout: { layers: order.map((p) => byPath.get(p) as ImportedLayer), tops }, diagnostics };
}

/**
 * Warnings for internal snapshots taken when the disk was larger than its image is now: a
 * linearised manifest has a link for each, and `plan` refuses them (snapshot-past-image-end),
 * since qemu-img reads a snapshot at the image's current size. Said at import, before anyone
 * commits the manifest.
 */
export function snapshotsPastImageEnd(layout: ImportedLayout): Diagnostic[] {
  const found: Diagnostic[] = [];
  for (const { path, info } of layout.layers) {
    if (info.format !== 'qcow2' || info.snapshots.length === 0) continue;
    const sizes = recordedSnapshotSizes(path);
    if (typeof sizes === 'string') continue;
    for (const snapshot of info.snapshots) {
      const recorded = sizes.get(snapshot.id);
      if (recorded === undefined || recorded <= info.virtualSize) continue;
      found.push(
        warning(
          'snapshot-past-image-end',
          `snapshot "${snapshot.name}" (id ${snapshot.id}) of ${path} was taken when the disk was ${recorded} bytes, but the image is now ${info.virtualSize} bytes: plan will refuse its link, since qemu-img reads a snapshot at the image's current size`,
          {
            hint: `grow the image back first (${resizeCommand({ image: path, format: 'qcow2', size: recorded, shrink: false }).join(' ')}; on a copy if it must stay as it is), or drop the link from the manifest`,
          },
        ),
      );
    }
  }
  return found;
}
