// Whether a qcow2 file is cut short: its header, L1 table and refcount table say where the
// metadata lives, and its refcounts which clusters are in use; a table or a cluster in use that
// lies past the end of the file means the file is incomplete (an interrupted copy). qemu reads
// such clusters as zeros without complaint, so chainform would otherwise copy an empty or
// partial disk as if it were whole. Only metadata is read; nothing is repaired or interpreted
// beyond "does it fit in the file".
import { readSync } from 'node:fs';

/** The largest table read whole (L1 or refcount table); larger ones are only bounds-checked. */
const MAX_TABLE_BYTES = 32 * 1024 * 1024;
/** Bits 9..55 of an L1 entry hold the L2 table's offset: these masks take its high and low words. */
const L1_OFFSET_HIGH = 0x00ff_ffff;
/** Bits 9..63 of a refcount table entry hold the refcount block's offset. */
const REFTABLE_OFFSET_HIGH = 0xffff_ffff;
const OFFSET_LOW = 0xffff_fe00;

/**
 * The offset in the 64-bit big-endian table entry at `at`, as a number (exact below 8 PiB):
 * entries are read as two words, since a bigint per entry costs more than the check itself.
 */
function offsetAt(table: Buffer, at: number, highMask: number): bigint {
  const high = (table.readUInt32BE(at) & highMask) >>> 0;
  const low = (table.readUInt32BE(at + 4) & OFFSET_LOW) >>> 0;
  return high === 0 && low === 0 ? 0n : BigInt(high * 2 ** 32 + low);
}

/**
 * `bytes` bytes of the open file `fd` from `offset`, or none when the table is too large to
 * read. Taken from `head` (the file's first bytes, already read) when it lies there.
 */
function table(fd: number, head: Buffer, offset: bigint, bytes: bigint): Buffer {
  if (bytes === 0n || bytes > BigInt(MAX_TABLE_BYTES)) return Buffer.alloc(0);
  if (offset + bytes <= BigInt(head.length)) return head.subarray(Number(offset), Number(offset + bytes));
  const data = Buffer.allocUnsafe(Number(bytes));
  const read = readSync(fd, data, 0, data.length, Number(offset));
  return data.subarray(0, read - (read % 8));
}

/**
 * Where the first piece of metadata past the end of the open qcow2 file `fd` lies, or undefined
 * when all of it fits. `header` holds the file's first bytes, `size` its length.
 */
export function qcow2MetadataPastEnd(fd: number, size: bigint, header: Buffer): string | undefined {
  if (header.length < 72) return `its ${header.length}-byte header is incomplete`;
  // Version 3 headers say how wide a refcount is (refcount_order); version 2 always uses 16 bits.
  const version = header.readUInt32BE(4);
  const refcountBits = version >= 3 && header.length >= 100 ? 1 << header.readUInt32BE(96) : 16;
  const clusterSize = 1n << BigInt(header.readUInt32BE(20));
  const l1Entries = BigInt(header.readUInt32BE(36));
  const l1Offset = header.readBigUInt64BE(40);
  const refTableOffset = header.readBigUInt64BE(48);
  const refTableBytes = BigInt(header.readUInt32BE(56)) * clusterSize;
  const past = (what: string, offset: bigint, length: bigint) =>
    offset + length > size
      ? `its ${what} at offset ${offset} ends past the end of the file (${size} bytes)`
      : undefined;
  const tables = past('L1 table', l1Offset, l1Entries * 8n) ?? past('refcount table', refTableOffset, refTableBytes);
  if (tables) return tables;
  const l1 = table(fd, header, l1Offset, l1Entries * 8n);
  for (let at = 0; at < l1.length; at += 8) {
    const l2 = offsetAt(l1, at, L1_OFFSET_HIGH);
    const problem = l2 !== 0n && past('L2 table', l2, clusterSize);
    if (problem) return problem;
  }
  const refTable = table(fd, header, refTableOffset, refTableBytes);
  const blockAt = (index: number) => offsetAt(refTable, index * 8, REFTABLE_OFFSET_HIGH);
  const blockCount = refTable.length / 8;
  for (let index = 0; index < blockCount; index++) {
    const block = blockAt(index);
    const problem = block !== 0n && past('refcount block', block, clusterSize);
    if (problem) return problem;
  }
  // Data clusters cut off leave every table intact: the highest cluster in use (refcount not
  // zero) must still lie inside the file.
  const perBlock = (clusterSize * 8n) / BigInt(refcountBits);
  for (let index = blockCount - 1; index >= 0; index--) {
    const block = blockAt(index);
    if (block === 0n) continue;
    const lastByte = table(fd, header, block, clusterSize).findLastIndex((byte) => byte !== 0);
    if (lastByte < 0) continue;
    // Refcounts narrower than a byte share it: take the first of them (a lower bound).
    const entry = (BigInt(lastByte) * 8n) / BigInt(refcountBits);
    // The last cluster may end early (a snapshot table is written only as long as it is).
    const start = (BigInt(index) * perBlock + entry) * clusterSize;
    return start >= size
      ? `a cluster in use starts at byte ${start}, past the end of the file (${size} bytes)`
      : undefined;
  }
  return undefined;
}
