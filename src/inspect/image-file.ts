// What chainform reads of an image file by itself, with one stat and one open: its identity, what
// kind of file it is, the format its header claims, and for qcow2 the header fields that say where
// its backing is and whether its metadata fits in the file (docs/interop/qcow2.txt).
//
// These reads are synchronous on purpose. Inspection reads a few hundred bytes from each of up
// to thousands of files; a synchronous call costs microseconds, an asynchronous one a thread-pool
// round trip and a promise (planning 10,000 images spent most of its time there). Nothing else
// needs the event loop while a header is read, and a FIFO is never opened (see `kind`).
import {
  type BigIntStats,
  closeSync,
  lstatSync,
  openSync,
  readlinkSync,
  readSync,
  realpathSync,
  statSync,
} from 'node:fs';
import { basename, dirname } from 'node:path';
import { type Fingerprint, fingerprintOfStats, isAbsentPath } from '../state/fingerprint.js';
import { qcow2MetadataPastEnd } from './qcow2-extent.js';
import type { DeferredTruncationChecks } from './truncation-checks.js';

/** What a path is, following symlinks. Only a regular file is ever opened. */
export type FileKind = 'file' | 'directory' | 'FIFO (named pipe)' | 'socket' | 'block device' | 'character device';

/** The qcow2 header fields chainform relies on before qemu-img opens the file. */
export interface Qcow2Header {
  /** The backing name as stored (relative names are relative to the image's folder). */
  backingName?: string;
  /** The backing format recorded in the header extension; absent in old images. */
  backingFormat?: string;
  /** The external data file's name (header extension), when there is one. */
  dataFileName?: string;
}

/** One file as chainform found it. */
export interface ImageFile {
  /** null when nothing exists at the path. */
  fingerprint: Fingerprint | null;
  kind?: FileKind;
  /** The format its header signature names; undefined for none (raw data) or not read. */
  claimedFormat?: string;
  /** Parsed when the header is a qcow2 one. */
  qcow2?: Qcow2Header;
  /** For qcow2: where metadata lies past the end of the file (it was cut short), if it does. */
  pastEnd?: string;
  /** Why the header could not be read, when it could not (the file is still what it is). */
  unreadable?: string;
  /**
   * When the path is a symlink: the file it names (every link resolved). A rewrite replaces that
   * file, so that the link, and every program that opens the file by its own name, see the result.
   */
  linkTarget?: string;
  /** How many names (hard links) the file has, when it has more than one. */
  links?: number;
  /** When the path is a symlink to nothing: the missing name it leads to (absolute). */
  danglingLink?: string;
  /** True when that name's folder is a file, or lies under one: nothing can ever be there. */
  danglingThroughFile?: true;
}

const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);
const SIGNATURES: readonly { format: string; offset: number; bytes: Buffer }[] = [
  { format: 'qcow2', offset: 0, bytes: QCOW2_MAGIC },
  { format: 'qed', offset: 0, bytes: Buffer.from('QED\0', 'latin1') },
  { format: 'vmdk', offset: 0, bytes: Buffer.from('KDMV', 'latin1') },
  { format: 'vmdk', offset: 0, bytes: Buffer.from('# Disk DescriptorFile', 'latin1') },
  { format: 'vdi', offset: 0x40, bytes: Buffer.from([0x7f, 0x10, 0xda, 0xbe]) },
  { format: 'vhdx', offset: 0, bytes: Buffer.from('vhdxfile', 'latin1') },
  { format: 'vpc', offset: 0, bytes: Buffer.from('conectix', 'latin1') },
];

/** The start of a file: qcow2 keeps its header, extensions and backing name in the first cluster. */
const HEAD_BYTES = 64 * 1024;
/**
 * What is read first: the header, its extensions and the backing name nearly always lie in the
 * first 4 KiB, and reading all 64 KiB of every file cost more than the rest of the header work.
 * The rest is read only when a field runs past it.
 */
const FIRST_BYTES = 4096;
/** Reused for every header read: reads are synchronous, so one buffer serves them all. */
const head = Buffer.alloc(HEAD_BYTES);

const EXTENSION_END = 0;
const EXTENSION_BACKING_FORMAT = 0xe279_2aca;
const EXTENSION_DATA_FILE = 0x4441_5441;

