// The worker thread of truncation-checks.ts: runs the qcow2 truncation check (qcow2-extent.ts)
// on the files the main thread sends, each opened here again, and answers in the same order.
// A file that is no longer the one the main thread read (another fingerprint) is answered as
// changed, never checked: the main thread then does the whole work itself.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { fingerprintOfStats, sameFingerprint } from '../state/fingerprint.js';
import { qcow2MetadataPastEnd } from './qcow2-extent.js';
import type { TruncationQuestion, TruncationVerdict } from './truncation-checks.js';

/** The header fields the check reads lie in the first bytes; its tables are read from the file. */
const head = Buffer.alloc(4096);

function verdictOf({ path, fingerprint }: TruncationQuestion): TruncationVerdict {
  let fd: number;
  try {
    // Non-blocking: should the path have become a FIFO since, opening it must not wait.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return { changed: true };
  }
  try {
    const stats = fstatSync(fd, { bigint: true });
    if (!stats.isFile() || !sameFingerprint(fingerprintOfStats(stats), fingerprint)) return { changed: true };
    const read = readSync(fd, head, 0, head.length, 0);
    const pastEnd = qcow2MetadataPastEnd(fd, Number(stats.size), head.subarray(0, read));
    return pastEnd === undefined ? {} : { pastEnd };
  } catch (e) {
    return { failed: (e as Error).message };
  } finally {
    closeSync(fd);
  }
}

parentPort?.on('message', (questions: TruncationQuestion[]) => {
  parentPort?.postMessage(questions.map(verdictOf));
});
