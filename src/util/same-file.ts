// Whether two paths name one file, as the kernel resolves them (symlinks, hard links).
import { statSync } from 'node:fs';

/** Whether two paths name one file: the same path, or the same device and inode. */
export function sameFile(a: string, b: string): boolean {
  if (a === b) return true;
  const statOf = (path: string) => {
    try {
      return statSync(path, { bigint: true, throwIfNoEntry: false });
    } catch {
      return undefined; // a loop of links, a file where a folder should be, no permission
    }
  };
  const [x, y] = [statOf(a), statOf(b)];
  return x !== undefined && y !== undefined && x.dev === y.dev && x.ino === y.ino;
}
