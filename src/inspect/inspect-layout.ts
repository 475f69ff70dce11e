// Stage 3: look at what is on disk. Every qemu-img call here is a read-only `info` with every
// format passed explicitly; only a backing whose image records no format is detected, once, and
// reported. Chains are described one qemu-img process per chain where the headers allow it
// (probe-chains.ts), layer by layer otherwise (read-chain.ts).
import { realpathSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { dirname } from 'node:path';
import { type Diagnostic, error, type SourceLocation, warning } from '../diagnostics/diagnostic.js';
import type { ResolvedManifest } from '../manifest/resolve-manifest.js';
import type { ImageInfo } from '../qemu/image-info.js';
import { qemuMessage } from '../qemu/messages.js';
import { type CommandRunner, withConcurrency } from '../qemu/runner.js';
import type { Fingerprint } from '../state/fingerprint.js';
import type { Ledger } from '../state/ledger.js';
import { memoize } from '../util/memo.js';
import { resolvePath } from '../util/paths.js';
import { type FileKind, type ImageFile, readImageFile } from './image-file.js';
import { memoizeInfo } from './memo-runner.js';
import { mountedFileAt, mountPointOf } from './mount-points.js';
import { type ChainProbes, probeChains } from './probe-chains.js';
import { recordedSnapshotSizes } from './qcow2-delta.js';
import { readChain } from './read-chain.js';
import { type SnapshotDeltaPair, snapshotDeltaPairs } from './snapshot-deltas.js';

/** One layer of an inspected chain, with the fingerprints of its file and of its data file. */
export interface ChainLayer extends ImageInfo {
  /** Absolute, normalised path of the layer's file (`filename` is as qemu-img printed it). */
  path: string;
  fingerprint: Fingerprint | null;
  /** Absolute path of its external data file, if it has one. */
  dataFilePath?: string;
  dataFileFingerprint?: Fingerprint | null;
  /**
   * The disk size each internal snapshot recorded when it was taken, by snapshot id, read from
   * the snapshot table (qemu-img info does not show it). Absent when the layer has no snapshots
   * or its table gives no sizes (old images, or a file qcow2-delta.ts cannot read).
   */
  snapshotSizes?: Readonly<Record<string, number>>;
}

/**
 * The files a chain's content lives in, top first: each layer, then its data file if it has one.
 * Ledger chains are recorded in this order (see chainPrints).
 */
export function chainFiles(chain: readonly ChainLayer[]): string[] {
  let files = chainFileLists.get(chain);
  if (!files) {
    files = [];
    for (const layer of chain) {
      files.push(layer.path);
      if (layer.dataFilePath) files.push(layer.dataFilePath);
    }
    chainFileLists.set(chain, files);
  }
  return files;
}
/** Chains are built once per inspection and never changed: their file lists are computed once. */
const chainFileLists = new WeakMap<readonly ChainLayer[], string[]>();

/**
 * {@link chainFiles} of the chain below the top layer: the files its backing's content lives in.
 * Taken from the whole chain's list, so a slice of the chain is never used as a memo key.
 */
export function backingFiles(chain: readonly ChainLayer[]): string[] {
  const top = chain[0];
  return top ? chainFiles(chain).slice(top.dataFilePath ? 2 : 1) : [];
}

/** Fingerprints of {@link chainFiles}, in the same order. */
export function chainPrints(chain: readonly ChainLayer[]): (Fingerprint | null)[] {
  const prints: (Fingerprint | null)[] = [];
  for (const layer of chain) {
    prints.push(layer.fingerprint);
    if (layer.dataFilePath) prints.push(layer.dataFileFingerprint ?? null);
  }
  return prints;
}

/** What is known about one file chainform reads or writes. */
export interface InspectedFile {
  path: string;
  /** null when the file does not exist. */
  fingerprint: Fingerprint | null;
  /** The format it was opened with. */
  format: string;
  /** Its backing chain, top first; null when missing or unreadable. */
  chain: ChainLayer[] | null;
  /**
   * When its path is a symlink: the file it names, which a rewrite replaces (ImageFile), and
   * whether that file is on the filesystem of the link's folder (where the rewrite can write).
   */
  symlink?: { target: string; sameFilesystem: boolean };
  /** How many names (hard links) the file has, when more than one. */
  links?: number;
  /**
   * Its path with every symlink resolved, folders included, when that differs from the path and
   * the planner needs it (a manifest that resizes or retires: which names lead to one directory
   * entry, and so see a rewrite of it, where a hard link keeps the old file).
   */
  realPath?: string;
  /** When nothing exists at its path but a symlink to nothing: the missing name it leads to. */
  danglingLink?: string;
  /** True when that name lies under a file where a folder should be (ImageFile). */
  danglingThroughFile?: true;
  /** When the file is itself a mount point (bind-mounted there): that path. Nothing renames onto it. */
  mountedOver?: string;
  /** What is there when it is not a regular file (a folder, a FIFO, a device), for messages. */
  notAFile?: Exclude<FileKind, 'file'>;
}

/** Free space of the filesystem holding some output folders. */
export interface FilesystemSpace {
  /** An output folder on it (the first one seen). */
  dir: string;
  freeBytes: number;
}

/** Everything the planner knows about the disk. */
export interface InspectedLayout {
  files: ReadonlyMap<string, InspectedFile>;
  ledger: Ledger;
  /** Free space per output folder. */
  freeSpace: ReadonlyMap<string, FilesystemSpace>;
  /**
   * The pairs of states of one qcow2 source that the manifest links, whose differing ranges the
   * planner reads through `read()` for an image it must build (the one reading it does).
   */
  snapshotDeltaPairs: readonly SnapshotDeltaPair[];
}

interface Request {
  path: string;
  /** Always declared: chainform never lets qemu-img guess a format. */
  format: string;
  /** Where the manifest names it, looked up only when a diagnostic needs it. */
  at: () => SourceLocation;
  role: string;
}

function requestsFor(manifest: ResolvedManifest, ledger: Ledger): Request[] {
  const requests: Request[] = [];
  for (const image of manifest.images) {
    const recorded = ledger.outputs[image.path];
    requests.push({
      path: image.path,
      format: image.source ? (recorded?.format ?? image.format) : image.format,
      at: () => image.at.path,
      role: image.source ? (recorded ? 'output' : 'foreign-output') : 'image',
    });
    if (image.source) {
      requests.push({
        path: image.source.path,
        format: image.source.format,
        at: () => image.at.fromPath,
        role: 'source',
      });
    }
    if (image.backing?.kind === 'file') {
      requests.push({
        path: image.backing.path,
        format: image.backing.format,
        at: () => image.at.backing,
        role: 'backing',
      });
    }
    if (image.options.data_file !== undefined) {
      // Only whether it exists matters: it is never opened as an image here.
      requests.push({
        path: image.options.data_file,
        format: 'raw',
        at: () => image.at.option('data_file'),
        role: 'foreign-output',
      });
    }
  }
  for (const retired of manifest.retire) {
    // Only whether it exists, and is a file, matters: a file to delete is never opened here.
    requests.push({ path: retired.path, format: 'raw', at: () => retired.at, role: 'retired' });
  }
  return requests;
}

/** The tools one inspection shares: its runner, memoized file reads and chain probes. */
interface Inspection {
  runner: CommandRunner;
  fileOf: (path: string) => ImageFile;
  probes: ChainProbes;
  chainLayerOf: (layer: ImageInfo) => ChainLayer;
  diagnostics: Diagnostic[];
  qedBackingDeclared: (image: string, backing: string, format: string) => boolean;
  /** Whether files get their `realPath` (a realpath per file costs a plan of 10,000 images). */
  realPaths: boolean;
}

/** Whether the manifest declares a qed image at `image` on `backing` in `format` (see ChainReadAids). */
function qedBackingsOf(manifest: ResolvedManifest): (image: string, backing: string, format: string) => boolean {
  const declared = new Set<string>();
  for (const image of manifest.images) {
    if (image.format !== 'qed' || !image.backing) continue;
    const below = image.backing.kind === 'image' ? manifest.byId.get(image.backing.id) : image.backing;
    if (below) declared.add(`${image.path}\0${below.path}\0${below.format}`);
  }
  return (image, backing, format) => declared.has(`${image}\0${backing}\0${format}`);
}

async function inspectFile(request: Request, inspection: Inspection): Promise<InspectedFile> {
  const { runner, fileOf, probes, diagnostics } = inspection;
  const file = fileOf(request.path);
  const { fingerprint, linkTarget, links } = file;
  const format = request.format;
  if (!fingerprint) {
    const missing: InspectedFile = { path: request.path, fingerprint, format, chain: null };
    if (file.danglingLink !== undefined) missing.danglingLink = file.danglingLink;
    if (file.danglingThroughFile) missing.danglingThroughFile = true;
    return missing;
  }
  // The other-name facts are added only where there are some: ordinary files keep one shape.
  const found: InspectedFile = { path: request.path, fingerprint, format, chain: null };
  if (linkTarget !== undefined)
    found.symlink = {
      target: linkTarget,
      sameFilesystem: renameReaches(request.path, linkTarget, fingerprint.dev, fileOf),
    };
  if (links !== undefined) found.links = links;
  if (file.kind !== 'file') found.notAFile = file.kind;
  const mounted = file.kind === 'file' ? mountedFileAt(linkTarget ?? request.path) : undefined;
  if (mounted !== undefined) found.mountedOver = mounted;
  if (inspection.realPaths) {
    const real = linkTarget ?? realpathSync(request.path);
    if (real !== request.path) found.realPath = real;
  }
  const kind = file.kind;
  // A file at an output path that chainform did not build is never opened, nor anything but a
  // file where chainform built one (a folder in its place): the planner refuses both as
  // `output-exists`, which `status` reports as drift.
  if (request.role === 'foreign-output' || (request.role === 'output' && kind !== 'file')) return found;
  // A file to retire is never opened either; only image files are retired (a symlink is refused
  // by the planner, which sees every name the manifest gives it).
  if (request.role === 'retired' && kind === 'file') return found;
  if (kind !== 'file') {
    diagnostics.push(
      error('not-a-file', `${request.path} is a ${kind}, not an image file`, {
        location: request.at(),
        hint:
          kind === 'block device'
            ? 'chainform works on image files; block devices are not supported yet'
            : 'name the image file itself',
      }),
    );
    return found;
  }
  const problem = contradictedFormat(request, format, file.claimedFormat);
  if (problem) {
    diagnostics.push(problem);
    if (problem.severity === 'error') return found;
  }
  const layers =
    probes.chain(request.path, format) ??
    (await readChain(request.path, format, runner, diagnostics, request.at, {
      known: probes.layer,
      fileOf,
      qedBackingDeclared: inspection.qedBackingDeclared,
    }));
  if (!layers) return found;
  if (!probes.unlocked(request.path)) {
    const inUse = await heldForWriting(request, format, runner);
    if (inUse) diagnostics.push(inUse);
  }
  const chain = layers.map(inspection.chainLayerOf);

  return { ...found, chain };
}

/**
 * Whether a file made beside the symlink `path` can be renamed onto `target`, the file it names:
 * one device, and one mount (rename(2) does not cross a bind mount either). Where /proc cannot
 * name the mounts, the device decides. `targetDevice` is the target's (the stat through the link).
 */
function renameReaches(
  path: string,
  target: string,
  targetDevice: string,
  fileOf: (path: string) => ImageFile,
): boolean {
  const linkDir = dirname(path);
  if (fileOf(linkDir).fingerprint?.dev !== targetDevice) return false;
  return mountPointOf(realpathSync(linkDir)) === mountPointOf(dirname(target));
}

/**
 * Inspection reads with `-U` (no locks) so that `plan` can describe an image in use. This
 * probe takes QEMU's shared read lock: it fails when a running VM or a qemu-nbd export holds
 * the image open for writing, and then chainform must neither read nor write it.
 */
async function heldForWriting(
  request: Request,
  format: string,
  runner: CommandRunner,
): Promise<Diagnostic | undefined> {
  const probe = await runner.run(['qemu-img', 'info', '--output=json', '-f', format, request.path]);
  if (probe.exitCode === 0 || !/lock/i.test(probe.stderr)) return undefined;
  const holder = qemuMessage(probe.stderr);
  return error('image-in-use', `${request.path} is in use: another process holds it open for writing (${holder})`, {
    location: request.at(),
    hint: 'shut down the VM or stop the qemu-nbd export that uses it, then plan again',
  });
}

/**
 * A declared format the file's header contradicts. For an image reshaped in place that is an
 * error (the file is what it is). For a source or base declared raw it is a warning: a raw
 * disk may hold any bytes, so raw may be right, but it is more often a slip.
 */
function contradictedFormat(request: Request, format: string, claimed: string | undefined): Diagnostic | undefined {
  if (!claimed || claimed === format) return undefined;
  if (request.role === 'image') {
    return error(
      'format-mismatch',
      `${request.path} is a ${claimed} image (by its header), but the manifest says ${format}`,
      {
        location: request.at(),
        hint: `declare format: ${claimed}; to change its format, write a new image to another path with from: {path: ..., format: ${claimed}}`,
      },
    );
  }
  if (format !== 'raw') return undefined; // qemu-img itself refuses a header of another format
  return warning('raw-has-header', `${request.path} is declared raw, but its header says ${claimed}`, {
    location: request.at(),
    hint: `if it is a ${claimed} image, declare format: ${claimed}; a raw disk whose guest wrote such a header is rightly read as raw`,
  });
}

/**
 * Read-only qemu-img processes run at once while planning (inspection's `info`, and the
 * `measure` of convert steps in measure-steps.ts): enough to overlap their start-up, few enough
 * that a manifest of thousands of chains does not spawn thousands of processes together.
 */
export const INSPECT_JOBS = Math.max(4, availableParallelism() * 2);

/**
 * Inspects every file the manifest reads or writes, plus free space of output folders. `fileOf`
 * reads a file's facts; every file is stat-ed and its header read once, however many chains
 * share it (pass one that already read some files to reuse those reads).
 */
export async function inspectLayout(
  manifest: ResolvedManifest,
  ledger: Ledger,
  uncached: CommandRunner,
  fileOf: (path: string) => ImageFile = memoize(readImageFile),
): Promise<{ layout: InspectedLayout; diagnostics: Diagnostic[] }> {
  const runner = memoizeInfo(withConcurrency(uncached, INSPECT_JOBS));
  const chainLayerOf = memoize((layer: ImageInfo): ChainLayer => {
    // qemu resolves a relative data-file name against its working directory; chainform stores
    // absolute names, and reads a layer with a relative one only when its working directory is
    // the image's folder (read-chain.ts's relativeDataFile), where both resolve alike.
    const dataFilePath = layer.qcow2.dataFile ? resolvePath(dirname(layer.filename), layer.qcow2.dataFile) : undefined;
    const path = resolvePath(layer.filename);
    const sizes = layer.format === 'qcow2' && layer.snapshots.length > 0 ? recordedSnapshotSizes(path) : undefined;
    return {
      ...layer,
      path,
      fingerprint: fileOf(path).fingerprint,
      ...(dataFilePath ? { dataFilePath, dataFileFingerprint: fileOf(dataFilePath).fingerprint } : {}),
      ...(sizes instanceof Map && sizes.size > 0 ? { snapshotSizes: Object.fromEntries(sizes) } : {}),
    };
  });
  const diagnostics: Diagnostic[] = [];
  const files = new Map<string, InspectedFile>();
  const unique = new Map<string, Request>();
  for (const request of requestsFor(manifest, ledger)) {
    if (!unique.has(request.path)) unique.set(request.path, request);
  }
  const opened = [...unique.values()].filter((r) => r.role !== 'foreign-output' && r.role !== 'retired');
  const probes = await probeChains(opened, fileOf, runner);
  const inspection: Inspection = {
    runner,
    fileOf,
    probes,
    chainLayerOf,
    diagnostics,
    qedBackingDeclared: qedBackingsOf(manifest),
    realPaths: manifest.retire.length > 0 || manifest.images.some((image) => image.size !== undefined),
  };
  // Anything unexpected (permissions, I/O errors) becomes a located error, not a crash.
  const inspected = await Promise.all(
    [...unique.values()].map((request) =>
      inspectFile(request, inspection).catch((e: unknown): InspectedFile => {
        diagnostics.push(
          error('inspect-failed', `cannot inspect ${request.path}: ${(e as Error).message}`, {
            location: request.at(),
          }),
        );
        return { path: request.path, fingerprint: null, format: request.format, chain: null };
      }),
    ),
  );
  for (const file of inspected) files.set(file.path, file);

  const freeSpace = new Map<string, FilesystemSpace>();
  const seenDevices = new Map<string, FilesystemSpace>();
  // A rewrite of an image whose path is a symlink writes beside the file it names; the guest
  // data of an image with an external data file lands there (see writtenFolder in plan-layout.ts).
  const andTarget = (path: string) => {
    const target = files.get(path)?.symlink?.target;
    return target === undefined ? [path] : [path, target];
  };
  const written = manifest.images.flatMap((image) => {
    const kept = files.get(image.path)?.chain?.[0]?.dataFilePath;
    return [
      ...andTarget(image.path),
      ...(image.options.data_file === undefined ? [] : andTarget(image.options.data_file)),
      ...(kept === undefined ? [] : [kept]),
    ];
  });
  for (const path of written) {
    const dir = dirname(path);
    if (freeSpace.has(dir)) continue;
    // The folder may not exist yet (apply creates it): measure the nearest one that does.
    let existing = dir;
    let dirPrint = fileOf(existing).fingerprint;
    while (!dirPrint && dirname(existing) !== existing) {
      existing = dirname(existing);
      dirPrint = fileOf(existing).fingerprint;
    }
    const device = dirPrint?.dev ?? dir;
    let space = seenDevices.get(device);
    if (!space) {
      const free = dirPrint ? await statfs(existing).then((s) => s.bavail * s.bsize) : Number.NaN;
      space = { dir, freeBytes: free };
      seenDevices.set(device, space);
    }
    freeSpace.set(dir, space);
  }
  return { layout: { files, ledger, freeSpace, snapshotDeltaPairs: snapshotDeltaPairs(manifest, files) }, diagnostics };
}
