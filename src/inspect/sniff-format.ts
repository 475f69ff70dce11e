// Reads an image's first bytes to tell which format its header claims. Used only to catch a
// declared format that contradicts the file (never to choose a format): a raw disk can hold
// any bytes, so a mismatch is reported, and for raw only as a warning.
import { open } from 'node:fs/promises';

const SIGNATURES: readonly { format: string; offset: number; bytes: Buffer }[] = [
  { format: 'qcow2', offset: 0, bytes: Buffer.from([0x51, 0x46, 0x49, 0xfb]) },
  { format: 'qed', offset: 0, bytes: Buffer.from('QED\0', 'latin1') },
  { format: 'vmdk', offset: 0, bytes: Buffer.from('KDMV', 'latin1') },
  { format: 'vmdk', offset: 0, bytes: Buffer.from('# Disk DescriptorFile', 'latin1') },
  { format: 'vdi', offset: 0x40, bytes: Buffer.from([0x7f, 0x10, 0xda, 0xbe]) },
  { format: 'vhdx', offset: 0, bytes: Buffer.from('vhdxfile', 'latin1') },
  { format: 'vpc', offset: 0, bytes: Buffer.from('conectix', 'latin1') },
];

/** The format named by the file's header signature, or undefined for none (raw data). */
export async function sniffFormat(path: string): Promise<string | undefined> {
  const handle = await open(path, 'r');
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    const data = head.subarray(0, bytesRead);
    return SIGNATURES.find((s) => data.subarray(s.offset, s.offset + s.bytes.length).equals(s.bytes))?.format;
  } finally {
    await handle.close();
  }
}
