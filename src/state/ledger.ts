// The ledger: what chainform built, from what, with fingerprints. It lets the planner know that
// an output still presents its source's content (so a second apply plans nothing) and that a
// file at an output path is chainform's own (so replacing it cannot lose a user's data).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DurableJsonFile } from './durable-json.js';
import type { Fingerprint } from './fingerprint.js';

/** One image chainform built from a source. */
export interface LedgerEntry {
  /** The manifest id it was built for (informational). */
  id: string;
  format: string;
  /** The output file right after it was built. */
  output: Fingerprint;
  /** Its external data file, if it has one: guest writes may touch only that file. */
  dataFile?: Fingerprint;
  source: { path: string; snapshot?: string; format: string };
  /** Every file of the source's chain (top first) when it was read. */
  sourceChain: Fingerprint[];
  /** Every file of the output's backing chain (top first) when it was built. */
  backingChain: Fingerprint[];
  appliedAt: string;
  /**
   * Set while chainform changes this output: in place, or between recording a new build and
   * renaming it into place. If the run dies then, the file may not match `output`, but it is
   * still chainform's own: the next plan rebuilds it from its source.
   */
  inProgress?: boolean;
}

/** The ledger file's content. */
export interface Ledger {
  version: 1;
  /** Keyed by the output's absolute path. */
  outputs: Record<string, LedgerEntry>;
}

/** The state folder beside a manifest. */
export function stateDir(manifestDir: string): string {
  return join(manifestDir, '.chainform');
}

function ledgerPath(manifestDir: string): string {
  return join(stateDir(manifestDir), 'ledger.json');
}

function isFingerprint(value: unknown): value is Fingerprint {
  const f = value as Fingerprint | null;
  return (
    typeof f?.dev === 'string' &&
    typeof f.ino === 'string' &&
    typeof f.size === 'string' &&
    typeof f.mtimeNs === 'string'
  );
}

function isLedgerEntry(value: unknown): value is LedgerEntry {
  const e = value as LedgerEntry | null;
  return (
    typeof e?.format === 'string' &&
    isFingerprint(e.output) &&
    typeof e.source?.path === 'string' &&
    Array.isArray(e.sourceChain) &&
    e.sourceChain.every(isFingerprint) &&
    Array.isArray(e.backingChain) &&
    e.backingChain.every(isFingerprint)
  );
}

/** Reads the ledger; a missing one is empty. An unreadable one is an error the caller reports. */
export async function readLedger(manifestDir: string): Promise<Ledger> {
  try {
    const parsed = JSON.parse(await readFile(ledgerPath(manifestDir), 'utf8')) as Ledger;
    if (parsed?.version !== 1 || typeof parsed.outputs !== 'object' || parsed.outputs === null) {
      throw new Error('not a version 1 ledger');
    }
    for (const [path, entry] of Object.entries(parsed.outputs)) {
      if (!isLedgerEntry(entry)) throw new Error(`the entry for ${path} is damaged`);
    }
    return parsed;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, outputs: {} };
    throw new Error(`cannot read ${ledgerPath(manifestDir)}: ${(e as Error).message}`);
  }
}

/**
 * Records entries one at a time: writes are serialised (steps finish in parallel) and each is
 * atomic (temporary file, fsync, rename), so a crash leaves the old or the new ledger, never half.
 */
export class LedgerWriter {
  private readonly file: DurableJsonFile;

  constructor(
    manifestDir: string,
    private readonly ledger: Ledger,
  ) {
    this.file = new DurableJsonFile(ledgerPath(manifestDir));
  }

  /** Records (or replaces) the entry for an output path and writes the ledger durably. */
  record(outputPath: string, entry: LedgerEntry): Promise<void> {
    this.ledger.outputs[outputPath] = entry;
    return this.save();
  }

  /** Marks an existing entry as being changed in place (see {@link LedgerEntry.inProgress}). */
  markInProgress(outputPath: string): Promise<void> {
    const entry = this.ledger.outputs[outputPath];
    if (!entry) return Promise.resolve();
    this.ledger.outputs[outputPath] = { ...entry, inProgress: true };
    return this.save();
  }

  /** Clears the in-progress mark of an entry: its file now is what the entry describes. */
  markFinished(outputPath: string): Promise<void> {
    const entry = this.ledger.outputs[outputPath];
    if (!entry?.inProgress) return Promise.resolve();
    const { inProgress: _done, ...finished } = entry;
    this.ledger.outputs[outputPath] = finished;
    return this.save();
  }

  /** Replaces a recorded chain of an existing entry (the content it presents did not change). */
  refreshChain(outputPath: string, chain: 'backingChain' | 'sourceChain', prints: Fingerprint[]): Promise<void> {
    const entry = this.ledger.outputs[outputPath];
    if (!entry) return Promise.resolve();
    this.ledger.outputs[outputPath] = { ...entry, [chain]: prints };
    return this.save();
  }

  private save(): Promise<void> {
    return this.file.write(this.ledger);
  }
}
