// The cluster deltas a manifest can use: for each image built from one state of a qcow2 file
// (an internal snapshot or its active layer) on a backing image built from another state of the
// same file, which guest ranges differ between the two (qcow2-delta.ts). This is the shape a
// linearisation has (import --linearize), and it lets each link copy only what changed.
import type { ResolvedManifest } from '../manifest/resolve-manifest.js';
import { selectSnapshot } from '../qemu/select-snapshot.js';
import type { Fingerprint } from '../state/fingerprint.js';
import type { InspectedFile } from './inspect-layout.js';
import { type ByteRange, clusterDelta } from './qcow2-delta.js';

/** Two states of one qcow2 file, as inspected. */
export interface SnapshotStates {
  /** Absolute path of the qcow2 file. */
  path: string;
  /** The file's fingerprint at inspection: a delta holds only while the file is unchanged. */
  fingerprint: Fingerprint;
  /** Snapshot id of the older state (what the backing presents); null: the active layer. */
  fromId: string | null;
  /** Snapshot id of the newer state (what the image presents); null: the active layer. */
  toId: string | null;
}

/** The guest ranges that differ between two states of one qcow2 file, read from its tables. */
export interface SnapshotDelta extends SnapshotStates {
  /** Ranges in guest order, adjacent ones merged. */
  ranges: ByteRange[];
  bytes: number;
  /** The file's cluster size, on which every range starts. */
  clusterSize: number;
  /** Of `bytes`, those the newer state holds as zero clusters (copied as metadata only). */
  zeroBytes: number;
}

/**
 * Two states of one qcow2 source file that the manifest links (an image built from one, on a
 * backing built from the other). Their delta is read from the file's cluster tables only when
 * the planner asks for it, because only an image that must be built uses it: a plan of a layout
 * already in sync reads no tables (they are 128 MiB per state of a 1 TiB disk).
 */
export interface SnapshotDeltaPair extends SnapshotStates {
  /**
   * The delta, read on the first call and kept; or why there is none: the tables cannot be read
   * or are not usable (unknown features, encryption, damage), or the file is no longer the one
   * inspected (its fingerprint changed). The planner then uses a safe rebase.
   */
  read(): SnapshotDelta | { why: string };
}

/** The snapshot id a source value selects in `file`; null for the active layer; undefined: none. */
function selectedId(file: InspectedFile, snapshot: string | undefined): string | null | undefined {
  if (snapshot === undefined) return null;
  const selected = selectSnapshot(file.chain?.[0]?.snapshots ?? [], snapshot);
  return selected.kind === 'found' ? selected.id : undefined;
}

/**
 * Every pair of states of one qcow2 file that the manifest links: for each image whose source and
 * whose backing image's source are two states of the same file. Nothing is read here.
 */
export function snapshotDeltaPairs(
  manifest: ResolvedManifest,
  files: ReadonlyMap<string, InspectedFile>,
): SnapshotDeltaPair[] {
  const pairs = new Map<string, SnapshotDeltaPair>();
  for (const image of manifest.images) {
    const backing = image.backing?.kind === 'image' ? manifest.byId.get(image.backing.id) : undefined;
    const source = image.source;
    const below = backing?.source;
    if (!source || !below || source.path !== below.path || source.format !== 'qcow2' || below.format !== 'qcow2')
      continue;
    const file = files.get(source.path);
    if (!file?.fingerprint || !file.chain) continue;
    const toId = selectedId(file, source.snapshot);
    const fromId = selectedId(file, below.snapshot);
    if (toId === undefined || fromId === undefined || toId === fromId) continue;
    const key = JSON.stringify([source.path, fromId, toId]);
    if (!pairs.has(key)) pairs.set(key, lazyPair({ path: source.path, fingerprint: file.fingerprint, fromId, toId }));
  }
  return [...pairs.values()];
}

/** A pair whose delta is read from the file's tables on the first `read()` and then kept. */
function lazyPair(states: SnapshotStates): SnapshotDeltaPair {
  let known: SnapshotDelta | { why: string } | undefined;
  const readTables = (): SnapshotDelta | { why: string } => {
    const delta = clusterDelta(states.path, states.fromId, states.toId, states.fingerprint);
    if (!delta.ok) return { why: delta.why };
    const { ranges, bytes, clusterSize, zeroBytes } = delta;
    return { ...states, ranges, bytes, clusterSize, zeroBytes };
  };
  return {
    ...states,
    read() {
      known ??= readTables();
      return known;
    },
  };
}
