// The most a qcow2 image written by `qemu-img convert` can take on disk, from its virtual size
// and creation options alone (docs/interop/qcow2.txt). `qemu-img measure` sizes a convert
// exactly but costs a process; this bound lets `apply` skip it when even the worst case fits.
// It is deliberately loose: every part is rounded up, and the margin covers the rest.
import type { Options } from '../manifest/manifest.generated.js';
import { QCOW2_DEFAULT_CLUSTER_SIZE } from '../qemu/formats.js';

const DEFAULT_REFCOUNT_BITS = 16;
/** For the header and anything else small (the header alone is one cluster of at most 2 MiB). */
const MARGIN_BYTES = 8 * 1024 * 1024;

/**
 * Bytes a qcow2 image of `virtualSize` bytes, made with `options`, takes at most: every guest
 * cluster allocated (also with preallocation=full, or with its data in an external data file);
 * an L2 entry per cluster (8 bytes, 16 with extended_l2) and an L1 entry per L2 table; twice
 * the refcounts the guest clusters need (the refcount blocks also count the L2 tables, the
 * refcount blocks themselves and the rest, which are far fewer) and a refcount table entry per
 * refcount block; each table rounded up to whole clusters.
 */
export function qcow2WorstCaseBytes(virtualSize: number, options: Options): number {
  const clusterSize = options.cluster_size ?? QCOW2_DEFAULT_CLUSTER_SIZE;
  const wholeClusters = (bytes: number) => Math.ceil(bytes / clusterSize) * clusterSize;
  const clusters = Math.ceil(virtualSize / clusterSize);
  const l2Bytes = wholeClusters(clusters * (options.extended_l2 ? 16 : 8));
  const l1Bytes = wholeClusters((l2Bytes / clusterSize) * 8);
  const refcountBytes = wholeClusters((2 * clusters * (options.refcount_bits ?? DEFAULT_REFCOUNT_BITS)) / 8);
  const refcountTableBytes = wholeClusters((refcountBytes / clusterSize) * 8);
  return clusters * clusterSize + l2Bytes + l1Bytes + refcountBytes + refcountTableBytes + MARGIN_BYTES;
}
