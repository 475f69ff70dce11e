// Ctrl-C during apply: qemu-img is stopped, the temporary file is removed, the summary is
// printed, no helper process is left, and the next apply completes.
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { expect, it } from 'vitest';
import { chainform, checksums, compareImages, qemuImg, qemuIo, tempFolder } from '../helpers/qemu.js';

const CLI = new URL('../../dist/cli.js', import.meta.url).pathname;

it('stops cleanly on SIGINT and resumes on the next apply', async () => {
  const { dir, cleanup } = await tempFolder();
  try {
    await mkdir(join(dir, 'in'));
    const source = join(dir, 'in/big.raw');
    await qemuImg('create', '-q', '-f', 'raw', source, '1G');
    await qemuIo('raw', source, 'write -P 0x05 0 768M');
    const before = await checksums([source]);
    await writeFile(
      join(dir, 'm.yaml'),
      'version: 1\nimages:\n  big: { path: out/big.qcow2, from: { path: in/big.raw, format: raw } }\n',
    );

    const child = execa('node', [CLI, 'apply', 'm.yaml', '--yes'], { cwd: dir, reject: false, stdin: 'ignore' });
    let output = '';
    await new Promise<void>((resolve) => {
      child.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('started  big:convert')) resolve();
      });
    });
    child.kill('SIGINT');
    const result = await child;
    expect(result.exitCode).toBe(130);
    expect(String(result.stdout)).toContain('Apply interrupted: 0 done, 1 failed, 0 not started.');
    expect(String(result.stdout)).toContain('qemu-img convert was interrupted');
    expect(await readdir(join(dir, 'out'))).toEqual([]);
    const leftover = await execa('pgrep', ['-f', `qemu-img convert .*${dir}`], { reject: false });
    expect(leftover.stdout).toBe('');
    expect(await checksums([source])).toEqual(before);

    const resumed = await chainform(dir, 'apply', 'm.yaml', '--yes');
    expect(resumed.exitCode).toBe(0);
    expect(await compareImages(join(dir, 'out/big.qcow2'), 'qcow2', source, 'raw')).toBe(0);
  } finally {
    await cleanup();
  }
});
