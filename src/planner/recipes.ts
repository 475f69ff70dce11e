// Step builders: one function per recipe, each returning the exact commands and its cost.
// Which recipe applies is decided in plan-layout.ts; these only build correct steps.
import { basename, dirname, join } from 'node:path';
import type { SnapshotDelta } from '../inspect/snapshot-deltas.js';
import type { Options } from '../manifest/manifest.generated.js';
import {
  amendCommand,
  compareCommand,
  convertCommand,
  convertKeepingBackingCommand,
  copyOnReadCommands,
  createOverlayCommand,
  measureCommand,
  nbdUrl,
  repointCommand,
  resizeCommand,
  safeRebaseCommand,
  snapshotExportCommand,
} from '../qemu/commands.js';
import { hasZeroClusters, QCOW2_DEFAULT_CLUSTER_SIZE } from '../qemu/formats.js';
import {
  type LedgerIntent,
  type PlannedCommand,
  type PlannedHelper,
  RUNTIME_DIR,
  type Step,
  type StepKind,
} from './plan-types.js';
import { qcow2WorstCaseBytes } from './worst-case-size.js';

/** The file whose content a step reads: the source, or the image itself when in place. */
export interface ContentFile {
  path: string;
  format: string;
  /** Files of its chain, top first. */
  chain: string[];
  virtualSize: number;
  /** Bytes allocated in its top layer. */
  topBytes: number;
  /** Bytes allocated across its whole chain (upper bound of its data). */
  chainBytes: number;
  /** Files of the chain below it (layers and data files), as recorded in the ledger. */
  backingFiles: string[];
  /** The `-l` selector of the internal snapshot whose content this is; undefined: the active layer. */
  snapshot?: string | undefined;
  /** That snapshot's id (unique in its file). */
  snapshotId?: string | undefined;
}

/** The backing a new or changed image must point at. */
export interface BackingTarget {
  /** Absolute path of the backing file (once its own steps are done). */
  path: string;
  format: string;
  /** The name to store in the image header. */
  name: string;
  /** Files of its chain after apply, top first. */
  chain: string[];
  /** Bytes allocated across its chain (upper bound of what a safe rebase may compare). */
  chainBytes: number;
  /** The step that produces it, when the manifest builds or changes it in this plan. */
  producedBy: string | undefined;
}

/** What every recipe needs to know about the image being produced. */
export interface Target {
  id: string;
  path: string;
  format: string;
  options: Options;
  ledger: Omit<LedgerIntent, 'backingChain'> | undefined;
  /**
   * When `path` is a symlink: the file it names, which a rewrite replaces (see Step.renameOnto),
   * and whether it is on the filesystem of the link's folder.
   */
  symlink?: { target: string; sameFilesystem: boolean };
}

