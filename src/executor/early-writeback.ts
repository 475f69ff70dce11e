// Writes a step's outputs back to disk while its commands are still writing them. qemu-img and
// qemu-io write with cache=unsafe (no flush of their own), and the kernel starts writing dirty
// pages back only once a share of RAM is dirty (10% by default): a 1 GiB output can sit in the
// page cache until the step's flush, which then waits for the whole of it while the disk idled
// during the copy (1.3-1.5 s after a 0.5 s convert on this project's machine). Calling fdatasync
// on the output in a loop while the command runs keeps the disk busy, so the flush afterwards
// waits only for the rest. It never changes what is written: fdatasync only writes dirty pages,
// and the step still flushes its outputs after its commands, before it counts as done.
import { setMaxListeners } from 'node:events';
import { type FileHandle, open } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/** A running writeback of some files. */
export interface Writeback {
  /**
   * Stops it after one last fdatasync of each file, with how many were done. Rejects when one
   * failed: the kernel reports a write error to one open file only, so the step's own flush, on
   * a file opened later, would not see it.
   */
  stop(): Promise<number>;
}

/** Timing of the loop; the defaults suit a command writing hundreds of MB per second. */
export interface WritebackTiming {
  /** Pause between two fdatasyncs, to leave the disk queue to the command now and then. */
  pauseMs?: number;
  /** Wait between two tries to open a file the command has not created yet. */
  waitForFileMs?: number;
}

/**
 * A pause that ends early when `stop` is aborted: the step waits for the loop's last fdatasync,
 * and a pause still running when the commands end would hold the step up to its full length.
 */
function pause(ms: number, stop: AbortSignal): Promise<void> {
  return sleep(ms, undefined, { signal: stop }).catch(() => undefined);
}

/** Writes one file back in a loop until `stop` is aborted; resolves with the fdatasyncs done. */
async function writeBackLoop(path: string, stop: AbortSignal, timing: Required<WritebackTiming>): Promise<number> {
  let handle: FileHandle | undefined;
  let syncs = 0;
  try {
    while (!handle && !stop.aborted) {
      // Read-only, and without QEMU's locks: this never conflicts with the command's own open.
      handle = await open(path, 'r').catch(() => undefined);
      if (!handle) await pause(timing.waitForFileMs, stop);
    }
    while (handle && !stop.aborted) {
      await handle.datasync();
      syncs++;
      await pause(timing.pauseMs, stop);
    }
    // Once more on this descriptor after the commands: a write error in their last pages is
    // reported here, and would not be to the flush's descriptor if a command's own flush saw it.
    if (handle) {
      await handle.datasync();
      syncs++;
    }
  } finally {
    await handle?.close().catch(() => undefined);
  }
  return syncs;
}

/** Starts writing `paths` back, each as soon as it exists; see {@link Writeback.stop}. */
export function startWriteback(paths: readonly string[], timing: WritebackTiming = {}): Writeback {
  const stop = new AbortController();
  // Every loop's pause listens on this one signal: Node's warning about more than 10 listeners
  // does not apply.
  setMaxListeners(0, stop.signal);
  const loops = paths.map((path) =>
    writeBackLoop(path, stop.signal, { pauseMs: 10, waitForFileMs: 20, ...timing }).catch(
      (e: unknown) => new Error(`cannot write ${path} back to disk: ${(e as Error).message}`),
    ),
  );
  return {
    async stop() {
      stop.abort();
      const results = await Promise.all(loops);
      const failure = results.find((r) => r instanceof Error);
      if (failure) throw failure;
      return results.reduce<number>((sum, r) => sum + (r as number), 0);
    },
  };
}
