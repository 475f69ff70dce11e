// Reads a backing chain one layer at a time, so that a backing name qemu would open as a
// protocol (`nbd://host/x`, `http://...`) or as `json:{...}` options is refused before anything
// opens it: an image is data, and its header must not make chainform connect or read elsewhere.
import { existsSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { type Diagnostic, error, type SourceLocation, warning } from '../diagnostics/diagnostic.js';
import { layerInfoCommand, probeInfoCommand } from '../qemu/commands.js';
import { backingFolderElsewhere, looksLikeProtocol, optionValue } from '../qemu/filenames.js';
import { type ImageInfo, parseImageInfo } from '../qemu/image-info.js';
import { qemuMessage } from '../qemu/messages.js';
import type { CommandResult, CommandRunner } from '../qemu/runner.js';
import { fileIdentity } from '../state/fingerprint.js';
import { memoize } from '../util/memo.js';
import { sameFile } from '../util/same-file.js';
import { shellQuote } from '../util/shell-quote.js';
import { type ImageFile, readImageFile } from './image-file.js';

/** The format qemu-img detects for `path`, or why it could not read it. */
async function probeFormat(path: string, runner: CommandRunner): Promise<{ format?: string; message?: string }> {
  const probe = await runner.run(probeInfoCommand(path));
  if (probe.exitCode !== 0) return { message: qemuMessage(probe.stderr) };
  return { format: parseImageInfo(probe.stdout)[0]?.format ?? 'raw' };
}

/**
 * Detects the format of an image whose format was not given, once, and says so: detection trusts
 * the header, which a guest can write into a raw disk. Undefined (with an error) if unreadable.
 */
export async function detectFormat(
  path: string,
  runner: CommandRunner,
  diagnostics: Diagnostic[],
  report: { at?: SourceLocation; pinHint: (format: string) => string },
): Promise<string | undefined> {
  const located = report.at ? { location: report.at } : {};
  const { format, message } = await probeFormat(path, runner);
  if (format === undefined) {
    diagnostics.push(error('inspect-failed', `cannot read ${path}: ${message ?? 'no message'}`, located));
    return undefined;
  }
  diagnostics.push(
    warning('format-detected', `the format of ${path} was detected as ${format}`, {
      ...located,
      hint: report.pinHint(format),
    }),
  );
  return format;
}

/**
 * Why a layer cannot be read as it stands: qemu marked it corrupt, it was left dirty by a crash
 * (lazy refcounts), its external data file is missing, or its file is cut short. qemu-img info
 * reports none of these (a cut file reads as zeros), so chainform would copy a damaged disk as if
 * it were whole, or fail midway.
 */
export function layerDamage(
  path: string,
  layer: ImageInfo,
  file: ImageFile,
): { code: string; message: string; hint: string } | undefined {
  const repair = () => repairLine(path, layer);
  if (layer.qcow2.corrupt) {
    return {
      code: 'image-corrupt',
      message: 'is marked corrupt by qemu (it found inconsistent metadata while writing it)',
      hint: `back the file up, then run \`${repair()}\` and compare the result with the VM's view`,
    };
  }
  if (layer.dirty) {
    return {
      code: 'image-dirty',
      message: 'has its dirty flag set: the last program that wrote it stopped without closing it (lazy refcounts)',
      hint: `with every VM using it stopped, run \`${repair()}\` to rebuild its refcounts`,
    };
  }
  // qemu-img info does not open the data file: without this, the plan would pass and its first
  // command fail (or, for an image kept in place, the layout pass for reached).
  const dataFile = layer.qcow2.dataFile;
  if (dataFile !== undefined) {
    const dataPath = resolve(dirname(path), dataFile);
    if (!existsSync(dataPath)) {
      return {
        code: 'data-file-missing',
        message: `keeps its guest data in the external data file ${dataPath}, which does not exist`,
        // amend cannot open the image without its data file unless it is told where it is now.
        hint: `restore the data file; if it was moved, point the image at it, NEW-PATH being its absolute path with each comma written twice (qemu's option syntax), and quoted for the shell if it holds spaces: \`${shellQuote(['qemu-img', 'amend', '--image-opts', '-o', 'data_file=NEW-PATH', `driver=qcow2,file.filename=${optionValue(resolve(path))},data-file.driver=file,data-file.filename=NEW-PATH`])}\``,
      };
    }
  }
  // An unreadable header gets no verdict here: qemu-img already read the file and reports its own errors.
  if (layer.format !== 'qcow2' || !file.pastEnd) return undefined;
  return {
    code: 'image-truncated',
    message: `is cut short: ${file.pastEnd}`,
    hint: 'the file is incomplete (an interrupted copy or a full disk): copy it again from where it came from',
  };
}

/** `cd FOLDER && ` for a command on the layer at `path` when its data file has a relative name. */
export function inImageFolder(path: string, layer: ImageInfo): string {
  const name = layer.qcow2.dataFile;
  return name === undefined || isAbsolute(name) ? '' : `cd ${shellQuote([dirname(resolve(path))])} && `;
}

/**
 * The `qemu-img check -r all` a person runs to rebuild the refcounts of the layer at `path`; in
 * its folder when its data file has a relative name, which qemu opens from the working directory.
 */
export function repairLine(path: string, layer: ImageInfo): string {
  return `${inImageFolder(path, layer)}${shellQuote(['qemu-img', 'check', '-r', 'all', '-f', 'qcow2', path])}`;
}

/**
 * What an external data-file name means for the layer at `path`: refused when it has `..` under
 * a symlinked folder (qemu opens another file than chainform's path names). A relative name: qemu opens the name
 * from the working directory of the program that opens the image, not from the image's folder
 * (unlike a backing name). chainform's own qemu-img commands run in its working directory: where
 * the name leads there to another file than the one beside the image, they would read (and a
 * copy would hold, and a repair would write) another disk's data, so the image is refused. Where
 * both are the same file, chainform reads the right one, and is told only that other programs
 * may not.
 */
export function relativeDataFile(
  path: string,
  layer: ImageInfo,
): { severity: 'error' | 'warning'; code: string; message: string; hint: string } | undefined {
  const name = layer.qcow2.dataFile;
  if (name === undefined) return undefined;
  // Any name with `..` under a symlinked folder: qemu opens it elsewhere than chainform's path.
  const elsewhere = backingFolderElsewhere(process.cwd(), name);
  if (elsewhere !== undefined) {
    return {
      severity: 'error',
      code: 'data-file-through-link',
      message: `${resolve(path)} keeps its guest data in the file named ${JSON.stringify(name)}, and a symlinked folder on the way makes qemu open it in ${elsewhere}, not in ${dirname(resolve(name))}`,
      hint: `give the image the real path of its data file: qemu-img amend -f qcow2 -o data_file=REALPATH ${shellQuote([resolve(path)])}`,
    };
  }
  if (isAbsolute(name)) return undefined;
  const image = resolve(path);
  const folder = dirname(image);
  const beside = resolve(folder, name);
  const fromHere = resolve(name);
  // amend opens the image, and so its data file, by the same rule: it must run in the folder.
  const amend = `${inImageFolder(image, layer)}${shellQuote(['qemu-img', 'amend', '-f', 'qcow2', '-o', `data_file=${optionValue(beside)}`, image])}`;
  const named = `${image} keeps its guest data in the file named ${JSON.stringify(name)}, a relative name, which qemu opens from the working directory of the program that opens the image, not from the image's folder`;
  if (!sameFile(fromHere, beside)) {
    return {
      severity: 'error',
      code: 'relative-data-file',
      message: `${named}: chainform's qemu-img, run from ${process.cwd()}, would read ${fromHere}, not ${beside}`,
      hint: `give the image the absolute name of its data file, after checking that ${beside} is the file the VM uses: \`${amend}\`; or run chainform from ${folder}`,
    };
  }
  return {
    severity: 'warning',
    code: 'relative-data-file',
    message: `${named}: from ${process.cwd()}, where chainform runs, that is ${beside}, but a program started elsewhere reads another file`,
    hint: `give the image the absolute name of its data file: \`${amend}\``,
  };
}

/**
 * The layer a `qemu-img info` result describes, parsed once per result: an inspection answers
 * repeated questions with the same result object (memo-runner.ts), so the chains of all images
 * built on one base share that base's layer object instead of holding thousands of copies.
 */
const parsedLayers = new WeakMap<CommandResult, ImageInfo | undefined>();
function parsedLayer(result: CommandResult): ImageInfo | undefined {
  if (!parsedLayers.has(result)) parsedLayers.set(result, parseImageInfo(result.stdout)[0]);
  return parsedLayers.get(result);
}

/** Longer chains than this are refused (a loop of backing links would never end). */
export const MAX_DEPTH = 256;

/** What an inspection has already read, shared with {@link readChain}. */
export interface ChainReadAids {
  /** Layers a chain probe has already described (probe-chains.ts); others cost a qemu-img info. */
  known?: (path: string, format: string) => ImageInfo | undefined;
  /** The file facts of a path, memoized by the caller; read afresh when absent. */
  fileOf?: (path: string) => ImageFile;
  /**
   * Whether the manifest declares the qed image at `image` on `backing` in `format`: the image
   * cannot record that format (see below), and the manifest vouches for it.
   */
  qedBackingDeclared?: (image: string, backing: string, format: string) => boolean;
}

/** Device and inode of `path`, or its normalised path when it cannot be stat-ed. */
function fileIdentityOf(path: string, fileOf: (path: string) => ImageFile): string {
  try {
    const { fingerprint } = fileOf(path);
    if (fingerprint) return fileIdentity(fingerprint);
  } catch {
    // e.g. a folder without search permission: the path stands for the file
  }
  return resolve(path);
}

/**
 * What to do when `image` names a backing file, `missing`, that is not there: most often a base
 * renamed or moved away. chainform can re-point the image only while it can read the old base
 * (to check the new one presents the same), so the way through is to give the file its old
 * name back, or to re-point the image by hand, unchecked.
 */
function missingBackingHint(image: string, missing: string, format: string | undefined): string {
  // A link to the file, in a real folder: a link to a moved folder would make qemu resolve the
  // base's own relative backing names ("../x") from the folder the link leads to.
  const folder = dirname(missing);
  const link = `ln -s /absolute/path/of/NEW ${shellQuote([missing])}`;
  const back = existsSync(folder)
    ? `If that file was renamed or moved to NEW, make it readable under its old name again (${link})`
    : `Its folder ${folder} is gone too: if the file was moved to NEW, make it readable under its old name again, in a real folder (mkdir -p ${shellQuote([folder])} && ${link})`;
  const formatArg = format ?? 'FORMAT';
  const formatNote = format ? '' : ` (${image} does not record its backing's format: give the real one)`;
  return `${image} names ${missing} as its backing file, and nothing is there. ${back} and plan again: a manifest that names NEW as the backing then re-points ${image} at it, checked. Unchecked, by hand, only if NEW is that very file: qemu-img rebase -u -F ${formatArg} -b NEW ${shellQuote([image])}${formatNote} (NEW relative to the image's folder, or absolute)`;
}

/** The layers of a chain, top first; or null with the reason in `diagnostics`. */
export async function readChain(
  path: string,
  format: string,
  runner: CommandRunner,
  diagnostics: Diagnostic[],
  at?: () => SourceLocation,
  { known, fileOf: readFacts = readImageFile, qedBackingDeclared }: ChainReadAids = {},
): Promise<ImageInfo[] | null> {
  // Each file's facts are read once here, for the loop check and the damage check.
  const fileOf = memoize(readFacts);
  const layers: ImageInfo[] = [];
  // Looked up only for a diagnostic: finding a location in a large manifest costs time.
  const located = () => (at ? { location: at() } : {});
  let current = path;
  let currentFormat = format;
  /** Whether `currentFormat` is recorded (declared, or stored by the layer above), not detected. */
  let formatRecorded = true;
  /**
   * The files read so far by identity (device and inode; the normalised path of a file that
   * cannot be stat-ed), to name a loop of backing links instead of following it: qemu does not
   * normalise backing names, so a loop through "./a.qcow2" never repeats a spelling.
   */
  const seen: string[] = [];
  const shown: string[] = [];
  for (let depth = 0; depth < MAX_DEPTH; depth++) {
    const identity = fileIdentityOf(current, fileOf);
    if (seen.includes(identity)) {
      const loop = [...shown.slice(seen.indexOf(identity)), resolve(current)].join(' -> ');
      diagnostics.push(
        error('backing-loop', `the backing chain of ${path} loops back on itself: ${loop}`, {
          ...located(),
          hint: 'no image can be read through a loop: re-point the wrong link at its real backing (qemu-img rebase -u -b BACKING -F FORMAT IMAGE)',
        }),
      );
      return null;
    }
    seen.push(identity);
    shown.push(resolve(current));
    const prefetched = known?.(current, currentFormat);
    const result = prefetched ? undefined : await runner.run(layerInfoCommand(current, currentFormat));
    if (result && result.exitCode !== 0) {
      const within = current === path ? '' : ` (in the backing chain of ${path})`;
      const namedBy = shown.at(-2);
      diagnostics.push(
        error('inspect-failed', `cannot read ${current} as ${currentFormat}${within}: ${qemuMessage(result.stderr)}`, {
          ...located(),
          hint:
            namedBy !== undefined && fileOf(current).fingerprint === null
              ? missingBackingHint(namedBy, current, formatRecorded ? currentFormat : undefined)
              : 'check the declared format and that the file and its backing files exist',
        }),
      );
      return null;
    }
    const layer = prefetched ?? (result && parsedLayer(result));
    if (!layer) return null;
    // First: where it leads to another file from here, every qemu-img run here (a hint's too)
    // would read that file.
    const dataFile = relativeDataFile(current, layer);
    if (dataFile) {
      const within = current === path ? '' : ` (in the backing chain of ${path})`;
      const { severity, code, message, hint } = dataFile;
      diagnostics.push((severity === 'error' ? error : warning)(code, `${message}${within}`, { ...located(), hint }));
      if (severity === 'error') return null;
    }
    const damage = layerDamage(current, layer, fileOf(current));
    if (damage) {
      const within = current === path ? '' : ` (in the backing chain of ${path})`;
      diagnostics.push(
        error(damage.code, `${current}${within} ${damage.message}`, { ...located(), hint: damage.hint }),
      );
      return null;
    }
    layers.push(layer);
    const name = layer.backingName;
    if (name === undefined) return layers;
    if (looksLikeProtocol(name)) {
      diagnostics.push(
        error(
          'unsafe-backing-name',
          `${current} names its backing ${JSON.stringify(name)}, which qemu would open as a protocol or as JSON options, not as a file`,
          {
            ...located(),
            hint: 'chainform does not follow such links. If it is a file of that name, re-point the image at "./" plus the name with qemu-img rebase -u',
          },
        ),
      );
      return null;
    }
    const elsewhere = backingFolderElsewhere(dirname(current), name);
    if (elsewhere !== undefined) {
      diagnostics.push(
        error(
          'backing-name-through-link',
          `${current} names its backing ${JSON.stringify(name)}, and a symlinked folder on the way makes qemu look for it in ${elsewhere}, not in ${dirname(resolve(dirname(current), name))}`,
          {
            ...located(),
            hint: `name the image by its real path (${realpathSync.native(dirname(current))}/...), or re-point it at a name without "..": qemu-img rebase -u -F FORMAT -b NAME ${shellQuote([current])}`,
          },
        ),
      );
      return null;
    }
    const next = layer.backingPath ?? resolve(dirname(current), name);
    formatRecorded = layer.backingFormat !== undefined;
    if (layer.backingFormat) {
      currentFormat = layer.backingFormat;
    } else if (fileOf(next).fingerprint === null) {
      // Nothing to detect: the next read fails, naming the missing file.
    } else {
      // No recorded backing format: qemu itself would probe it. Do so once, and say so. A qed
      // image records a backing format only for raw (a flag): on any other, qemu always probes,
      // and no rebase can store it. That is said too, unless the manifest declares that very
      // backing and format for it.
      currentFormat = (await probeFormat(next, runner)).format ?? 'raw';
      const qedCannotRecord = layer.format === 'qed' && currentFormat !== 'raw';
      if (!(qedCannotRecord && qedBackingDeclared?.(resolve(current), resolve(next), currentFormat))) {
        diagnostics.push(
          warning(
            'backing-format-missing',
            `${current} does not record the format of its backing ${name}; it was detected as ${currentFormat}`,
            {
              ...located(),
              hint: qedCannotRecord
                ? `qed records no backing format but raw, so qemu detects it at every open: make sure ${name} really is ${currentFormat}, and declare the image on it in the manifest to say so`
                : 'declare the image with a backing in the manifest: chainform then stores the format',
            },
          ),
        );
      }
    }
    current = next;
  }
  diagnostics.push(
    error('chain-too-deep', `the backing chain of ${path} is longer than ${MAX_DEPTH} images (a loop?)`, located()),
  );
  return null;
}
