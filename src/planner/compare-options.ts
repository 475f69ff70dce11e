// Does an existing image already have the options the manifest asks for, and how can it get them?
import type { Options } from '../manifest/manifest.generated.js';
import { canonicalCompat } from '../qemu/formats.js';
import type { ImageInfo } from '../qemu/image-info.js';

/** One option an image has differently from the manifest. */
export interface OptionChange {
  name: keyof Options;
  have: unknown;
  want: unknown;
}

/** Options `qemu-img amend` changes in place; every other difference needs a new file. */
export const AMENDABLE: ReadonlySet<keyof Options> = new Set(['compat', 'lazy_refcounts', 'refcount_bits']);

type ComparedImage = ImageInfo & { dataFilePath?: string };

/**
 * What an image has, per option that can be compared, in the manifest's terms. Every option is
 * listed (the compiler checks) but preallocation and subformat, which only shape how a new file
 * is written: nothing to compare.
 */
const HAVE = {
  cluster_size: (image) => image.clusterSize,
  compat: (image) => image.qcow2.compat,
  lazy_refcounts: (image) => image.qcow2.lazyRefcounts ?? false,
  refcount_bits: (image) => image.qcow2.refcountBits,
  extended_l2: (image) => image.qcow2.extendedL2 ?? false,
  compression_type: (image) => image.qcow2.compressionType ?? 'zlib',
  // The data file as a resolved path (a stored relative name is not compared as text).
  data_file: (image) => image.dataFilePath ?? image.qcow2.dataFile,
  data_file_raw: (image) => image.qcow2.dataFileRaw ?? false,
} satisfies Record<Exclude<keyof Options, 'preallocation' | 'subformat'>, (image: ComparedImage) => unknown>;
/** {@link HAVE} as a list, in the order changes are reported. */
const COMPARED = Object.entries(HAVE) as [keyof Options, (image: ComparedImage) => unknown][];

/** A value as it is compared: compat has two spellings per level (1.1 and v3). */
function comparable(name: keyof Options, value: unknown): unknown {
  return name === 'compat' && typeof value === 'string' ? canonicalCompat(value) : value;
}

/**
 * How the image differs from the options the manifest asks for (only those it names).
 * `isItsDataFile` says whether a path names the image's data file, also under another name (a
 * symlink, a hard link); by default only its own path does.
 */
export function optionChanges(
  wanted: Options,
  image: ComparedImage,
  isItsDataFile: (path: string) => boolean = (path) => path === HAVE.data_file(image),
): OptionChange[] {
  const changes: OptionChange[] = [];
  for (const [name, have] of COMPARED) {
    if (wanted[name] === undefined) continue;
    if (name === 'data_file' && isItsDataFile(wanted[name] as string)) continue;
    const want = comparable(name, wanted[name]);
    const current = comparable(name, have(image));
    if (current !== want) changes.push({ name, have: current, want });
  }
  return changes;
}

/** `cluster_size 512 -> 65536` */
export function describeChange(change: OptionChange): string {
  return `${change.name} ${String(change.have ?? 'unset')} -> ${String(change.want)}`;
}

/**
 * Why an in-place downgrade to compat 0.10 with `qemu-img amend` cannot work on this image,
 * unless the manifest drops the feature too. Empty when it can.
 */
export function downgradeBlockers(wanted: Options, image: ImageInfo): string[] {
  const q = image.qcow2;
  const blockers: string[] = [];
  if (q.lazyRefcounts && wanted.lazy_refcounts !== false)
    blockers.push('lazy_refcounts is on (add lazy_refcounts: false)');
  if (q.extendedL2 && wanted.extended_l2 !== false) {
    blockers.push('extended_l2 is on (add extended_l2: false; chainform then rewrites the image)');
  }
  if (q.refcountBits !== undefined && q.refcountBits !== 16 && wanted.refcount_bits !== 16) {
    blockers.push(`refcount_bits is ${q.refcountBits} (add refcount_bits: 16)`);
  }
  if (q.compressionType === 'zstd' && wanted.compression_type !== 'zlib') {
    blockers.push('it uses zstd compression (add compression_type: zlib; chainform then rewrites the image)');
  }
  if (q.bitmaps) blockers.push(`it has ${q.bitmaps} persistent bitmap(s) (remove them with qemu-img bitmap --remove)`);
  if (q.dataFile) blockers.push(`it keeps its data in an external data file (${q.dataFile})`);
  return blockers;
}
