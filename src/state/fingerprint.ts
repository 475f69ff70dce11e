// File fingerprints: cheap identity + change detection without reading image data.
import type { BigIntStats } from 'node:fs';
import { stat } from 'node:fs/promises';

/** Identity (device, inode) and change markers (size, mtime) of a file. */
export interface Fingerprint {
  dev: string;
  ino: string;
  size: string;
  mtimeNs: string;
}

/** The fingerprint of `path`, or null when it does not exist. */
export async function fingerprintOf(path: string): Promise<Fingerprint | null> {
  try {
    return fingerprintOfStats(await stat(path, { bigint: true }));
  } catch (e) {
    if (isAbsentPath(e)) return null;
    throw e;
  }
}

/** The fingerprint of a file from its (bigint) stat. */
export function fingerprintOfStats(s: BigIntStats): Fingerprint {
  return { dev: String(s.dev), ino: String(s.ino), size: String(s.size), mtimeNs: String(s.mtimeNs) };
}

/**
 * True when a stat failed because nothing can exist at the path: ENOENT; ENOTDIR, a parent in
 * the path is a file; ENAMETOOLONG, a name no filesystem holds; ELOOP, symlinks on the way that
 * lead to each other.
 */
export function isAbsentPath(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENAMETOOLONG' || code === 'ELOOP';
}

/** A key that is equal for two names of the same file (hard links, renames, symlinks). */
export function fileIdentity(fingerprint: Fingerprint): string {
  return `${fingerprint.dev}:${fingerprint.ino}`;
}

/** True when two fingerprints describe the same, unchanged file. */
export function sameFingerprint(a: Fingerprint | null | undefined, b: Fingerprint | null | undefined): boolean {
  if (!a || !b) return false;
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs;
}
