// The cluster deltas a manifest can use: for each image built from one state of a qcow2 file
// (an internal snapshot or its active layer) on a backing image built from another state of the
// same file, which guest ranges differ between the two (qcow2-delta.ts). This is the shape a
// linearisation has (import --linearize), and it lets each link copy only what changed.
import type { ResolvedManifest } from '../manifest/resolve-manifest.js';
import { selectSnapshot } from '../qemu/select-snapshot.js';
import type { Fingerprint } from '../state/fingerprint.js';
import type { InspectedFile } from './inspect-layout.js';
import { type ByteRange, clusterDelta } from './qcow2-delta.js';

/** The guest ranges that differ between two states of one qcow2 file, as read at inspection. */
export interface SnapshotDelta {
  /** Absolute path of the qcow2 file. */
  path: string;
  /** The file's fingerprint when its tables were read: the ranges hold only while it is unchanged. */
  fingerprint: Fingerprint;
  /** Snapshot id of the older state (what the backing presents); null: the active layer. */
  fromId: string | null;
  /** Snapshot id of the newer state (what the image presents); null: the active layer. */
  toId: string | null;
  /** Ranges in guest order, adjacent ones merged. */
  ranges: ByteRange[];
  bytes: number;
  /** The file's cluster size, on which every range starts. */
  clusterSize: number;
  /** Of `bytes`, those the newer state holds as zero clusters (copied as metadata only). */
  zeroBytes: number;
}

/** The snapshot id a source value selects in `file`; null for the active layer; undefined: none. */
function selectedId(file: InspectedFile, snapshot: string | undefined): string | null | undefined {
  if (snapshot === undefined) return null;
  const selected = selectSnapshot(file.chain?.[0]?.snapshots ?? [], snapshot);
  return selected.kind === 'found' ? selected.id : undefined;
}

/**
 * Deltas for every image whose source and whose backing image's source are two states of the
 * same qcow2 file. Pairs whose tables cannot be read, or that are not usable (unknown features,
 * encryption, damage), are left out: the planner then uses a safe rebase.
 */
export function snapshotDeltas(manifest: ResolvedManifest, files: ReadonlyMap<string, InspectedFile>): SnapshotDelta[] {
  const deltas = new Map<string, SnapshotDelta>();
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
    if (deltas.has(key)) continue;
    const delta = clusterDelta(source.path, fromId, toId);
    if (!delta.ok) continue;
    deltas.set(key, {
      path: source.path,
      fingerprint: file.fingerprint,
      fromId,
      toId,
      ranges: delta.ranges,
      bytes: delta.bytes,
      clusterSize: delta.clusterSize,
      zeroBytes: delta.zeroBytes,
    });
  }
  return [...deltas.values()];
}
