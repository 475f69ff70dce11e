// `apply --verify`, and the gate before anything is retired: every image with a source is compared
// with it (`qemu-img compare`; an internal snapshot through a read-only qemu-nbd export), and
// every qcow2 image is checked (`qemu-img check`). Read-only: nothing is repaired or rewritten.
import { join } from 'node:path';
import type { ResolvedImage, ResolvedManifest } from '../manifest/resolve-manifest.js';
import { findSnapshot } from '../planner/find-snapshot.js';
import {
  type Argv,
  checkCommand,
  compareCommand,
  compareWithExportCommand,
  layerInfoCommand,
  snapshotExportCommand,
} from '../qemu/commands.js';
import { parseImageInfo } from '../qemu/image-info.js';
import { qemuMessage } from '../qemu/messages.js';
import { fingerprintOf } from '../state/fingerprint.js';
import type { StepEffects } from './effects.js';

/** What verifying one image found. */
export interface ImageVerification {
  image: string;
  path: string;
  ok: boolean;
  /** In words: "matches its source, check clean", or what is wrong. */
  detail: string;
}

/** Exit codes of `qemu-img compare` and `qemu-img check`. */
const SAME = 0;
const DIFFERENT = 1;
const LEAKS_ONLY = 3;

/** A problem, '' when it matches, or a note when there is nothing to compare with. */
async function compareWithSource(
  image: ResolvedImage,
  manifest: ResolvedManifest,
  effects: StepEffects,
): Promise<string | { note: string } | null> {
  const source = image.source;
  if (!source) return null;
  if (image.size !== undefined && image.shrink) return { note: 'shrunk, so not compared with its source' };
  if (manifest.retire.some((r) => r.path === source.path) && !(await fingerprintOf(source.path))) {
    return { note: 'its source is retired, so not compared' };
  }
  const format = source.format;
  const run = (argv: Argv) => effects.run(argv);
  const info = await run(layerInfoCommand(source.path, format));
  const sourceLayer = info.exitCode === 0 ? parseImageInfo(info.stdout)[0] : undefined;
  if (!sourceLayer) return `its source cannot be read: ${qemuMessage(info.stderr)}`;
  const sized = await sizeVerdict(image, sourceLayer.virtualSize, effects);
  if (source.snapshot === undefined) {
    const result = await run(compareCommand({ a: image.path, aFormat: image.format, b: source.path, bFormat: format }));
    return compareVerdict(result.exitCode, result.stderr) || sized;
  }
  const choice = findSnapshot(image, sourceLayer.snapshots);
  if (!choice.ok) return `its source snapshot cannot be found: ${choice.diagnostic.message}`;
  const runtime = await effects.openRuntime();
  const socket = join(runtime, 'verify.sock');
  try {
    const helper = await effects.startHelper(
      snapshotExportCommand({ image: source.path, format, snapshot: choice.selector, socket }),
      socket,
    );
    try {
      const result = await run(compareWithExportCommand({ a: image.path, aFormat: image.format, socket }));
      return compareVerdict(result.exitCode, result.stderr) || sized;
    } finally {
      await helper.stop().catch(() => undefined);
    }
  } finally {
    await effects.closeRuntime(runtime);
  }
}

/** qemu gives every image a whole number of 512-byte sectors: a 1000-byte raw file reads as 1024. */
const SECTOR = 512;
/**
 * The largest cylinder of a vpc (VHD) disk geometry, 16 heads of 255 sectors: qemu-img makes a
 * vpc image that many bytes larger at most (a 1 GiB source gives 1,073,995,776 bytes).
 */
const VPC_CYLINDER_MAX = 16 * 255 * SECTOR;

/**
 * '' when the image has the virtual size the manifest asks for (its `size`, else its source's),
 * or the problem. `qemu-img compare` alone cannot tell: without `-s` it takes what lies past the
 * end of the smaller image as zeros, so a copy cut to the last non-zero byte of its source
 * compares "identical". A snapshot reads at the image's current size, as the planner takes it.
 */
async function sizeVerdict(image: ResolvedImage, sourceSize: number, effects: StepEffects): Promise<string> {
  const info = await effects.run(layerInfoCommand(image.path, image.format));
  const actual = info.exitCode === 0 ? parseImageInfo(info.stdout)[0]?.virtualSize : undefined;
  if (actual === undefined) return `cannot be read: ${qemuMessage(info.stderr)}`;
  const expected = Math.ceil((image.size ?? sourceSize) / SECTOR) * SECTOR;
  if (actual === expected) return '';
  // qemu-img sizes a vpc image in whole cylinders of its disk geometry, rounding up.
  if (image.format === 'vpc' && actual > expected && actual - expected < VPC_CYLINDER_MAX) return '';
  const wanted = image.size !== undefined ? 'the manifest asks for' : 'its source has';
  return `is ${actual} bytes (virtual size), but ${wanted} ${expected}`;
}

function compareVerdict(exitCode: number, stderr: string): string {
  if (exitCode === SAME) return '';
  if (exitCode === DIFFERENT) return 'does NOT match its source';
  return `cannot be compared with its source: ${qemuMessage(stderr)}`;
}

/** Compares and checks every image of the manifest; `ok` is false when any is wrong. */
export async function verifyLayout(
  manifest: ResolvedManifest,
  effects: StepEffects,
): Promise<{ ok: boolean; images: ImageVerification[] }> {
  const images: ImageVerification[] = [];
  for (const image of manifest.images) {
    const problems: string[] = [];
    const notes: string[] = [];
    try {
      const compared = await compareWithSource(image, manifest, effects);
      if (typeof compared === 'object' && compared) notes.push(compared.note);
      else if (compared) problems.push(compared);
      else if (compared === '') notes.push('matches its source');
      if (image.format === 'qcow2') {
        const check = await effects.run(checkCommand(image.path, image.format));
        if (check.exitCode === SAME) notes.push('check clean');
        else if (check.exitCode === LEAKS_ONLY) notes.push('check found leaked clusters only (harmless)');
        else
          problems.push(`fails qemu-img check (exit ${check.exitCode}): ${qemuMessage(check.stderr || check.stdout)}`);
      }
    } catch (e) {
      problems.push(`cannot be verified: ${(e as Error).message}`);
    }
    images.push({
      image: image.id,
      path: image.path,
      ok: problems.length === 0,
      detail: (problems.length ? problems : notes).join('; ') || 'nothing to verify',
    });
  }
  return { ok: images.every((i) => i.ok), images };
}
