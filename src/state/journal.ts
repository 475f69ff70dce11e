// The journal of an apply: every step's status, the pids of the commands it is running, its
// temporary files, and fingerprints of what it read (at its start) and wrote (when done). It is
// rewritten durably when a step starts or ends and when a command starts, so after a crash
// (SIGKILL, power loss) the next apply knows which commands may still run, which temporary files
// are half written, and which steps were finished. Nothing is written before the first step
// starts (a run killed then left nothing to clean up), nor when a command ends (see
// commandEnded): each write costs an fsync on the way of the run.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { type Plan, type Step, temporariesOf } from '../planner/plan-types.js';
import type { Argv } from '../qemu/commands.js';
import { processAlive } from '../util/process-alive.js';
import { DurableJsonFile } from './durable-json.js';
import { type Fingerprint, fingerprintOf } from './fingerprint.js';
import { stateDir } from './ledger.js';

/** Where a step stands. `running` in a journal without `finishedAt` means the run died in it. */
export type JournalStepStatus = 'pending' | 'running' | 'done' | 'failed';

/** A command a step started; recorded so that a later run can stop it if this one is killed. */
export interface JournalCommand {
  pid: number;
  /** Its exact argv: a pid is only signalled when /proc shows this same command line. */
  argv: Argv;
}

/** One step of the journal. */
export interface JournalStep {
  id: string;
  image: string;
  path: string;
  status: JournalStepStatus;
  /** Files the step writes under temporary names; removed when it is interrupted. */
  temporaries: string[];
  /**
   * Its renames when done, in order (a new data file first, the image last), and what was at
   * each final path when it started (null: nothing): a run killed between two renames left a
   * new file at a path where none was, which its image does not use yet (recovery removes it).
   */
  renames?: { temporaryPath: string; onto: string }[];
  targetsBefore?: Record<string, Fingerprint | null>;
  /** The files it reads, when it started. */
  inputs?: Record<string, Fingerprint | null>;
  /** The files it wrote, when it finished. */
  outputs?: Record<string, Fingerprint | null>;
  /** Commands running right now. */
  commands: JournalCommand[];
  startedAt?: string;
  finishedAt?: string;
}

/** How a run ended; absent while it runs (or when it was killed). */
export type JournalOutcome = 'completed' | 'failed' | 'interrupted' | 'recovered';

/** The journal file's content. */
export interface Journal {
  version: 1;
  pid: number;
  host: string;
  /** The kernel's boot id: after a reboot the same pid is another process. */
  bootId?: string;
  startedAt: string;
  finishedAt?: string;
  outcome?: JournalOutcome;
  steps: JournalStep[];
}

/** This boot's id (Linux), or undefined where there is none. */
export function bootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * The journal of a run that was killed and not cleaned up after yet: it never finished, and its
 * writer is not still running here (a live pid on this host since the same boot; pids are
 * reused after a reboot). A run on another host cannot be asked, so it counts as killed.
 */
export function killedRun(journal: Journal | null): journal is Journal {
  if (!journal || journal.finishedAt !== undefined) return false;
  if (journal.host !== hostname()) return true;
  if (journal.bootId !== undefined && journal.bootId !== bootId()) return true;
  return journal.pid === process.pid || !processAlive(journal.pid);
}

/** The journal file beside a manifest. */
export function journalPath(manifestDir: string): string {
  return join(stateDir(manifestDir), 'journal.json');
}

/** Reads the journal of the last apply; null when there is none or it cannot be read. */
export async function readJournal(manifestDir: string): Promise<Journal | null> {
  try {
    const parsed = JSON.parse(await readFile(journalPath(manifestDir), 'utf8')) as Journal;
    if (parsed?.version !== 1 || !Array.isArray(parsed.steps)) return null;
    return parsed;
  } catch {
    // A missing journal means no earlier run; an unreadable one cannot guide a cleanup, and the
    // planner does not depend on it (it re-inspects the disk and trusts only the ledger).
    return null;
  }
}

async function fingerprintsOf(paths: readonly string[]): Promise<Record<string, Fingerprint | null>> {
  const entries = await Promise.all(paths.map(async (p) => [p, await fingerprintOf(p)] as const));
  return Object.fromEntries(entries);
}