/** The temporary name a new image is written under, in its target's folder. */
export function temporaryPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.chainform-tmp`);
}

/**
 * Where a file at `path` is written anew: under a temporary name beside the path, then renamed
 * onto the file it replaces, which for a symlink is the file the link names. Beside the path,
 * qemu resolves a relative backing name as it will through the link; only a file on another
 * filesystem or mount gets its temporary beside it instead (a rename crosses neither).
 */
export function newFileAt(
  path: string,
  link: Target['symlink'],
): Pick<Step, 'temporaryPath' | 'renameOnto'> & { temporaryPath: string } {
  if (link === undefined) return { temporaryPath: temporaryPathFor(path) };
  const beside = link.sameFilesystem ? path : link.target;
  return { temporaryPath: temporaryPathFor(beside), renameOnto: link.target };
}

function newFileFor(target: Target): Pick<Step, 'temporaryPath' | 'renameOnto'> & { temporaryPath: string } {
  return newFileAt(target.path, target.symlink);
}

function baseStep(
  kind: StepKind,
  target: Target,
  reason: string,
  reads: string[],
  backing: BackingTarget | null,
  /** For in-place steps that keep the backing: the chain below the image, as it stays. */
  keptBackingChain: string[] = [],
): Omit<Step, 'commands' | 'expectedWriteBytes' | 'writeBytesIsUpperBound'> {
  return {
    id: `${target.id}:${kind}`,
    kind,
    image: target.id,
    path: target.path,
    reason,
    dependsOn: backing?.producedBy ? [backing.producedBy] : [],
    reads: [...new Set([...reads, ...(backing?.chain ?? [])])],
    writes: [target.path],
    ...(target.ledger ? { ledger: { ...target.ledger, backingChain: backing?.chain ?? keptBackingChain } } : {}),
  };
}

/**
 * The `qemu-img measure` sizing a convert of `content` into a qcow2 `target` (see
 * `Step.measure`). Only qcow2: for raw, measure reports the whole virtual size, while convert
 * writes a sparse file; other formats cannot be measured. Those keep the planner's bound.
 */
function measureOutput(
  target: Target,
  content: ContentFile,
  topLayerOnly: boolean,
): Pick<Step, 'measure' | 'worstCaseWriteBytes'> {
  if (target.format !== 'qcow2') return {};
  return {
    worstCaseWriteBytes: qcow2WorstCaseBytes(content.virtualSize, target.options),
    measure: measureCommand({
      source: content.path,
      sourceFormat: content.format,
      snapshot: content.snapshot,
      targetFormat: target.format,
      options: target.options,
      topLayerOnly,
    }),
  };
}

/** A full copy into a new standalone image. */
export function convertStep(target: Target, content: ContentFile, reason: string): Step {
  const newFile = newFileFor(target);
  const { temporaryPath } = newFile;
  return {
    ...baseStep('convert', target, reason, content.chain, null),
    ...newFile,
    commands: [
      {
        argv: convertCommand({
          source: content.path,
          sourceFormat: content.format,
          snapshot: content.snapshot,
          target: temporaryPath,
          targetFormat: target.format,
          options: target.options,
        }),
        purpose: 'copy everything the source presents into a new standalone image',
      },
    ],
    // Full and falloc preallocation allocate the whole virtual size.
    expectedWriteBytes: ['full', 'falloc'].includes(target.options.preallocation ?? 'off')
      ? content.virtualSize
      : Math.min(content.virtualSize, content.chainBytes),
    writeBytesIsUpperBound: true,
    ...measureOutput(target, content, false),
  };
}

/** `convert -B`: copies only the source's top layer onto an equivalent backing. */
export function convertKeepingBackingStep(
  target: Target,
  content: ContentFile,
  backing: BackingTarget,
  reason: string,
): Step {
  const newFile = newFileFor(target);
  const { temporaryPath } = newFile;
  return {
    ...baseStep('convert-keep-backing', target, reason, content.chain, backing),
    ...newFile,
    commands: [
      {
        argv: convertKeepingBackingCommand({
          source: content.path,
          sourceFormat: content.format,
          snapshot: content.snapshot,
          target: temporaryPath,
          targetFormat: target.format,
          options: target.options,
          backingName: backing.name,
          backingFormat: backing.format,
        }),
        purpose: "copy only the source's top layer, on top of the declared backing",
      },
    ],
    expectedWriteBytes: content.topBytes,
    // A snapshot's share of the top layer is not known without reading its tables.
    writeBytesIsUpperBound: content.snapshot !== undefined,
    ...measureOutput(target, content, content.chain.length > 1),
  };
}

/**
 * Where a diff's overlay reads the wanted content: the source file itself, or, for an internal
 * snapshot, a read-only qemu-nbd export of it (a private socket in the step's runtime folder).
 */
function contentForOverlay(content: ContentFile): { backing: string; format: string; helpers: PlannedHelper[] } {
  if (content.snapshot === undefined) return { backing: content.path, format: content.format, helpers: [] };
  const socket = `${RUNTIME_DIR}/source.sock`;
  return {
    backing: nbdUrl(socket),
    format: 'raw',
    helpers: [
      {
        argv: snapshotExportCommand({
          image: content.path,
          format: content.format,
          snapshot: content.snapshot,
          socket,
        }),
        socket,
        purpose: 'serve the snapshot read-only, as the content the new overlay must present',
      },
    ],
  };
}

/** The command creating a step's temporary file as an empty overlay on the wanted content. */
function emptyOverlayOn(
  overlay: { backing: string; format: string },
  target: Target,
  temporaryPath: string,
  size?: number,
): PlannedCommand {
  return {
    argv: createOverlayCommand({
      target: temporaryPath,
      format: target.format,
      options: target.options,
      backing: overlay.backing,
      backingFormat: overlay.format,
      size,
    }),
    purpose:
      size === undefined
        ? 'start an empty overlay that presents the wanted content'
        : 'start an empty overlay that presents the wanted content, already at its declared size (zeros past the content)',
  };
}

/**
 * The diff recipe: an empty overlay on the content, then a safe rebase onto the backing. With
 * `size`, the overlay is created that large: the rebase then also writes zeros where the
 * backing has data past the content's end, which is how an image without zero clusters grows
 * over a larger backing (see chooseSteps).
 */
export function diffStep(
  target: Target,
  content: ContentFile,
  backing: BackingTarget,
  reason: string,
  size?: number,
): Step {
  const newFile = newFileFor(target);
  const { temporaryPath } = newFile;
  const overlay = contentForOverlay(content);
  return {
    ...baseStep('diff', target, reason, content.chain, backing),
    ...newFile,
    ...(overlay.helpers.length ? { helpers: overlay.helpers } : {}),
    commands: [
      emptyOverlayOn(overlay, target, temporaryPath, size),
      {
        argv: safeRebaseCommand({
          image: temporaryPath,
          format: target.format,
          backingName: backing.name,
          backingFormat: backing.format,
        }),
        purpose: 'keep only the clusters that differ from the declared backing, then link it',
      },
    ],
    expectedWriteBytes: diffWriteEstimate(target, content, backing, size),
    writeBytesIsUpperBound: false,
  };
}

/**
 * What a diff is expected to write: the clusters where the content differs from the backing,
 * which lie in the content's data or in the backing's. Where the backing has data and the
 * content reads as zeros (holes, zero clusters, past its end), the rebase writes zeros: zero
 * clusters cost no data, except in a compat 0.10 qcow2 file, which has none and stores them as
 * data. An estimate, not a bound: qemu-img rebase writes each run of differing sectors (up to
 * 2 MiB) in one write, zeros and data together, and a difference allocates a whole cluster of
 * the new file; so a diff of sparse content onto a full backing can write its whole size.
 */
function diffWriteEstimate(target: Target, content: ContentFile, backing: BackingTarget, size?: number): number {
  if (target.format === 'qcow2' && !hasZeroClusters(target.options)) {
    return Math.min(size ?? content.virtualSize, content.chainBytes + backing.chainBytes);
  }
  return Math.min(content.virtualSize, content.chainBytes);
}

/**
 * What a delta link is expected to store. Copy-on-read writes each range into the overlay's own
 * clusters: with clusters larger than the source's, every one a range touches is counted whole
 * (too many where zeroed ranges cover whole clusters of the overlay: those stay zero clusters).
 * A range the wanted state holds as zero clusters is written as zero clusters (metadata only),
 * but only compat 1.1 has them: a compat 0.10 overlay stores the zeros as data.
 */
export function deltaWriteBytes(delta: SnapshotDelta, options: Options): number {
  const outputCluster = options.cluster_size ?? QCOW2_DEFAULT_CLUSTER_SIZE;
  if (outputCluster > delta.clusterSize) {
    let bytes = 0;
    let coveredTo = 0;
    for (const [offset, length] of delta.ranges) {
      const start = Math.max(coveredTo, Math.floor(offset / outputCluster) * outputCluster);
      const end = Math.ceil((offset + length) / outputCluster) * outputCluster;
      if (end > start) bytes += end - start;
      coveredTo = Math.max(coveredTo, end);
    }
    return bytes;
  }
  return hasZeroClusters(options) ? delta.bytes - delta.zeroBytes : delta.bytes;
}

/**
 * The delta recipe: an empty overlay on the wanted state of a qcow2 file, copy-on-read of the
 * ranges whose cluster tables differ from the state the backing presents, then `rebase -u` onto
 * the backing. Every cluster left out presents the same bytes in both states, so the unsafe
 * rebase is correct; the step refuses to start if the file changed since its tables were read.
 */
export function deltaStep(
  target: Target,
  content: ContentFile,
  backing: BackingTarget,
  delta: SnapshotDelta,
  reason: string,
): Step {
  const newFile = newFileFor(target);
  const { temporaryPath } = newFile;
  const overlay = contentForOverlay(content);
  const copies = copyOnReadCommands({ image: temporaryPath, format: target.format, ranges: delta.ranges });
  const { dependsOn, ...base } = baseStep('delta', target, reason, content.chain, backing);
  return {
    ...base,
    // The copies read only the source: the link below is needed from the `rebase -u` on.
    dependsOn: [],
    ...(dependsOn.length ? { finishAfter: { steps: dependsOn, beforeCommand: 1 + copies.length } } : {}),
    ...newFile,
    ...(overlay.helpers.length ? { helpers: overlay.helpers } : {}),
    plannedFrom: [{ path: delta.path, fingerprint: delta.fingerprint }],
    commands: [
      emptyOverlayOn(overlay, target, temporaryPath),
      ...copies.map((argv, i) => ({
        argv,
        purpose: `copy in the clusters that differ from the backing's state (${copies.length > 1 ? `part ${i + 1} of ${copies.length}, ` : ''}${delta.ranges.length} ranges in all)`,
      })),
      {
        argv: repointCommand({
          image: temporaryPath,
          format: target.format,
          backingName: backing.name,
          backingFormat: backing.format,
        }),
        purpose: 'link it to the declared backing (every cluster not copied is the same there)',
      },
    ],
    // An estimate, not a bound (see deltaWriteBytes).
    expectedWriteBytes: deltaWriteBytes(delta, target.options),
    writeBytesIsUpperBound: false,
  };
}

