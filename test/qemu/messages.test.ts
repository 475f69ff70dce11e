// qemu-img's words as chainform quotes them.
import { describe, expect, it } from 'vitest';
import { qemuMessage } from '../../src/qemu/messages.js';

describe('qemuMessage', () => {
  it('keeps the last line, without the program prefix', () => {
    expect(qemuMessage('warning: x\nqemu-img: Image is not in qcow2 format\n')).toBe('Image is not in qcow2 format');
  });

  it("says once a clause qemu repeats (its open error wraps the driver's in the same words)", () => {
    const stderr =
      "qemu-img: Could not open '/tmp/a b.qcow2': Could not open '/tmp/a b.qcow2': No such file or directory\n";
    expect(qemuMessage(stderr)).toBe("Could not open '/tmp/a b.qcow2': No such file or directory");
    // Other clauses are kept, repeated ones too: down a chain, qemu nests them.
    const nested = "Could not open backing file: Could not open backing file: Could not open 'b': gone";
    expect(qemuMessage(`qemu-img: ${nested}`)).toBe(nested);
    expect(qemuMessage('qemu-img: /t/d: /t/d: e: Could not create')).toBe('/t/d: /t/d: e: Could not create');
  });
});
