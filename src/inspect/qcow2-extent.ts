// Whether a qcow2 file is cut short: its header, L1 table and refcount table say where the
// metadata lives, and its refcounts which clusters are in use; a table or a cluster in use that
// lies past the end of the file means the file is incomplete (an interrupted copy). qemu reads
// such clusters as zeros without complaint, so chainform would otherwise copy an empty or
// partial disk as if it were whole. Only metadata is read; nothing is repaired or interpreted
// beyond "does it fit in the file".
import { open } from 'node:fs/promises';

/** The largest table read whole (L1 or refcount table); larger ones are only bounds-checked. */
const MAX_TABLE_BYTES = 32 * 1024 * 1024;
/** Bits 9..55 of an L1 entry hold the L2 table's offset. */
const L1_OFFSET_MASK = 0x00ff_ffff_ffff_fe00n;
/** Bits 9..63 of a refcount table entry hold the refcount block's offset. */
const REFTABLE_OFFSET_MASK = 0xffff_ffff_ffff_fe00n;

/** Where the first piece of metadata past the end lies, or undefined when all of it fits. */
export async function qcow2MetadataPastEnd(path: string): Promise<string | undefined> {
  const handle = await open(path, 'r');
  try {
    const size = BigInt((await handle.stat()).size);
    const header = Buffer.alloc(104);
    const { bytesRead } = await handle.read(header, 0, header.length, 0);
    if (bytesRead < 72) return `its ${bytesRead}-byte header is incomplete`;
    // Version 3 headers say how wide a refcount is (refcount_order); version 2 always uses 16 bits.
    const version = header.readUInt32BE(4);
    const refcountBits = version >= 3 && bytesRead >= 100 ? 1 << header.readUInt32BE(96) : 16;
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
    const entries = async (offset: bigint, bytes: bigint): Promise<bigint[]> => {
      if (bytes === 0n || bytes > BigInt(MAX_TABLE_BYTES)) return [];
      const table = Buffer.alloc(Number(bytes));
      await handle.read(table, 0, table.length, Number(offset));
      return Array.from({ length: table.length / 8 }, (_, i) => table.readBigUInt64BE(i * 8));
    };
    for (const entry of await entries(l1Offset, l1Entries * 8n)) {
      const problem = past('L2 table', entry & L1_OFFSET_MASK, clusterSize);
      if (problem && (entry & L1_OFFSET_MASK) !== 0n) return problem;
    }
    const blocks = (await entries(refTableOffset, refTableBytes)).map((entry) => entry & REFTABLE_OFFSET_MASK);
    for (const block of blocks) {
      const problem = past('refcount block', block, clusterSize);
      if (problem && block !== 0n) return problem;
    }
    // Data clusters cut off leave every table intact: the highest cluster in use (refcount not
    // zero) must still lie inside the file.
    const perBlock = (clusterSize * 8n) / BigInt(refcountBits);
    for (let index = blocks.length - 1; index >= 0; index--) {
      const block = blocks[index] ?? 0n;
      if (block === 0n) continue;
      const counts = Buffer.alloc(Number(clusterSize));
      await handle.read(counts, 0, counts.length, Number(block));
      const lastByte = counts.findLastIndex((byte) => byte !== 0);
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
  } finally {
    await handle.close();
  }
}
