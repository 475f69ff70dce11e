// Builders for the exact qemu-img command lines chainform runs: argv arrays, never shell strings.
// Every command names every format explicitly so qemu-img never probes one.
import type { Options } from '../manifest/manifest.generated.js';
import { fileArg, optionValue } from './filenames.js';

/** An argv array; the first element is the program. */
export type Argv = readonly string[];

/**
 * How qemu selects an internal snapshot: `snapshot.name=` for a name, `snapshot.id=` for an id
 * (see {@link snapshotSelector}); commas in a name are escaped.
 */
function snapshotArgs(snapshot: string | undefined): string[] {
  return snapshot === undefined ? [] : ['-l', snapshot];
}

/** The `-l` value selecting a snapshot by name or by id. */
export function snapshotSelector(snapshot: { by: 'name' | 'id'; value: string }): string {
  return `snapshot.${snapshot.by}=${optionValue(snapshot.value)}`;
}

/** `-o` list for the options chainform manages (manifest keys to qemu-img option syntax). */
export function creationOptions(options: Options): string | undefined {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(options) as [keyof Options, unknown][]) {
    if (value === undefined) continue;
    const text = typeof value === 'boolean' ? (value ? 'on' : 'off') : String(value);
    parts.push(`${key}=${optionValue(text)}`);
  }
  return parts.length ? parts.join(',') : undefined;
}

function withOptions(options: Options): string[] {
  const o = creationOptions(options);
  return o ? ['-o', o] : [];
}

/**
 * `qemu-img info` of one file whose format is not known: qemu-img detects it from the header.
 * Only for a source the manifest leaves unpinned, or a backing whose image records no format.
 */
export function probeInfoCommand(path: string): Argv {
  return ['qemu-img', 'info', '--output=json', '-U', fileArg(path)];
}

/**
 * `qemu-img info` of one layer, read-only and shared. Without --backing-chain qemu opens no
 * backing file, so a hostile backing name is seen before anything follows it (read-chain.ts).
 */
export function layerInfoCommand(path: string, format: string): Argv {
  return ['qemu-img', 'info', '--output=json', '-U', '-f', format, fileArg(path)];
}

/**
 * `qemu-img info` of a whole chain, top first, taking QEMU's shared read lock on every layer
 * (no `-U`): it fails when any layer is held open for writing. Only for a chain whose backing
 * names chainform has already read from the headers and found to be plain files
 * (probe-chains.ts): qemu follows them without asking.
 */
export function chainInfoCommand(top: string, format: string): Argv {
  return ['qemu-img', 'info', '--output=json', '--backing-chain', '-f', format, fileArg(top)];
}

// Why convert and rebase carry no cache or copy flags (issue 6, bench/scenarios/flags.mjs, 1 GiB,
// ext4, shared 2-core machine): convert's default cache=unsafe followed by the executor's fsync
// was never beaten clearly. `-t writeback` and `-m 16 -W` were within the noise; `-t none` and
// `-T none` (O_DIRECT) were no faster, and on a convert -B 1.8x and 1.4x slower; `-C`
// (copy_file_range here) was no faster and skips zero detection, so written zeros become data.
// Safe rebase already defaults to cache=writeback, which flushes on close. The executor's fsync
// stays: with cache=unsafe, it is what makes the output durable.

/** A full copy of what `source` presents, as a standalone image. */
export function convertCommand(args: {
  source: string;
  sourceFormat: string;
  snapshot?: string | undefined;
  target: string;
  targetFormat: string;
  options: Options;
}): Argv {
  return [
    'qemu-img',
    'convert',
    '-p',
    '-f',
    args.sourceFormat,
    ...snapshotArgs(args.snapshot),
    '-O',
    args.targetFormat,
    ...withOptions(args.options),
    fileArg(args.source),
    fileArg(args.target),
  ];
}

/**
 * Copies only the clusters allocated in `source`'s top layer, on top of `backingName`.
 * Correct only when that backing presents the same content as the source's current backing.
 */
export function convertKeepingBackingCommand(args: {
  source: string;
  sourceFormat: string;
  snapshot?: string | undefined;
  target: string;
  targetFormat: string;
  options: Options;
  backingName: string;
  backingFormat: string;
}): Argv {
  return [
    'qemu-img',
    'convert',
    '-p',
    '-f',
    args.sourceFormat,
    ...snapshotArgs(args.snapshot),
    '-O',
    args.targetFormat,
    ...withOptions(args.options),
    '-B',
    args.backingName,
    '-F',
    args.backingFormat,
    fileArg(args.source),
    fileArg(args.target),
  ];
}

/**
 * `qemu-img measure` of the image a convert of `source` would write. With `topLayerOnly` the
 * source's backing is cut off (`"backing": null`), which sizes a `convert -B`: only the layer's
 * own clusters. On an overlay a plain measure would report the flattened size.
 */
export function measureCommand(args: {
  source: string;
  sourceFormat: string;
  snapshot?: string | undefined;
  targetFormat: string;
  options: Options;
  topLayerOnly: boolean;
}): Argv {
  const image = args.topLayerOnly
    ? `json:${JSON.stringify({ driver: args.sourceFormat, file: { driver: 'file', filename: fileArg(args.source) }, backing: null })}`
    : fileArg(args.source);
  return [
    'qemu-img',
    'measure',
    '--output=json',
    // The json: form names the driver itself; -f with it would be contradictory.
    ...(args.topLayerOnly ? [] : ['-f', args.sourceFormat]),
    ...snapshotArgs(args.snapshot),
    '-O',
    args.targetFormat,
    ...withOptions(args.options),
    image,
  ];
}

