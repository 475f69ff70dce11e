// A JSON file rewritten durably and in order: each write goes to a temporary file, is fsynced and
// renamed (write-file-atomic), and writes queue behind each other, so a crash leaves the previous
// or the new content, never a mix, and a later write never lands before an earlier one.
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import writeFileAtomic from 'write-file-atomic';

/** One state file (ledger, journal) and its write queue. */
export class DurableJsonFile {
  private queue: Promise<void> = Promise.resolve();

  constructor(readonly path: string) {}

  /** Serialises `value` now and writes it after the writes already queued; resolves once durable. */
  write(value: unknown): Promise<void> {
    const text = `${JSON.stringify(value, null, 2)}\n`;
    // A failed write rejects its own caller; it must not block the writes queued after it.
    const next = this.queue
      .catch(() => undefined)
      .then(async () => {
        await mkdir(dirname(this.path), { recursive: true });
        await writeFileAtomic(this.path, text, { fsync: true });
      });
    this.queue = next;
    return next;
  }
}
