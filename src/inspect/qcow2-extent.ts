// Whether a qcow2 file is cut short: its header, L1 table and refcount table say where the
// metadata lives, and its refcounts which clusters are in use; a table or a cluster in use that
// lies past the end of the file means the file is incomplete (an interrupted copy). qemu reads
// such clusters as zeros without complaint, so chainform would otherwise copy an empty or
// partial disk as if it were whole. Only metadata is read; nothing is repaired or interpreted
// beyond "does it fit in the file".
import { readSync } from 'node:fs';
import {
  L1_OFFSET_HIGH,
  MAX_CLUSTER_BITS,
  MAX_TABLE_BYTES,
  MIN_CLUSTER_BITS,
  OFFSET_LOW,
  uint64At,
} from './qcow2-fields.js';

/** Bits 9..63 of a refcount table entry hold the refcount block's offset. */
const REFTABLE_OFFSET_HIGH = 0xffff_ffff;

/** A buffer a table is read into, kept for the next file (grown as needed, up to SCRATCH_LIMIT). */
interface Scratch {
  buffer: Buffer;
}
/** Tables larger than this get a buffer of their own instead of growing a kept one. */
const SCRATCH_LIMIT = 4 * 1024 * 1024;
/**
 * Reads are synchronous, so two buffers serve every file: the refcount table in one, the L1
 * table and then the refcount blocks in the other (the L1 table is done with before the first
 * block is read). A fresh 64 KiB buffer per table read cost a few microseconds each.
 */
const refTableScratch: Scratch = { buffer: Buffer.alloc(0) };
const tableScratch: Scratch = { buffer: Buffer.alloc(0) };

/**
 * `bytes` bytes of the open file `fd` from `offset`, or none when the table is too large to
 * read. Taken from `head` (the file's first bytes, already read) when it lies there; otherwise
 * read into `scratch`, so valid only until the next read into it.
 */
function table(fd: number, head: Buffer, offset: number, bytes: number, scratch: Scratch): Buffer {
  if (bytes === 0 || bytes > MAX_TABLE_BYTES) return Buffer.alloc(0);
  if (offset + bytes <= head.length) return head.subarray(offset, offset + bytes);
  let data = scratch.buffer;
  if (data.length < bytes) {
    data = Buffer.allocUnsafe(bytes);
    if (bytes <= SCRATCH_LIMIT) scratch.buffer = data;
  }
  const read = readSync(fd, data, 0, bytes, offset);
  return data.subarray(0, read - (read % 8));
}

/** Zeros to compare runs of a table against; the widths below are what lastNonZero compares. */
const ZEROS = Buffer.alloc(4096);
const ZERO_RUNS = [4096, 512, 64, 8] as const;

/**
 * Index of the last byte of `data` that is not zero, or -1. Tables are mostly zeros after their
 * last entry in use (a 64 KiB refcount table of a new image holds one entry): runs of zeros at
 * the end are skipped by native comparisons, widest first, and only the last few bytes are
 * looked at one by one. A byte loop over each table cost about 0.2 ms per image.
 */
function lastNonZero(data: Buffer): number {
  let end = data.length;
  for (const width of ZERO_RUNS) {
    while (end >= width && data.compare(ZEROS, 0, width, end - width, end) === 0) end -= width;
  }
  let index = end - 1;
  while (index >= 0 && data[index] === 0) index--;
  return index;
}

/**
 * Where the first piece of metadata past the end of the open qcow2 file `fd` lies, or undefined
 * when all of it fits. `header` holds the file's first bytes, `size` its length.
 */
export function qcow2MetadataPastEnd(fd: number, size: number, header: Buffer): string | undefined {
  if (header.length < 72) return `its ${header.length}-byte header is incomplete`;
  // Version 3 headers say how wide a refcount is (refcount_order); version 2 always uses 16 bits.
  const version = header.readUInt32BE(4);
  const refcountBits = version >= 3 && header.length >= 100 ? 2 ** header.readUInt32BE(96) : 16;
  const clusterBits = header.readUInt32BE(20);
  // qcow2 clusters are 512 B to 2 MiB: qemu refuses any other header itself, with its own
  // message, and the tables below would not be whole 8-byte entries.
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) return undefined;
  const clusterSize = 2 ** clusterBits;
  const l1Entries = header.readUInt32BE(36);
  const l1Offset = uint64At(header, 40);
  const refTableOffset = uint64At(header, 48);
  const refTableBytes = header.readUInt32BE(56) * clusterSize;
  const past = (what: string, offset: number, length: number) =>
    offset + length > size
      ? `its ${what} at offset ${offset} ends past the end of the file (${size} bytes)`
      : undefined;
  const tables = past('L1 table', l1Offset, l1Entries * 8) ?? past('refcount table', refTableOffset, refTableBytes);
  if (tables) return tables;
  // Tables are mostly zeros past their last entry in use: entries after the last non-zero byte
  // are not looked at one by one.
  const l1 = table(fd, header, l1Offset, l1Entries * 8, tableScratch);
  const l1InUse = lastNonZero(l1) + 1;
  for (let at = 0; at < l1InUse; at += 8) {
    const l2 = uint64At(l1, at, L1_OFFSET_HIGH, OFFSET_LOW);
    const problem = l2 !== 0 && past('L2 table', l2, clusterSize);
    if (problem) return problem;
  }
  const refTable = table(fd, header, refTableOffset, refTableBytes, refTableScratch);
  const blockAt = (index: number) => uint64At(refTable, index * 8, REFTABLE_OFFSET_HIGH, OFFSET_LOW);
  const blockCount = Math.ceil((lastNonZero(refTable) + 1) / 8);
  for (let index = 0; index < blockCount; index++) {
    const block = blockAt(index);
    const problem = block !== 0 && past('refcount block', block, clusterSize);
    if (problem) return problem;
  }
  // Data clusters cut off leave every table intact: the highest cluster in use (refcount not
  // zero) must still lie inside the file.
  const perBlock = (clusterSize * 8) / refcountBits;
  for (let index = blockCount - 1; index >= 0; index--) {
    const block = blockAt(index);
    if (block === 0) continue;
    const lastByte = lastNonZero(table(fd, header, block, clusterSize, tableScratch));
    if (lastByte < 0) continue;
    // Refcounts narrower than a byte share it: take the first of them (a lower bound).
    const entry = Math.floor((lastByte * 8) / refcountBits);
    // The last cluster may end early (a snapshot table is written only as long as it is).
    const start = (index * perBlock + entry) * clusterSize;
    return start >= size
      ? `a cluster in use starts at byte ${start}, past the end of the file (${size} bytes)`
      : undefined;
  }
  return undefined;
}
