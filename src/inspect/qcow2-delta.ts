// Which guest clusters differ between two states of one qcow2 file (two internal snapshots, or
// a snapshot and the active layer), found from the cluster tables alone (docs/interop/qcow2.txt).
// qcow2 never writes a cluster that two states share: it copies it first. So a guest cluster
// whose L2 entries name the same host cluster (or are both unallocated, or both the same zero
// or compressed descriptor) in both states presents the same bytes in both; only the others can
// differ. That lets a linearised link copy just those clusters instead of reading the whole disk
// twice through a safe rebase. Only metadata is read; anything unusual gives no answer, and the
// planner then falls back to the safe rebase.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { type Fingerprint, fingerprintOfStats, sameFingerprint } from '../state/fingerprint.js';
import {
  L1_OFFSET_HIGH,
  MAX_CLUSTER_BITS,
  MAX_TABLE_BYTES,
  MIN_CLUSTER_BITS,
  OFFSET_LOW,
  uint64At,
} from './qcow2-fields.js';

/** A run of guest bytes: offset and length. */
export type ByteRange = readonly [offset: number, length: number];

/** The guest ranges whose clusters may differ between two states, or why none can be given. */
export type ClusterDelta =
  | {
      ok: true;
      ranges: ByteRange[];
      bytes: number;
      /** The file's cluster size: every range starts on a cluster (the last may end early). */
      clusterSize: number;
      /**
       * Of `bytes`, those the newer state marks as zero clusters: copying them writes only
       * metadata (qemu writes a read of zeros as a zero cluster). Standard L2 entries only.
       */
      zeroBytes: number;
    }
  | { ok: false; why: string };

/**
 * One state of the file: where its L1 table lies. Every state presents the header's disk size:
 * qemu reads a snapshot (convert -l, qemu-nbd -l) at that size whatever size the snapshot
 * records, with the clusters past its L1 table unallocated.
 */
interface State {
  l1Offset: number;
  l1Entries: number;
  /**
   * For a snapshot: the disk size it recorded when taken (its extra data, absent in old
   * images). qemu presents it at the header's size all the same, so a larger recorded size
   * means data past the header's size that no reading of the snapshot can reach.
   */
  recordedSize?: number;
}

/** The tables a delta needs from one qcow2 file. */
interface Qcow2Tables {
  clusterBits: number;
  /** The disk size every state presents (the header's). */
  virtualSize: number;
  /** Extended L2 entries are 16 bytes (descriptor and subcluster bitmap), standard ones 8. */
  l2EntryBytes: number;
  active: State;
  /** By snapshot id (qemu's `id` field, unique in a file). */
  snapshots: Map<string, State>;
}

const QCOW2_MAGIC = 0x514649fb;
/** Incompatible feature bits whose images this reader understands: dirty (0), compression type (3), extended L2 (4). */
const KNOWN_INCOMPATIBLE = 0b11001;
const EXTENDED_L2 = 0b10000;
/** An L2 entry without its COPIED bit (63), which says only whether the refcount is 1. */
const L2_HIGH_WITHOUT_COPIED = 0x7fff_ffff;
/** Bit 62 of an L2 entry, in its high word: the cluster is compressed. */
const COMPRESSED_HIGH = 0x4000_0000;
/** Bit 0 of a standard L2 entry: the cluster reads as all zeros. */
const ZERO_FLAG_LOW = 1;
/** The most extra data qemu accepts in a snapshot table entry. */
const MAX_SNAPSHOT_EXTRA_BYTES = 1024;
/** The longest range one qemu-io read copies. */
export const MAX_RANGE_BYTES = 16 * 1024 * 1024;

function readAt(fd: number, offset: number, length: number): Buffer {
  const data = Buffer.alloc(length);
  const read = readSync(fd, data, 0, length, offset);
  if (read !== length) throw new Error(`the file ends inside its metadata (at byte ${offset + read})`);
  return data;
}

