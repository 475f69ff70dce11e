// The qcow2 truncation check (qcow2-extent.ts) of a large inspection, run on a worker thread
// while the main thread goes on. It reads each file's refcount table and last refcount block
// (64 KiB each with the default cluster size): about a quarter of the time of a plan of 10,000
// images, and nothing else in the plan needs its answer unless the answer is "cut short".
//
// So the plan is made as if no file were cut short, and the answers are awaited at its end
// (settle). When every file was whole and unchanged, that plan is the plan. When any was cut
// short, changed since it was read, or could not be checked, or the worker failed, the caller
// plans again with every check made on the main thread: the same result as if it had never
// been deferred, by construction. The first files are always checked on the main thread: a
// plan of fewer images never starts a worker.
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { packageFile } from '../package-files.js';
import type { Fingerprint } from '../state/fingerprint.js';

/** A file to check: its path, and its fingerprint when the main thread read its header. */
export interface TruncationQuestion {
  path: string;
  fingerprint: Fingerprint;
}

/** The worker's answer: whole (no field), cut short, another file by now, or not checkable. */
export interface TruncationVerdict {
  pastEnd?: string;
  changed?: true;
  failed?: string;
}

/**
 * Files checked on the main thread before a worker is started: a worker takes some 20 ms of the
 * other core to start, about what the checks of 1,000 small files take here.
 */
export const DEFAULT_CHECKS_BEFORE_WORKER = 1000;
/** Files sent to the worker together (one message each way). */
const BATCH = 256;

/** Checks handed to a worker thread; see the top of this file. */
export interface DeferredTruncationChecks {
  /** Hands the check of this file to the worker; false when the caller must make it now. */
  defer(question: TruncationQuestion): boolean;
  /**
   * Waits for every answer and stops the worker: 'whole' when every deferred file was whole and
   * unchanged (or none was deferred), 'plan-again' otherwise. Later calls get the same answer;
   * nothing is deferred once it is called.
   */
  settle(): Promise<'whole' | 'plan-again'>;
}

/** The worker's module: tsc's output, which the CLI bundle uses too (both made by the build). */
const WORKER_FILE = packageFile('dist/inspect/truncation-worker.js');

/** Node's permission model, when this process runs under it (node --experimental-permission). */
function permission(): { has(scope: string): boolean } | undefined {
  return (process as { permission?: { has(scope: string): boolean } }).permission;
}

/** Deferred checks, the first `checkedHereFirst` of them left to the caller. */
export function deferredTruncationChecks(checkedHereFirst = DEFAULT_CHECKS_BEFORE_WORKER): DeferredTruncationChecks {
  let seen = 0;
  let worker: Worker | undefined;
  let batch: TruncationQuestion[] = [];
  let sent = 0;
  let answered = 0;
  let allWhole = true;
  let failed = false;
  let stopping = false;
  let available: boolean | undefined;
  let settled: Promise<'whole' | 'plan-again'> | undefined;
  let waiting: (() => void) | undefined;
  const wake = () => {
    if (waiting && (failed || answered === sent)) waiting();
  };
  // Files already deferred stay unchecked: the caller plans again without a worker.
  const fail = () => {
    failed = true;
    wake();
  };

  const start = (): Worker => {
    // Not the parent's command-line flags: `node --input-type=module -e ...` would stop it.
    const started = new Worker(WORKER_FILE, { execArgv: [] });
    started.on('message', (verdicts: TruncationVerdict[]) => {
      answered += verdicts.length;
      if (verdicts.some((v) => v.pastEnd !== undefined || v.changed || v.failed !== undefined)) allWhole = false;
      wake();
    });
    started.on('error', fail);
    // It never ends on its own: an exit before settle stops it leaves files unanswered.
    started.on('exit', () => {
      if (!stopping) fail();
    });
    return started;
  };

  const flush = () => {
    if (batch.length === 0 || failed) return;
    try {
      worker ??= start();
      worker.postMessage(batch);
      sent += batch.length;
    } catch {
      fail(); // e.g. no worker threads allowed (Node's permission model)
    }
    batch = [];
  };

  return {
    defer(question) {
      seen++;
      if (seen <= checkedHereFirst || failed || settled !== undefined) return false;
      // No worker file (a build without it), or no worker threads allowed (Node's permission
      // model): the caller checks every file, rather than plan twice.
      available ??= existsSync(WORKER_FILE) && (permission()?.has('worker') ?? true);
      if (!available) return false;
      batch.push(question);
      if (batch.length >= BATCH) flush();
      return true;
    },
    settle() {
      // One settling, whoever asks and however often.
      settled ??= (async () => {
        flush();
        if (worker) {
          await new Promise<void>((resolve) => {
            waiting = resolve;
            wake();
          });
          stopping = true;
          await worker.terminate();
        }
        return allWhole && !failed ? 'whole' : 'plan-again';
      })();
      return settled;
    },
  };
}