/** What a stat says about a path: its fingerprint and kind, and the facts a rewrite needs. */
interface Stat {
  fingerprint: Fingerprint;
  kind: FileKind;
  size: bigint;
  linkTarget?: string;
  links?: number;
}

/** At most this many links are followed, as Linux does (ELOOP past 40). */
const MAX_LINK_HOPS = 40;

/** Whether `target`'s folder is a file, or lies under one (a name ending in `/`, `.` or `..` is one). */
function throughAFile(target: string): boolean {
  const folder = /\/(\.\.?)?$/.test(target) ? target : dirname(target);
  try {
    const parent = statSync(folder, { throwIfNoEntry: false });
    return parent !== undefined && !parent.isDirectory();
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOTDIR';
  }
}

/** What is at `path` itself (a link is not followed); undefined for nothing. */
function entryAt(path: string): ReturnType<typeof lstatSync> | undefined {
  try {
    return lstatSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined; // a file where a folder should be: nothing can be there either
  }
}

/**
 * Where the symlink `path`, which leads to nothing, leads: resolved name by name as the kernel
 * does (a link's text taken from the folder it really lies in, `..` after a link meaning the
 * parent of where the link leads), to the first name that does not exist, with the rest of the
 * path after it.
 */
function missingTargetOf(path: string): string {
  let hops = 0;
  /** `names` resolved from the real folder `from`. */
  const walk = (from: string, names: string[]): string => {
    let current = from;
    for (const [index, name] of names.entries()) {
      if (name === '' || name === '.') continue;
      if (name === '..') {
        current = dirname(current);
        continue;
      }
      const next = current === '/' ? `/${name}` : `${current}/${name}`;
      const entry = entryAt(next);
      const rest = names.slice(index + 1);
      if (!entry) return [next, ...rest].join('/');
      // A file where a folder should be (even before a last `/`, `.` or `..`): the path as written.
      if (rest.length > 0 && !entry.isSymbolicLink() && !entry.isDirectory()) return [next, ...rest].join('/');
      if (entry.isSymbolicLink() && hops++ < MAX_LINK_HOPS) {
        const text = readlinkSync(next);
        current = walk(text.startsWith('/') ? '/' : current, text.split('/'));
        if (!entryAt(current)) return [current, ...rest].join('/');
        continue;
      }
      current = next;
    }
    return current;
  };
  const real = realpathSync(dirname(path));
  return walk(real, [basename(path)]);
}

/**
 * The stat of `path`, following symlinks; null when nothing exists there, or, for a symlink to
 * nothing (dangling), the missing name it leads to. A path that is not a symlink, nearly every one, costs a
 * single lstat.
 */
function statOf(path: string): Stat | { dangling: string } | null {
  let s: BigIntStats;
  let linkTarget: string | undefined;
  try {
    s = lstatSync(path, { bigint: true });
  } catch (e) {
    if (isAbsentPath(e)) return null;
    throw e;
  }
  if (s.isSymbolicLink()) {
    try {
      s = statSync(path, { bigint: true });
      linkTarget = realpathSync(path);
    } catch (e) {
      if (isAbsentPath(e)) return { dangling: missingTargetOf(path) };
      throw e;
    }
  }
  const fingerprint = fingerprintOfStats(s);
  const kind: FileKind = s.isFile()
    ? 'file'
    : s.isDirectory()
      ? 'directory'
      : s.isFIFO()
        ? 'FIFO (named pipe)'
        : s.isSocket()
          ? 'socket'
          : s.isBlockDevice()
            ? 'block device'
            : 'character device';
  const found: Stat = { fingerprint, kind, size: s.size };
  if (linkTarget !== undefined) found.linkTarget = linkTarget;
  if (kind === 'file' && s.nlink > 1n) found.links = Number(s.nlink);
  return found;
}

/**
 * `file` with the other-name facts of `found` (rare): added only when there are some, so that
 * the objects of ordinary files all keep one shape (10,000 of them are read in a large plan).
 */
function withOtherNames(file: ImageFile, found: Stat): ImageFile {
  if (found.linkTarget !== undefined) file.linkTarget = found.linkTarget;
  if (found.links !== undefined) file.links = found.links;
  return file;
}

/** A NUL-padded string field of the header, or undefined when it lies outside what was read. */
function text(data: Buffer, offset: number, length: number): string | undefined {
  if (length <= 0 || offset + length > data.length) return undefined;
  return data.toString('utf8', offset, offset + length).replace(/\0+$/, '');
}

