// Whether a qcow2 file is cut short: its header, L1 table and refcount table say where the
// metadata lives, and a table that lies past the end of the file means the file is incomplete
// (an interrupted copy). qemu reads such clusters as zeros without complaint, so chainform would
// otherwise copy an empty or partial disk as if it were whole. Only metadata offsets are read;
// nothing is repaired or interpreted beyond "does it fit in the file".
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
    const header = Buffer.alloc(72);
    const { bytesRead } = await handle.read(header, 0, header.length, 0);
    if (bytesRead < header.length) return `its ${bytesRead}-byte header is incomplete`;
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
    for (const entry of await entries(refTableOffset, refTableBytes)) {
      const problem = past('refcount block', entry & REFTABLE_OFFSET_MASK, clusterSize);
      if (problem && (entry & REFTABLE_OFFSET_MASK) !== 0n) return problem;
    }
    return undefined;
  } finally {
    await handle.close();
  }
}