/** The header and snapshot table of the open qcow2 file `fd`, or why they are not usable. */
function readTables(fd: number): Qcow2Tables | string {
  const header = readAt(fd, 0, 104);
  if (header.readUInt32BE(0) !== QCOW2_MAGIC) return 'it is not a qcow2 file';
  const version = header.readUInt32BE(4);
  if (version !== 2 && version !== 3) return `its qcow2 version (${version}) is not 2 or 3`;
  const clusterBits = header.readUInt32BE(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS)
    return `its cluster size (2^${clusterBits}) is not one qcow2 allows`;
  if (header.readUInt32BE(32) !== 0) return 'it is encrypted';
  // The high word of the incompatible features must be clear too: unknown features change how tables read.
  const incompatible = version >= 3 ? header.readUInt32BE(76) : 0;
  if (version >= 3 && (header.readUInt32BE(72) !== 0 || (incompatible & ~KNOWN_INCOMPATIBLE) !== 0))
    return 'it uses qcow2 features this reader does not know (corrupt, external data file, or newer)';
  const active = { l1Offset: uint64At(header, 40), l1Entries: header.readUInt32BE(36) };
  const snapshots = new Map<string, State>();
  let at = uint64At(header, 64);
  for (let i = 0; i < header.readUInt32BE(60); i++) {
    const entry = readAt(fd, at, 40);
    const extraBytes = entry.readUInt32BE(36);
    const idBytes = entry.readUInt16BE(12);
    const nameBytes = entry.readUInt16BE(14);
    // qemu itself refuses more extra data than this: a larger figure is a damaged table.
    if (extraBytes > MAX_SNAPSHOT_EXTRA_BYTES) return `its snapshot table is damaged (entry ${i})`;
    const rest = readAt(fd, at + 40, extraBytes + idBytes + nameBytes);
    const id = rest.toString('utf8', extraBytes, extraBytes + idBytes);
    // Extra data: vm_state_size_large (8 bytes), then disk_size (8 bytes), then icount.
    const recordedSize = extraBytes >= 16 ? uint64At(rest, 8) : undefined;
    snapshots.set(id, {
      l1Offset: uint64At(entry, 0),
      l1Entries: entry.readUInt32BE(8),
      ...(recordedSize !== undefined ? { recordedSize } : {}),
    });
    at += Math.ceil((40 + extraBytes + idBytes + nameBytes) / 8) * 8;
  }
  return {
    clusterBits,
    virtualSize: uint64At(header, 24),
    l2EntryBytes: incompatible & EXTENDED_L2 ? 16 : 8,
    active,
    snapshots,
  };
}

/** The L1 table of a state; entries past its end are unallocated. */
function l1Of(fd: number, state: State): Buffer {
  if (state.l1Entries * 8 > MAX_TABLE_BYTES) throw new Error('its L1 table is too large to read');
  return state.l1Entries === 0 ? Buffer.alloc(0) : readAt(fd, state.l1Offset, state.l1Entries * 8);
}

/** The L2 table offset of L1 entry `index` (0: none). */
function l2OffsetAt(l1: Buffer, index: number): number {
  return index * 8 < l1.length ? uint64At(l1, index * 8, L1_OFFSET_HIGH, OFFSET_LOW) : 0;
}

/** True when L2 entry `at` presents the same bytes in both tables (see the file comment). */
function sameEntry(a: Buffer, b: Buffer, at: number, entryBytes: number): boolean {
  if ((a.readUInt32BE(at) & L2_HIGH_WITHOUT_COPIED) !== (b.readUInt32BE(at) & L2_HIGH_WITHOUT_COPIED)) return false;
  if (a.readUInt32BE(at + 4) !== b.readUInt32BE(at + 4)) return false;
  // Extended L2: the subcluster bitmap must match as well.
  return (
    entryBytes === 8 ||
    (a.readUInt32BE(at + 8) === b.readUInt32BE(at + 8) && a.readUInt32BE(at + 12) === b.readUInt32BE(at + 12))
  );
}

/**
 * True when the standard L2 entry at `at` is a zero cluster: not compressed (bit 62), with the
 * all-zeros flag (bit 0). It reads as zeros whatever its offset says and whatever lies below.
 */
function isZeroCluster(table: Buffer, at: number): boolean {
  return (table.readUInt32BE(at) & COMPRESSED_HIGH) === 0 && (table.readUInt32BE(at + 4) & ZERO_FLAG_LOW) !== 0;
}

/**
 * Adjacent ranges merged as they are added in order, up to {@link MAX_RANGE_BYTES} each: qemu-io
 * reads a range into one buffer of its size (and refuses one of 2 GiB).
 */
class RangeList {
  readonly ranges: [number, number][] = [];
  bytes = 0;
  zeroBytes = 0;