/** A safe rebase of the image in place: its content is kept, the backing changes. */
export function rebaseInPlaceStep(
  target: Target,
  content: ContentFile,
  backing: BackingTarget,
  oldBackingBytes: number,
  reason: string,
): Step {
  return {
    ...baseStep('rebase', target, reason, content.chain, backing),
    commands: [
      {
        argv: safeRebaseCommand({
          image: target.path,
          format: content.format,
          backingName: backing.name,
          backingFormat: backing.format,
        }),
        purpose: 'copy in the clusters where old and new backing differ, then relink',
      },
    ],
    // An estimate, as a diff's is (see diffWriteEstimate).
    expectedWriteBytes: Math.min(content.virtualSize, oldBackingBytes),
    writeBytesIsUpperBound: false,
  };
}

/** An unsafe rebase: rewrites the backing link only; content is known to be equal. */
export function repointStep(target: Target, content: ContentFile, backing: BackingTarget, reason: string): Step {
  return {
    ...baseStep('repoint', target, reason, content.chain, backing),
    commands: [
      {
        argv: repointCommand({
          image: target.path,
          format: content.format,
          backingName: backing.name,
          backingFormat: backing.format,
        }),
        purpose: 'rewrite the backing link (no data is read or copied)',
      },
    ],
    expectedWriteBytes: 0,
    writeBytesIsUpperBound: false,
  };
}

