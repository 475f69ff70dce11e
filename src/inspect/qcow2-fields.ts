// Reading qcow2 metadata fields (docs/interop/qcow2.txt), shared by the readers that look at a
// file's tables themselves: the truncation check (qcow2-extent.ts) and the cluster delta
// (qcow2-delta.ts). Offsets are JavaScript numbers: exact up to 8 PiB, past any real image, and a
// bigint per table entry would cost more than the readers' own work (measured on 10,000 files).

/** The largest table read whole (an L1 or refcount table: 32 MiB of L1 maps 512 TiB at 64 KiB clusters). */
export const MAX_TABLE_BYTES = 32 * 1024 * 1024;
/** The cluster sizes qcow2 allows, as powers of two (9 to 21). */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** Bits 9..55 of an L1 entry hold the L2 table's offset: these masks take its high and low words. */
export const L1_OFFSET_HIGH = 0x00ff_ffff;
/** The low word of a table entry's offset field (bits 9..31). */
export const OFFSET_LOW = 0xffff_fe00;
const WORD = 2 ** 32;

/** The 64-bit big-endian number at `at` (a header field or table entry), masked word by word. */
export function uint64At(data: Buffer, at: number, highMask = 0xffff_ffff, lowMask = 0xffff_ffff): number {
  return ((data.readUInt32BE(at) & highMask) >>> 0) * WORD + ((data.readUInt32BE(at + 4) & lowMask) >>> 0);
}