/**
 * The qcow2 header fields of `data` (the file's first bytes), and whether every field read lies
 * inside `data` (when not, reading more of the file may find them).
 */
function readQcow2Header(data: Buffer): { header: Qcow2Header | string; complete: boolean } {
  if (data.length < 72) return { header: `its ${data.length}-byte header is incomplete`, complete: false };
  const version = data.readUInt32BE(4);
  const header: Qcow2Header = {};
  const backingOffset = Number(data.readBigUInt64BE(8));
  if (backingOffset !== 0) {
    const name = text(data, backingOffset, data.readUInt32BE(16));
    if (name === undefined) return { header: 'its backing name lies past the first 64 KiB', complete: false };
    header.backingName = name;
  }
  // Header extensions follow the header (72 bytes in version 2, header_length in version 3) and
  // end, as qemu reads them, where the backing name starts, if there is one: what lies past it
  // is the name (in an old image, a name at byte 72 leaves no room for extensions at all).
  let at = version >= 3 && data.length >= 104 ? data.readUInt32BE(100) : 72;
  const end = backingOffset !== 0 && backingOffset <= data.length ? backingOffset : data.length;
  while (at + 8 <= end) {
    const type = data.readUInt32BE(at);
    const length = data.readUInt32BE(at + 4);
    if (type === EXTENSION_END) return { header, complete: true };
    if (at + 8 + length > end) return { header, complete: end !== data.length };
    if (type === EXTENSION_BACKING_FORMAT) header.backingFormat = text(data, at + 8, length);
    if (type === EXTENSION_DATA_FILE) header.dataFileName = text(data, at + 8, length);
    at += 8 + Math.ceil(length / 8) * 8;
  }
  return { header, complete: end !== data.length };
}

/** The qcow2 header fields of `data` (the file's first bytes). */
export function parseQcow2Header(data: Buffer): Qcow2Header | string {
  return readQcow2Header(data).header;
}

/**
 * Reads what {@link ImageFile} holds. Anything but a regular file is described without being
 * opened: opening a FIFO blocks until someone writes to it. `deferred`, when given, may take the
 * truncation check of a qcow2 file (truncation-checks.ts): `pastEnd` is then left unset here.
 */
export function readImageFile(path: string, deferred?: DeferredTruncationChecks): ImageFile {
  const found = statOf(path);
  if (!found) return { fingerprint: null };
  if ('dangling' in found) {
    const dangling: ImageFile = { fingerprint: null, danglingLink: found.dangling };
    if (throughAFile(found.dangling)) dangling.danglingThroughFile = true;
    return dangling;
  }
  const { fingerprint, kind, size } = found;
  if (kind !== 'file') return withOtherNames({ fingerprint, kind }, found);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    return withOtherNames({ fingerprint, kind, unreadable: (e as Error).message }, found);
  }
  try {
    let bytesRead = readSync(fd, head, 0, FIRST_BYTES, 0);
    if (bytesRead === FIRST_BYTES && head.compare(QCOW2_MAGIC, 0, 4, 0, 4) === 0) {
      if (!readQcow2Header(head.subarray(0, FIRST_BYTES)).complete)
        bytesRead += readSync(fd, head, FIRST_BYTES, HEAD_BYTES - FIRST_BYTES, FIRST_BYTES);
    }
    const data = head.subarray(0, bytesRead);
    const claimedFormat = SIGNATURES.find(
      (s) =>
        data.length >= s.offset + s.bytes.length && s.bytes.compare(data, s.offset, s.offset + s.bytes.length) === 0,
    )?.format;
    if (claimedFormat !== 'qcow2')
      return withOtherNames({ fingerprint, kind, ...(claimedFormat ? { claimedFormat } : {}) }, found);
    const qcow2 = parseQcow2Header(data);
    if (typeof qcow2 === 'string')
      return withOtherNames({ fingerprint, kind, claimedFormat, unreadable: qcow2 }, found);
    const pastEnd = deferred?.defer({ path, fingerprint }) ? undefined : qcow2MetadataPastEnd(fd, Number(size), data);
    return withOtherNames({ fingerprint, kind, claimedFormat, qcow2, ...(pastEnd ? { pastEnd } : {}) }, found);
  } catch (e) {
    return withOtherNames({ fingerprint, kind, unreadable: (e as Error).message }, found);
  } finally {
    closeSync(fd);
  }
}