/** A new, empty overlay of `backing`: an absolute path, or an `nbd+unix://` URL of an export. */
export function createOverlayCommand(args: {
  target: string;
  format: string;
  options: Options;
  backing: string;
  backingFormat: string;
  /** Virtual size in bytes; the backing's when not given. */
  size?: number | undefined;
}): Argv {
  return [
    'qemu-img',
    'create',
    '-q',
    '-f',
    args.format,
    ...withOptions(args.options),
    '-b',
    args.backing.startsWith('nbd+unix://') ? args.backing : fileArg(args.backing),
    '-F',
    args.backingFormat,
    fileArg(args.target),
    ...(args.size === undefined ? [] : [String(args.size)]),
  ];
}

/**
 * Safe rebase: copies into `image` every cluster where the old and new backing differ, then
 * writes the new backing link. The image is opened with detect-zeroes so zeros over backing
 * data become zero clusters instead of data.
 */
export function safeRebaseCommand(args: {
  image: string;
  format: string;
  backingName: string;
  backingFormat: string;
}): Argv {
  return [
    'qemu-img',
    'rebase',
    '-p',
    '--image-opts',
    '-b',
    args.backingName,
    '-F',
    args.backingFormat,
    `driver=${args.format},file.filename=${optionValue(fileArg(args.image))},detect-zeroes=on`,
  ];
}

/** Unsafe rebase: rewrites only the backing link. Correct only when content is known equal. */
export function repointCommand(args: {
  image: string;
  format: string;
  backingName: string;
  backingFormat: string;
}): Argv {
  return [
    'qemu-img',
    'rebase',
    '-u',
    '-f',
    args.format,
    '-b',
    args.backingName,
    '-F',
    args.backingFormat,
    fileArg(args.image),
  ];
}

/** `qemu-img compare`: exit 0 when both present the same content, 1 when they differ. */
export function compareCommand(args: { a: string; aFormat: string; b: string; bFormat: string }): Argv {
  return ['qemu-img', 'compare', '-f', args.aFormat, '-F', args.bFormat, fileArg(args.a), fileArg(args.b)];
}

/** `qemu-img compare` of a file with a snapshot served read-only on a unix socket (raw over NBD). */
export function compareWithExportCommand(args: { a: string; aFormat: string; socket: string }): Argv {
  return ['qemu-img', 'compare', '-f', args.aFormat, '-F', 'raw', fileArg(args.a), nbdUrl(args.socket)];
}

/** `qemu-img check` of one image (read-only: no `-r`). Exit 0 clean, 3 leaked clusters only, 2 corrupt. */
export function checkCommand(path: string, format: string): Argv {
  return ['qemu-img', 'check', '-q', '-f', format, fileArg(path)];
}

/**
 * `qemu-img check -r all` on a qcow2 image left with its dirty flag (lazy refcounts) by an
 * interrupted in-place step: it rebuilds the refcounts, as qemu does itself on the next
 * writable open. Never for an image chainform was not changing.
 */
export function repairRefcountsCommand(path: string): Argv {
  return ['qemu-img', 'check', '-q', '-r', 'all', '-f', 'qcow2', fileArg(path)];
}

/** A read-only, persistent qemu-nbd export of one internal snapshot, on a unix socket. */
export function snapshotExportCommand(args: { image: string; format: string; snapshot: string; socket: string }): Argv {
  return [
    'qemu-nbd',
    '--read-only',
    '--persistent',
    '--format',
    args.format,
    '--load-snapshot',
    args.snapshot,
    '--socket',
    args.socket,
    fileArg(args.image),
  ];
}

/** The URL qemu opens for an NBD export on a unix socket. */
export function nbdUrl(socket: string): string {
  return `nbd+unix:///?socket=${socket}`;
}

/** Reads at most this many ranges per qemu-io process, keeping each command line short. */
export const COPY_ON_READ_RANGES_PER_COMMAND = 1024;

/**
 * `qemu-io -C` reading guest byte ranges of a qcow2 overlay: copy-on-read writes every cluster
 * read from the backing into the overlay, so afterwards the overlay holds exactly those ranges
 * (rounded to its clusters). `-t unsafe` like convert's default: the executor fsyncs the file
 * before the step counts as done. One command per {@link COPY_ON_READ_RANGES_PER_COMMAND} ranges.
 */
export function copyOnReadCommands(args: {
  image: string;
  format: string;
  ranges: readonly (readonly [number, number])[];
}): Argv[] {
  const commands: Argv[] = [];
  for (let first = 0; first < args.ranges.length; first += COPY_ON_READ_RANGES_PER_COMMAND) {
    const reads = args.ranges
      .slice(first, first + COPY_ON_READ_RANGES_PER_COMMAND)
      .flatMap(([offset, length]) => ['-c', `read -q ${offset} ${length}`]);
    commands.push(['qemu-io', '-C', '-t', 'unsafe', '-f', args.format, ...reads, fileArg(args.image)]);
  }
  return commands;
}

/** `qemu-img amend`: changes compat / lazy_refcounts / refcount_bits of a qcow2 image in place. */
export function amendCommand(args: { image: string; format: string; options: Options }): Argv {
  return ['qemu-img', 'amend', '-p', '-f', args.format, ...withOptions(args.options), fileArg(args.image)];
}

/** `qemu-img resize` to an exact virtual size; shrinking must be asked for explicitly. */
export function resizeCommand(args: { image: string; format: string; size: number; shrink: boolean }): Argv {
  return [
    'qemu-img',
    'resize',
    '-f',
    args.format,
    ...(args.shrink ? ['--shrink'] : []),
    fileArg(args.image),
    String(args.size),
  ];
}