/** The backing a source or image has today, for a `qemu-img compare` against the declared one. */
export interface CurrentBacking {
  path: string;
  format: string;
}

function compareFirst(current: CurrentBacking, backing: BackingTarget) {
  return {
    argv: compareCommand({ a: current.path, aFormat: current.format, b: backing.path, bFormat: backing.format }),
    purpose: 'check whether the current backing presents the same content as the declared one',
    check: true,
  };
}

/**
 * Compare the source's current backing with the declared one: identical, copy only the top
 * layer (`convert -B`); different, fall back to the diff recipe. A compare stops at the first
 * difference, so the check is cheap when they differ and saves the full diff when they match.
 */
export function verifiedConvertKeepingBackingStep(
  target: Target,
  content: ContentFile,
  current: CurrentBacking,
  backing: BackingTarget,
  reason: string,
): Step {
  // The check decides which branch runs: no measure can size the step before it.
  const {
    measure: _unused,
    worstCaseWriteBytes: _unusedBound,
    ...cheap
  } = convertKeepingBackingStep(target, content, backing, reason);
  const safe = diffStep(target, content, backing, reason);
  return {
    ...cheap,
    id: `${target.id}:verified-convert-keep-backing`,
    kind: 'verified-convert-keep-backing',
    ...(safe.helpers ? { helpers: safe.helpers } : {}),
    commands: [compareFirst(current, backing), ...cheap.commands],
    otherwise: safe.commands,
    expectedWriteBytes: Math.max(cheap.expectedWriteBytes, safe.expectedWriteBytes),
    writeBytesIsUpperBound: cheap.writeBytesIsUpperBound && safe.writeBytesIsUpperBound,
  };
}

/** Compare old and new backing: identical, rewrite the link only; different, safe rebase. */
export function verifiedRepointStep(
  target: Target,
  content: ContentFile,
  current: CurrentBacking,
  backing: BackingTarget,
  oldBackingBytes: number,
  reason: string,
): Step {
  const cheap = repointStep(target, content, backing, reason);
  const safe = rebaseInPlaceStep(target, content, backing, oldBackingBytes, reason);
  return {
    ...cheap,
    id: `${target.id}:verified-repoint`,
    kind: 'verified-repoint',
    commands: [compareFirst(current, backing), ...cheap.commands],
    otherwise: safe.commands,
    expectedWriteBytes: safe.expectedWriteBytes,
    writeBytesIsUpperBound: safe.writeBytesIsUpperBound,
  };
}

