// Which mount a folder lies on, from /proc/self/mountinfo. Two folders on one device can still be
// two mounts (a bind mount), and rename(2) never crosses mounts (EXDEV): a device number alone
// cannot tell whether a file renamed from one folder into the other will get there.
import { readFileSync, realpathSync } from 'node:fs';
import { basename } from 'node:path';

/** Mount points, longest first; null where /proc cannot tell (not Linux, no /proc). */
let mountPoints: string[] | null | undefined;
/** The last names of the mount points: most paths are ruled out by their name alone. */
let mountNames: Set<string> | undefined;

/** A mountinfo field with its octal escapes (`\040` for a space) decoded. */
function unescapeField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

function readMountPoints(): string[] | null {
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return null;
  }
  // Field 5 of each line is the mount point (proc(5)).
  const points = text
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((point): point is string => point?.startsWith('/') === true)
    .map(unescapeField);
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** The mount points, read once per process. */
function knownMountPoints(): string[] | null {
  if (mountPoints === undefined) mountPoints = readMountPoints();
  return mountPoints;
}

/**
 * The mount point the folder `realDir` (a path with every symlink resolved) lies under: the
 * longest mount point that contains it. Undefined where /proc cannot tell.
 */
export function mountPointOf(realDir: string): string | undefined {
  const points = knownMountPoints();
  if (points === null) return undefined;
  return points.find((point) => point === '/' || realDir === point || realDir.startsWith(`${point}/`));
}

/**
 * The mount point the existing file at `path` is, with every symlink resolved, when it is one: a
 * file bind-mounted there (as a container gets a disk image). Nothing can be renamed onto it
 * (EBUSY), so a rewrite, which writes a new file and renames it into place, cannot replace it.
 * Only a path whose last name is some mount point's costs a realpath.
 */
export function mountedFileAt(path: string): string | undefined {
  const points = knownMountPoints();
  if (points === null) return undefined;
  mountNames ??= new Set(points.map((point) => basename(point)));
  if (!mountNames.has(basename(path))) return undefined;
  try {
    const real = realpathSync(path);
    return points.includes(real) ? real : undefined;
  } catch {
    return undefined;
  }
}