  add(offset: number, length: number, zero: boolean): void {
    if (zero) this.zeroBytes += length;
    const last = this.ranges.at(-1);
    if (last && last[0] + last[1] === offset && last[1] + length <= MAX_RANGE_BYTES) last[1] += length;
    else this.ranges.push([offset, length]);
    this.bytes += length;
  }
}

/** The guest ranges where states `from` and `to` of the open file may differ. */
function changedRanges(fd: number, tables: Qcow2Tables, from: State, to: State): RangeList {
  const clusterSize = 2 ** tables.clusterBits;
  const perL2 = clusterSize / tables.l2EntryBytes;
  const clusters = Math.ceil(tables.virtualSize / clusterSize);
  const l1From = l1Of(fd, from);
  const l1To = l1Of(fd, to);
  const empty = Buffer.alloc(clusterSize);
  const changed = new RangeList();
  for (let index = 0; index * perL2 < clusters; index++) {
    const fromL2 = l2OffsetAt(l1From, index);
    const toL2 = l2OffsetAt(l1To, index);
    // One L2 table shared by both states (or none in either): every cluster it maps is the same.
    if (fromL2 === toL2) continue;
    const a = fromL2 === 0 ? empty : readAt(fd, fromL2, clusterSize);
    const b = toL2 === 0 ? empty : readAt(fd, toL2, clusterSize);
    const first = index * perL2;
    const count = Math.min(perL2, clusters - first);
    for (let i = 0; i < count; i++) {
      if (sameEntry(a, b, i * tables.l2EntryBytes, tables.l2EntryBytes)) continue;
      const offset = (first + i) * clusterSize;
      const zero = tables.l2EntryBytes === 8 && isZeroCluster(b, i * 8);
      changed.add(offset, Math.min(clusterSize, tables.virtualSize - offset), zero);
    }
  }
  return changed;
}

/**
 * Opens the qcow2 file at `path` read-only, reads its tables and hands both to `use`; any
 * failure (a missing file, unusable tables, a read past the end) comes back as `failed(why)`.
 */
function withTables<T>(path: string, use: (fd: number, tables: Qcow2Tables) => T, failed: (why: string) => T): T {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    return failed((e as Error).message);
  }
  try {
    const tables = readTables(fd);
    return typeof tables === 'string' ? failed(tables) : use(fd, tables);
  } catch (e) {
    return failed((e as Error).message);
  } finally {
    closeSync(fd);
  }
}

/**
 * The guest ranges of the qcow2 file at `path` whose content may differ between snapshot
 * `fromId` and snapshot `toId` (null: the active layer), at the disk size qemu presents both
 * with. The file must not be open for writing meanwhile (inspection checks the lock), and
 * the answer holds only while the file is unchanged: steps built on it check its fingerprint.
 * With `inspected`, the fingerprint the caller knows the file by, there is no answer unless the
 * file still has it once its tables are read: the ranges are then those of that very file.
 */
export function clusterDelta(
  path: string,
  fromId: string | null,
  toId: string | null,
  inspected?: Fingerprint,
): ClusterDelta {
  return withTables<ClusterDelta>(
    path,
    (fd, tables) => {
      const tablesOf = (id: string | null) => (id === null ? tables.active : tables.snapshots.get(id));
      const from = tablesOf(fromId);
      const to = tablesOf(toId);
      if (!from || !to) return { ok: false, why: `snapshot ${from ? toId : fromId} is not in its snapshot table` };
      const changed = changedRanges(fd, tables, from, to);
      if (inspected && !sameFingerprint(fingerprintOfStats(fstatSync(fd, { bigint: true })), inspected))
        return { ok: false, why: 'it changed since it was inspected' };
      return {
        ok: true,
        ranges: changed.ranges,
        bytes: changed.bytes,
        clusterSize: 2 ** tables.clusterBits,
        zeroBytes: changed.zeroBytes,
      };
    },
    (why) => ({ ok: false, why }),
  );
}

/**
 * The disk size each internal snapshot of the qcow2 file at `path` recorded when it was taken,
 * by snapshot id (`qemu-img info` does not show it). Snapshots of old images record none and
 * are left out; a file whose tables this reader cannot use gives the reason instead.
 */
export function recordedSnapshotSizes(path: string): Map<string, number> | string {
  return withTables<Map<string, number> | string>(
    path,
    (_fd, tables) => {
      const sizes = new Map<string, number>();
      for (const [id, state] of tables.snapshots)
        if (state.recordedSize !== undefined) sizes.set(id, state.recordedSize);
      return sizes;
    },
    (why) => why,
  );
}
