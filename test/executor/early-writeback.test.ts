import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startWriteback } from '../../src/executor/early-writeback.js';

describe('startWriteback', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'chainform-writeback-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('waits for a file a command creates, syncs it while it is written, and every write lands as written', async () => {
    const image = join(dir, 'out.qcow2');
    const writeback = startWriteback([image], { pauseMs: 1, waitForFileMs: 1 });
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
    // Many small writes, so the file exists and is being written for a while.
    const writes = Array.from({ length: 256 }, (_, i) => ['-c', `write -P ${i % 250} ${i * 256}k 256k`]).flat();
    await execa('qemu-io', ['-f', 'qcow2', ...writes, image]);
    const syncs = await writeback.stop();
    expect(syncs).toBeGreaterThan(0);
    // Every write landed as written.
    const reads = Array.from({ length: 256 }, (_, i) => ['-c', `read -q -P ${i % 250} ${i * 256}k 256k`]).flat();
    const read = await execa('qemu-io', ['-f', 'qcow2', ...reads, image]);
    expect(read.stdout).not.toContain('Pattern verification failed'); // qemu-io also exits 1 then
    await execa('qemu-img', ['check', '-q', image]);
  });

  it('stops at once for a file that never appeared, without creating it', async () => {
    const never = join(dir, 'never.qcow2');
    const writeback = startWriteback([never], { waitForFileMs: 1 });
    await new Promise((r) => setTimeout(r, 20));
    expect(await writeback.stop()).toBe(0);
    await expect(stat(never)).rejects.toThrow(/ENOENT/);
  });

  it('ends a pause at once when stopped: the step does not wait out the time between two fdatasyncs', async () => {
    const file = join(dir, 'written.img');
    await execa('qemu-img', ['create', '-q', '-f', 'raw', file, '1M']);
    const absent = join(dir, 'absent.img');
    // Pauses far longer than the test: stop() resolving proves they were cut short.
    const writeback = startWriteback([file, absent], { pauseMs: 600_000, waitForFileMs: 600_000 });
    await new Promise((r) => setTimeout(r, 50));
    const stopping = writeback.stop();
    const outcome = await Promise.race([stopping, new Promise((r) => setTimeout(() => r('still waiting'), 10_000))]);
    // One fdatasync in the loop, one after the stop; the file that never appeared had none.
    expect(outcome).toBe(2);
  });

  it('rejects with the file and the error when an fdatasync fails', async () => {
    // procfs files refuse fdatasync (EINVAL): a real failing sync without a broken disk.
    const writeback = startWriteback([join(dir, 'missing'), '/proc/self/status'], { waitForFileMs: 1 });
    await new Promise((r) => setTimeout(r, 20));
    await expect(writeback.stop()).rejects.toThrow(/cannot write \/proc\/self\/status back to disk: EINVAL/);
  });
});
