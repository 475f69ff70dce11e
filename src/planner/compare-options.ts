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

/** How the image differs from the options the manifest asks for. */
export function optionChanges(wanted: Options, image: ImageInfo & { dataFilePath?: string }): OptionChange[] {
  const changes: OptionChange[] = [];
  const check = (name: keyof Options, have: unknown, want: unknown) => {
    if (want !== undefined && have !== want) changes.push({ name, have, want });
  };
  const q = image.qcow2;
  check('cluster_size', image.clusterSize, wanted.cluster_size);
  check('compat', q.compat && canonicalCompat(q.compat), wanted.compat && canonicalCompat(wanted.compat));
  check('lazy_refcounts', q.lazyRefcounts ?? false, wanted.lazy_refcounts);
  check('refcount_bits', q.refcountBits, wanted.refcount_bits);
  check('extended_l2', q.extendedL2 ?? false, wanted.extended_l2);
  check('compression_type', q.compressionType ?? 'zlib', wanted.compression_type);
  // The data file as a resolved path (a stored relative name is not compared as text).
  check('data_file', image.dataFilePath ?? q.dataFile, wanted.data_file);
  check('data_file_raw', q.dataFileRaw ?? false, wanted.data_file_raw);
  // preallocation and subformat only shape how a new file is written; nothing to compare.
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
