// Does an existing image already have the options the manifest asks for?
import type { Options } from '../manifest/manifest.generated.js';
import { canonicalCompat } from '../qemu/formats.js';
import type { ImageInfo } from '../qemu/image-info.js';

/** Differences between wanted options and an image's header, as `name have -> want` strings. */
export function optionDifferences(wanted: Options, image: ImageInfo): string[] {
  const differences: string[] = [];
  const check = (name: string, have: unknown, want: unknown) => {
    if (have !== want) differences.push(`${name} ${String(have ?? 'unset')} -> ${String(want)}`);
  };
  const q = image.qcow2;
  if (wanted.cluster_size !== undefined) check('cluster_size', image.clusterSize, wanted.cluster_size);
  if (wanted.compat !== undefined) {
    check('compat', q.compat && canonicalCompat(q.compat), canonicalCompat(wanted.compat));
  }
  if (wanted.lazy_refcounts !== undefined) {
    check('lazy_refcounts', q.lazyRefcounts ?? false, wanted.lazy_refcounts);
  }
  if (wanted.refcount_bits !== undefined) check('refcount_bits', q.refcountBits, wanted.refcount_bits);
  if (wanted.extended_l2 !== undefined) check('extended_l2', q.extendedL2 ?? false, wanted.extended_l2);
  if (wanted.compression_type !== undefined) {
    check('compression_type', q.compressionType ?? 'zlib', wanted.compression_type);
  }
  // preallocation and subformat only shape how a new file is written; nothing to compare.
  return differences;
}
