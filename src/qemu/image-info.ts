// The parts of `qemu-img info --output=json` chainform relies on, and a tolerant parser for them.

/** One layer of a backing chain as qemu-img reports it. */
export interface ImageInfo {
  /** The file as qemu opened it (resolved path). */
  filename: string;
  format: string;
  virtualSize: number;
  /** Bytes the file occupies on disk. */
  actualSize: number;
  clusterSize: number | undefined;
  /** Backing name exactly as stored in the image header. */
  backingName: string | undefined;
  /** Backing name resolved against the image's folder. */
  backingPath: string | undefined;
  /** Backing format as stored; undefined means qemu would probe it. */
  backingFormat: string | undefined;
  dirty: boolean;
  /** qcow2 facts (compat, lazy refcounts, ...); empty for other formats. */
  qcow2: {
    compat?: string;
    lazyRefcounts?: boolean;
    refcountBits?: number;
    extendedL2?: boolean;
    compressionType?: string;
    corrupt?: boolean;
    dataFile?: string;
    dataFileRaw?: boolean;
    /** Persistent dirty bitmaps stored in the image. */
    bitmaps?: number;
  };
  /** Internal snapshots of this layer, as qemu-img lists them. */
  snapshots: { id: string; name: string; dateSec: number; dateNsec: number }[];
}

type Json = Record<string, unknown>;

function num(value: unknown): number | undefined {
  return typeof value === 'number' ? value : undefined;
}
function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}
function bool(value: unknown): boolean | undefined {
  return typeof value === 'boolean' ? value : undefined;
}

function parseOne(raw: Json): ImageInfo {
  const specific = (raw['format-specific'] as Json | undefined)?.data as Json | undefined;
  const snapshots = Array.isArray(raw.snapshots) ? (raw.snapshots as Json[]) : [];
  return {
    filename: str(raw.filename) ?? '',
    format: str(raw.format) ?? 'unknown',
    virtualSize: num(raw['virtual-size']) ?? 0,
    actualSize: num(raw['actual-size']) ?? 0,
    clusterSize: num(raw['cluster-size']),
    backingName: str(raw['backing-filename']),
    backingPath: str(raw['full-backing-filename']),
    backingFormat: str(raw['backing-filename-format']),
    dirty: bool(raw['dirty-flag']) ?? false,
    qcow2:
      str(raw.format) === 'qcow2' && specific
        ? {
            compat: str(specific.compat),
            lazyRefcounts: bool(specific['lazy-refcounts']),
            refcountBits: num(specific['refcount-bits']),
            extendedL2: bool(specific['extended-l2']),
            compressionType: str(specific['compression-type']),
            corrupt: bool(specific.corrupt),
            dataFile: str(specific['data-file']),
            dataFileRaw: bool(specific['data-file-raw']),
            bitmaps: Array.isArray(specific.bitmaps) ? specific.bitmaps.length : 0,
          }
        : {},
    snapshots: snapshots.map((s) => ({
      id: String(s.id ?? ''),
      name: String(s.name ?? ''),
      dateSec: num(s['date-sec']) ?? 0,
      dateNsec: num(s['date-nsec']) ?? 0,
    })),
  };
}

/** Parses `qemu-img info [--backing-chain] --output=json`: an object, or an array top first. */
export function parseImageInfo(stdout: string): ImageInfo[] {
  const raw: unknown = JSON.parse(stdout);
  const layers = Array.isArray(raw) ? raw : [raw];
  return layers.map((layer) => parseOne(layer as Json));
}