/** What the executor tells the journal; every call resolves once what it says is on disk. */
export interface StepJournal {
  stepStarted(step: Step): Promise<void>;
  commandStarted(step: Step, command: JournalCommand): Promise<void>;
  commandEnded(step: Step, pid: number): Promise<void>;
  stepEnded(step: Step, ok: boolean): Promise<void>;
}

/** Writes the journal of this run. */
export class JournalWriter implements StepJournal {
  private readonly file: DurableJsonFile;
  private readonly journal: Journal;

  private constructor(
    manifestDir: string,
    plan: Plan,
    private readonly now: () => Date,
  ) {
    this.file = new DurableJsonFile(journalPath(manifestDir));
    this.journal = {
      version: 1,
      pid: process.pid,
      host: hostname(),
      ...(bootId() ? { bootId: bootId() } : {}),
      startedAt: now().toISOString(),
      steps: plan.steps.map((step) => ({
        id: step.id,
        image: step.image,
        path: step.path,
        status: 'pending',
        temporaries: [
          ...(step.temporaryPath ? [step.temporaryPath] : []),
          ...(step.extraTemporaries ?? []).map((t) => t.temporaryPath),
        ],
        ...(step.extraTemporaries?.length
          ? { renames: temporariesOf(step).map(({ temporaryPath, onto }) => ({ temporaryPath, onto })) }
          : {}),
        commands: [],
      })),
    };
  }

  /** Starts the journal of a run of `plan`, written first when the first step starts. */
  static begin(manifestDir: string, plan: Plan, now: () => Date = () => new Date()): JournalWriter {
    return new JournalWriter(manifestDir, plan, now);
  }

  async stepStarted(step: Step): Promise<void> {
    const renames = this.entry(step)?.renames ?? [];
    await this.update(step, {
      status: 'running',
      inputs: await fingerprintsOf(step.reads),
      ...(renames.length ? { targetsBefore: await fingerprintsOf(renames.map((r) => r.onto)) } : {}),
      startedAt: this.stamp(),
    });
  }

  commandStarted(step: Step, command: JournalCommand): Promise<void> {
    const entry = this.entry(step);
    return this.update(step, { commands: [...(entry?.commands ?? []), command] });
  }

  /**
   * Drops the command from the step's entry; the next write records that. Not written by itself:
   * a pid a killed run's journal still lists names a process that has exited, and recovery stops
   * only a live process whose command line in /proc is the journal's argv.
   */
  async commandEnded(step: Step, pid: number): Promise<void> {
    const entry = this.entry(step);
    if (entry) entry.commands = entry.commands.filter((c) => c.pid !== pid);
  }

  async stepEnded(step: Step, ok: boolean): Promise<void> {
    await this.update(step, {
      status: ok ? 'done' : 'failed',
      commands: [],
      outputs: await fingerprintsOf(step.writes),
      finishedAt: this.stamp(),
    });
  }

  /** Closes the journal: the run cleaned up after itself, nothing is left for a later run. */
  finish(outcome: Exclude<JournalOutcome, 'recovered'>): Promise<void> {
    this.journal.outcome = outcome;
    this.journal.finishedAt = this.stamp();
    return this.save();
  }

  private entry(step: Step): JournalStep | undefined {
    return this.journal.steps.find((s) => s.id === step.id);
  }

  private update(step: Step, change: Partial<JournalStep>): Promise<void> {
    const entry = this.entry(step);
    if (entry) Object.assign(entry, change);
    return this.save();
  }

  private stamp(): string {
    return this.now().toISOString();
  }

  private save(): Promise<void> {
    return this.file.write(this.journal);
  }
}

/** Marks a journal left by a killed run as dealt with (after its leftovers were cleaned up). */
export async function closeRecoveredJournal(manifestDir: string, journal: Journal, now: Date): Promise<void> {
  await new DurableJsonFile(journalPath(manifestDir)).write({
    ...journal,
    outcome: 'recovered',
    finishedAt: now.toISOString(),
  } satisfies Journal);
}
