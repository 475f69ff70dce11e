import { describe, expect, it } from 'vitest';
import { parseProgress } from '../../src/executor/progress.js';
import { creationOptions } from '../../src/qemu/commands.js';
import { backingNameFor, looksLikeProtocol, optionValue, sameBackingName } from '../../src/qemu/filenames.js';

describe('qemu filenames', () => {
  it('recognises names qemu would parse as a protocol or json: options', () => {
    expect(looksLikeProtocol('nbd:x')).toBe(true);
    expect(looksLikeProtocol('json:{"driver":"raw"}')).toBe(true);
    expect(looksLikeProtocol('dir/a:b')).toBe(false);
    expect(looksLikeProtocol('/abs/a:b')).toBe(false);
    expect(looksLikeProtocol('plain.qcow2')).toBe(false);
  });

  it('stores backing names relative to the image folder, protected with ./ when needed', () => {
    expect(backingNameFor('/a/out', '/a/in/base.qcow2', false)).toBe('../in/base.qcow2');
    expect(backingNameFor('/a/out', '/a/out/nbd:base', false)).toBe('./nbd:base');
    expect(backingNameFor('/a/out', '/a/in/base.qcow2', true)).toBe('/a/in/base.qcow2');
  });

  it('treats relative names of one file as the same backing name, never absolute vs relative', () => {
    expect(sameBackingName('./base.qcow2', 'base.qcow2', '/a/out')).toBe(true);
    expect(sameBackingName('../out/base.qcow2', 'base.qcow2', '/a/out')).toBe(true);
    expect(sameBackingName('/a/out/base.qcow2', 'base.qcow2', '/a/out')).toBe(false);
    expect(sameBackingName('nbd:base', './nbd:base', '/a/out')).toBe(false);
    expect(sameBackingName(undefined, 'base.qcow2', '/a/out')).toBe(false);
  });

  it('escapes commas in option values', () => {
    expect(optionValue('/a,b/c')).toBe('/a,,b/c');
    expect(creationOptions({ cluster_size: 65536, lazy_refcounts: true, compat: '1.1' })).toBe(
      'cluster_size=65536,lazy_refcounts=on,compat=1.1',
    );
    expect(creationOptions({})).toBeUndefined();
  });

  it('reads the last percentage of qemu-img -p output', () => {
    expect(parseProgress('    (0.00/100%)\r    (12.50/100%)\r')).toBe(12.5);
    expect(parseProgress('no progress here')).toBeUndefined();
  });
});
