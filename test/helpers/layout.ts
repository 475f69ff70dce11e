// Synthetic inspected layouts for planner unit tests: what qemu-img info would have reported.
import type { ChainLayer, InspectedFile, InspectedLayout } from '../../src/inspect/inspect-layout.js';
import type { SnapshotDelta } from '../../src/inspect/snapshot-deltas.js';
import type { Fingerprint } from '../../src/state/fingerprint.js';
import type { Ledger } from '../../src/state/ledger.js';

const MiB = 1024 * 1024;

/** A fingerprint for a fake file; `ino` is its identity. */
export function fp(ino: number, mtime = 1): Fingerprint {
  return { dev: '1', ino: String(ino), size: '1000', mtimeNs: String(mtime) };
}

/** One layer of a fake chain. */
export function layer(path: string, ino: number, extra: Partial<ChainLayer> = {}): ChainLayer {
  return {
    filename: path,
    path,
    format: 'qcow2',
    virtualSize: 64 * MiB,
    actualSize: MiB,
    clusterSize: 65536,
    backingName: undefined,
    backingPath: undefined,
    backingFormat: undefined,
    dirty: false,
    qcow2: { compat: '1.1', lazyRefcounts: false, refcountBits: 16 },
    snapshots: [],
    fingerprint: fp(ino),
    ...extra,
  };
}

/** A file whose chain is the given layers (top first); backing links are filled in. */
export function file(format: string, layers: ChainLayer[]): InspectedFile {
  const linked = layers.map((l, i) => {
    const below = layers[i + 1];
    return below
      ? {
          ...l,
          backingName: l.backingName ?? below.filename.split('/').at(-1),
          backingPath: below.filename,
          backingFormat: l.backingFormat ?? below.format,
        }
      : l;
  });
  const top = linked[0]!;
  return { path: top.filename, fingerprint: top.fingerprint, format, chain: linked };
}

/** A layout from files, an optional ledger and snapshot deltas (as read), and plenty of free space in /work/m/out. */
export function layoutOf(
  files: InspectedFile[],
  ledger: Ledger = { version: 1, outputs: {} },
  deltas: SnapshotDelta[] = [],
): InspectedLayout {
  const space = { dir: '/work/m/out', freeBytes: 10 * 1024 * MiB };
  return {
    files: new Map(files.map((f) => [f.path, f])),
    ledger,
    freeSpace: new Map([
      ['/work/m/out', space],
      ['/work/m', space],
    ]),
    // Pairs already read: each answers with its delta.
    snapshotDeltaPairs: deltas.map((delta) => ({ ...delta, read: () => delta })),
  };
}

export { MiB };
