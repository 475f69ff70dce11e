// resolvePath and relativePath must give exactly what node:path gives, on every spelling: plain
// names, `.` and `..` segments, doubled and trailing slashes, the root, relative bases.
import { relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { relativePath, resolvePath } from '../../src/util/paths.js';
import { mulberry32 } from '../helpers/random.js';

const SEGMENTS = ['a', 'b', 'img.qcow2', '.', '..', '', 'x y', 'proto:name', '...', '.hidden', 'a.'];

/** A path of up to four segments from SEGMENTS, absolute or relative as `random` decides. */
function somePath(random: () => number): string {
  const count = Math.floor(random() * 5);
  const segments = Array.from({ length: count }, () => SEGMENTS[Math.floor(random() * SEGMENTS.length)] as string);
  const path = segments.join('/');
  return random() < 0.6 ? `/${path}` : path;
}

describe('resolvePath and relativePath', () => {
  it('agree with path.resolve and path.relative on 20,000 generated spellings', () => {
    const random = mulberry32(20261205);
    for (let i = 0; i < 20_000; i++) {
      const base = somePath(random);
      const name = somePath(random);
      expect(resolvePath(base), base).toBe(resolve(base));
      expect(resolvePath(base, name), `${base} + ${name}`).toBe(resolve(base, name));
      expect(relativePath(base, name), `${base} -> ${name}`).toBe(relative(base, name));
    }
  });

  it('agree on the spellings a plan meets most, and on the root', () => {
    const cases: [string, string][] = [
      ['/srv/vm', 'disk.qcow2'],
      ['/', 'disk.qcow2'],
      ['/srv/vm', '/srv/vm/disk.qcow2'],
      ['/srv/vm', '/srv/vmx/disk.qcow2'],
      ['/srv/vm', '/srv/vm/sub/disk.qcow2'],
      ['/srv/vm/', 'disk.qcow2'],
      ['/srv/vm', 'sub/../disk.qcow2'],
      ['/srv/vm', ''],
      ['/', '/'],
    ];
    for (const [base, name] of cases) {
      expect(resolvePath(base, name)).toBe(resolve(base, name));
      expect(relativePath(base, name)).toBe(relative(base, name));
    }
    expect(resolvePath('/')).toBe('/');
  });
});
