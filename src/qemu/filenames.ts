// Filenames qemu cannot misread. qemu treats `proto:...` before the first `/` as a protocol and
// `json:{...}` as options, so names handed to it are made explicit. It also joins an image's
// folder and a relative backing name as text, and the kernel resolves `..` past symlinks where
// chainform's paths take it off by the text: backingFolderElsewhere tells when the two differ.
import { lstatSync, realpathSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { relativePath, resolvePath } from '../util/paths.js';
import { sameFile } from '../util/same-file.js';

/** True when qemu would parse this name as a protocol or `json:` pseudo-filename. */
export function looksLikeProtocol(name: string): boolean {
  const colon = name.indexOf(':');
  if (colon < 0) return false;
  const slash = name.indexOf('/');
  return slash < 0 || colon < slash;
}

/**
 * The backing name to store in an image at `imagePath` for a backing file at `backingPath`:
 * relative to the image's folder unless `absolute`, and prefixed with `./` when qemu would
 * otherwise read it as a protocol.
 */
export function backingNameFor(imageDir: string, backingPath: string, absolute: boolean): string {
  if (absolute) return backingPath;
  const name = relativePath(imageDir, backingPath);
  // A "../" name qemu would follow out of a symlinked folder elsewhere: the absolute path is exact.
  if (backingFolderElsewhere(imageDir, name) !== undefined) return backingPath;
  return looksLikeProtocol(name) ? `./${name}` : name;
}

/**
 * The path the kernel reaches from folder `from` by the components of `name`, one by one as it
 * walks them: `..` goes up from where a symlink led, not from the link's own folder. Names not
 * there yet are taken as they read (new folders are real ones); undefined when a symlink on the
 * way leads nowhere (or in a loop), or a file stands where a folder should: the kernel opens
 * nothing there, or what it will open cannot be told.
 */
function walkedPath(from: string, name: string): string | undefined {
  let at = isAbsolute(name) ? '/' : from;
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    // A file where a folder should be: the kernel stops there (ENOTDIR).
    if (at !== from && isFile(at)) return undefined;
    at = part === '..' ? dirname(at) : `${at === '/' ? '' : at}/${part}`;
    try {
      at = realpathSync.native(at);
    } catch {
      if (isSymlink(at)) return undefined;
    }
  }
  return at;
}

/** Whether `path` is (or leads to) a regular file; false when nothing, or no folder, is there. */
function isFile(path: string): boolean {
  try {
    return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
  } catch {
    return false;
  }
}

/** Whether `path` is a symlink (false when nothing, or no folder, is there). */
function isSymlink(path: string): boolean {
  try {
    return lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink() ?? false;
  } catch {
    return false;
  }
}

/**
 * Where qemu opens the backing name `name` stored in an image in `imageDir`, when that may be
 * another file than chainform's path for it names; else undefined. qemu joins the image's
 * folder and a relative name as text, and the kernel goes up each `..` from where a symlinked
 * folder leads; chainform's paths take `..` off by the text. The two differ only for a name
 * with `..` under a symlink, or one through a symlink that leads nowhere yet.
 */
export function backingFolderElsewhere(imageDir: string, name: string): string | undefined {
  if (!name.split('/').includes('..')) return undefined;
  const folder = walkedPath('/', imageDir);
  const asQemu = folder === undefined ? undefined : walkedPath(folder, name);
  const asChainform = walkedPath('/', resolve(imageDir, name));
  if (asQemu === undefined || asChainform === undefined)
    return '(no folder: a symlink on the way leads nowhere, or a file stands where a folder should)';
  return sameFile(asQemu, asChainform) ? undefined : dirname(asQemu);
}

/** Argument form of a file path: absolute paths never look like protocols. */
export function fileArg(path: string): string {
  if (!isAbsolute(path)) throw new Error(`internal: expected an absolute path, got ${path}`);
  return path;
}

/** Escapes a value for qemu's `key=value,...` option strings (a comma is doubled). */
export function optionValue(value: string): string {
  return value.replaceAll(',', ',,');
}

/**
 * True when a stored backing name already says what `wanted` says: the same text, or both
 * relative and naming the same file (`./base.qcow2` and `base.qcow2`), with the same protection
 * against protocol parsing.
 */
export function sameBackingName(stored: string | undefined, wanted: string, imageDir: string): boolean {
  if (stored === undefined) return false;
  if (stored === wanted) return true;
  if (isAbsolute(stored) || isAbsolute(wanted) || looksLikeProtocol(stored)) return false;
  return resolvePath(imageDir, stored) === resolvePath(imageDir, wanted);
}