/** `qemu-img amend` of the image in place (options amend can change, see compare-options.ts). */
export function amendStep(target: Target, content: ContentFile, options: Options, reason: string): Step {
  return {
    ...baseStep('amend', target, reason, content.chain, null, content.backingFiles),
    commands: [
      {
        argv: amendCommand({ image: target.path, format: content.format, options }),
        purpose: 'change the header options in place (a downgrade to 0.10 writes zero clusters out as data)',
      },
    ],
    // A downgrade writes zero clusters as data: at most the image's size.
    expectedWriteBytes: options.compat !== undefined ? content.virtualSize : 0,
    writeBytesIsUpperBound: true,
  };
}

/**
 * `qemu-img resize` of the image in place. After `previous`, another in-place step of the image
 * (a repoint or rebase), it opens the backing chain that step leaves, and records that chain
 * (the last step of an image writes its ledger entry; the chain it has now would make the next
 * plan rebuild it).
 */
export function resizeStep(
  target: Target,
  content: ContentFile,
  size: number,
  shrink: boolean,
  reason: string,
  previous: Step | undefined,
): Step {
  const reads = [...new Set([...content.chain, ...(previous?.reads ?? [])])];
  return {
    ...baseStep('resize', target, reason, reads, null, previous?.ledger?.backingChain ?? content.backingFiles),
    commands: [resizeOf(target.path, target.format, size, shrink)],
    expectedWriteBytes: 0,
    writeBytesIsUpperBound: false,
  };
}

/**
 * Grows a compat 0.10 qcow2 image in place over a larger backing. qemu must zero the grown area
 * that the backing covers (or the backing's data there would show through), and compat 0.10 has
 * no zero clusters, so `qemu-img resize` refuses. The image is amended to compat 1.1, grown to
 * the backing's size with zero clusters there, and amended back to 0.10, which writes them out
 * as zeros; then grown the rest of the way, past the backing's end, where nothing needs zeroing.
 * Only the grown area over the backing is written, where a rewrite would read the whole chain
 * twice. Killed after the first resize, the image presents the same content at compat 1.1, and
 * the next plan amends it back (the caller makes sure the manifest declares compat 0.10);
 * killed before it, the next plan rewrites it.
 */
export function growCompat010Step(
  target: Target,
  content: ContentFile,
  size: number,
  backing: BackingTarget,
  backingSize: number,
  reason: string,
): Step {
  const amendTo = (compat: '0.10' | '1.1', purpose: string) => ({
    argv: amendCommand({ image: target.path, format: 'qcow2', options: { compat } }),
    purpose,
  });
  const overBacking = Math.min(size, backingSize);
  return {
    // The backing as declared: what the step reads (ordered after any step that makes or
    // reshapes it) and what the ledger records.
    ...baseStep('resize', target, reason, content.chain, backing),
    commands: [
      amendTo('1.1', 'compat 1.1 for the resize: it has zero clusters'),
      resizeOf(target.path, 'qcow2', overBacking, false),
      amendTo('0.10', 'back to compat 0.10: the zero clusters over the backing are written out as zeros'),
      ...(size > overBacking ? [resizeOf(target.path, 'qcow2', size, false)] : []),
    ],
    expectedWriteBytes: Math.max(0, overBacking - content.virtualSize),
    writeBytesIsUpperBound: false,
  };
}

/** The resize command for a file (a step's temporary file, or the image in place). */
export function resizeOf(path: string, format: string, size: number, shrink: boolean) {
  return {
    argv: resizeCommand({ image: path, format, size, shrink }),
    purpose: shrink ? 'shrink to the declared size (data past the new end is dropped)' : 'grow to the declared size',
  };
}

/**
 * A new image with an external data file: qemu-img creates the data file under a temporary name
 * too; once the commands succeeded, the header is amended to name the final data file, and the
 * executor renames the data file before the image. (qemu 7.2 opens a relative data-file name
 * against the opener's working directory, so the name stored is absolute.)
 */
export function withDataFile(
  step: Step,
  dataFile: string,
  format: string,
  newData: Pick<Step, 'temporaryPath' | 'renameOnto'> & { temporaryPath: string },
): Step {
  if (!step.temporaryPath) return step;
  const rename = {
    argv: amendCommand({ image: step.temporaryPath, format, options: { data_file: dataFile } }),
    purpose: 'name the final data file in the header (it is renamed into place next)',
  };
  return {
    ...step,
    commands: [...step.commands, rename],
    ...(step.otherwise ? { otherwise: [...step.otherwise, rename] } : {}),
    extraTemporaries: [
      {
        temporaryPath: newData.temporaryPath,
        path: dataFile,
        ...(newData.renameOnto ? { onto: newData.renameOnto } : {}),
      },
    ],
    writes: [...step.writes, dataFile],
  };
}
