// The side effects of running a step, behind one interface: the real implementation touches
// disks and processes; the dry-run one records what it would do. The scheduler never knows which.
import { chmod, chown, lstat, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type LedgerIntent, RUNTIME_DIR } from '../planner/plan-types.js';
import type { Argv } from '../qemu/commands.js';
import type { CommandResult, CommandRunner, RunOptions } from '../qemu/runner.js';
import { type Fingerprint, fingerprintOf, sameFingerprint } from '../state/fingerprint.js';
import type { LedgerWriter } from '../state/ledger.js';
import { startWriteback, type Writeback } from './early-writeback.js';
import { type StartedHelper, startHelperProcess } from './helper-process.js';
import { createRuntimeFolder } from './runtime-folders.js';

/** What running a step may do to the world. */
export interface StepEffects {
  /** Creates the step's private runtime folder (mode 0700) for helper sockets. */
  openRuntime(): Promise<string>;
  /** Removes a runtime folder; never fails. */
  closeRuntime(dir: string): Promise<void>;
  /** Starts a helper process and waits until it serves `socket`. */
  startHelper(argv: Argv, socket: string): Promise<StartedHelper>;
  run(argv: Argv, options?: RunOptions): Promise<CommandResult>;
  /** Makes the folder and removes a stale temporary file left by an earlier, interrupted run. */
  prepareTemporary(temporaryPath: string): Promise<void>;
  /**
   * Renames a flushed temporary file onto `path` and flushes the folder. The file it replaces, or
   * where there is none the file at `accessFrom` (the image a new data file belongs to), passes
   * on its permissions and, where this user may set them, its owner and group.
   */
  commitTemporary(temporaryPath: string, path: string, accessFrom?: string): Promise<void>;
  /** Removes a temporary file after a failure; never fails. */
  discardTemporary(temporaryPath: string): Promise<void>;
  /** Flushes a file's data to disk (qemu-img writes with cache=unsafe by default). */
  flush(path: string): Promise<void>;
  /**
   * Starts writing `paths` back to disk while the step's commands write them, so that
   * {@link flush} afterwards waits only for the rest (early-writeback.ts).
   */
  startWriteback(paths: readonly string[]): Writeback;
  /**
   * Records in the ledger that `path` was built as `intent` says. `located` maps final paths to
   * where those files are now (their temporary names): a rename keeps the fingerprint.
   */
  record(path: string, intent: LedgerIntent, located?: Readonly<Record<string, string>>): Promise<void>;
  /** Clears the in-progress mark {@link record} leaves while the files still have temporary names. */
  markFinished(path: string): Promise<void>;
  /** Before an in-place change of a recorded output: mark its ledger entry in progress. */
  markInProgress(path: string): Promise<void>;
  /** Bytes `path` occupies on disk (allocated blocks), or undefined when it cannot be read. */
  diskUsage(path: string): Promise<number | undefined>;
  /** Updates a chain of the ledger entry of `output` with the current fingerprints of `files`. */
  refreshChain(output: string, chain: 'backingChain' | 'sourceChain', files: readonly string[]): Promise<void>;
  /** How a file differs now from its fingerprint when the step was planned; undefined: unchanged. */
  changedSincePlanned(path: string, planned: Fingerprint): Promise<string | undefined>;
}

async function fsyncPath(path: string, flags: 'r' | 'r+' = 'r'): Promise<void> {
  const handle = await open(path, flags);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function fingerprints(paths: readonly string[]): Promise<Fingerprint[]> {
  const prints = await Promise.all(paths.map((p) => fingerprintOf(p)));
  return prints.filter((p): p is Fingerprint => p !== null);
}

/**
 * Gives `file` the owner, group and mode of the regular file at `from`, if there is one (a
 * symlink there is not followed: it is what gets replaced); false when there is none. A VM that
 * runs as another user (libvirt's qemu user) must still open its disk after a rewrite. Changing
 * the owner needs root; a user who may not keeps their own, as a copy by hand would. The mode
 * comes last: a chown clears set-user-ID and set-group-ID bits.
 */
async function keepAccessOf(from: string, file: string): Promise<boolean> {
  const old = await lstat(from).catch(() => undefined);
  if (!old?.isFile()) return false;
  await chown(file, old.uid, old.gid).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPERM') throw e;
  });
  await chmod(file, old.mode & 0o7777);
  return true;
}

/** The real effects. */
export class DiskEffects implements StepEffects {
  constructor(
    private readonly runner: CommandRunner,
    private readonly ledger: LedgerWriter,
    private readonly now: () => Date = () => new Date(),
  ) {}

  run(argv: Argv, options?: RunOptions): Promise<CommandResult> {
    return this.runner.run(argv, options);
  }

  openRuntime(): Promise<string> {
    // mkdtemp creates the folder with mode 0700: the sockets in it are private to this user.
    return createRuntimeFolder();
  }

  async closeRuntime(dir: string): Promise<void> {
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }

  startHelper(argv: Argv, socket: string): Promise<StartedHelper> {
    return startHelperProcess(argv, socket);
  }

  async prepareTemporary(temporaryPath: string): Promise<void> {
    await mkdir(dirname(temporaryPath), { recursive: true });
    await rm(temporaryPath, { force: true });
  }

  async commitTemporary(temporaryPath: string, path: string, accessFrom?: string): Promise<void> {
    if (!(await keepAccessOf(path, temporaryPath)) && accessFrom !== undefined)
      await keepAccessOf(accessFrom, temporaryPath);
    await rename(temporaryPath, path);
    await fsyncPath(dirname(path));
    // Renamed onto a symlink's target in another folder: that folder lost the name.
    if (dirname(temporaryPath) !== dirname(path)) await fsyncPath(dirname(temporaryPath));
  }

  async discardTemporary(temporaryPath: string): Promise<void> {
    await rm(temporaryPath, { force: true }).catch(() => undefined);
  }

  async flush(path: string): Promise<void> {
    await fsyncPath(path, 'r+');
  }

  startWriteback(paths: readonly string[]): Writeback {
    return startWriteback(paths);
  }

  async record(path: string, intent: LedgerIntent, located: Readonly<Record<string, string>> = {}): Promise<void> {
    const output = await fingerprintOf(located[path] ?? path);
    if (!output) throw new Error(`internal: ${path} vanished after its step`);
    const dataFile = intent.dataFile ? await fingerprintOf(located[intent.dataFile] ?? intent.dataFile) : null;
    await this.ledger.record(path, {
      id: intent.imageId,
      format: intent.format,
      output,
      ...(dataFile ? { dataFile } : {}),
      source: intent.source,
      sourceChain: await fingerprints(intent.sourceChain),
      backingChain: await fingerprints(intent.backingChain),
      appliedAt: this.now().toISOString(),
      // Until the renames are done, the entry describes files under their temporary names.
      ...(Object.keys(located).length > 0 ? { inProgress: true } : {}),
    });
  }

  async markFinished(path: string): Promise<void> {
    await this.ledger.markFinished(path);
  }

  async diskUsage(path: string): Promise<number | undefined> {
    const info = await stat(path).catch(() => undefined);
    return info ? info.blocks * 512 : undefined;
  }

  async markInProgress(path: string): Promise<void> {
    await this.ledger.markInProgress(path);
  }

  async refreshChain(output: string, chain: 'backingChain' | 'sourceChain', files: readonly string[]): Promise<void> {
    await this.ledger.refreshChain(output, chain, await fingerprints(files));
  }

  async changedSincePlanned(path: string, planned: Fingerprint): Promise<string | undefined> {
    const now = await fingerprintOf(path);
    if (sameFingerprint(planned, now)) return undefined;
    return now ? 'it was modified since the plan was made' : 'it is gone';
  }
}

/** Dry-run effects: every command "succeeds" and is listed; nothing is touched. */
export class RecordingEffects implements StepEffects {
  readonly commands: Argv[] = [];

  async run(argv: Argv): Promise<CommandResult> {
    this.commands.push(argv);
    return { exitCode: 0, stdout: '', stderr: '' };
  }
  async openRuntime(): Promise<string> {
    return RUNTIME_DIR;
  }
  async closeRuntime(): Promise<void> {}
  async startHelper(argv: Argv): Promise<StartedHelper> {
    this.commands.push(argv);
    return { stop: async () => undefined };
  }
  async prepareTemporary(): Promise<void> {}
  async commitTemporary(): Promise<void> {}
  async discardTemporary(): Promise<void> {}
  async flush(): Promise<void> {}
  startWriteback(): Writeback {
    return { stop: async () => 0 };
  }
  async record(): Promise<void> {}
  async markFinished(): Promise<void> {}
  async diskUsage(): Promise<number | undefined> {
    return undefined;
  }
  async markInProgress(): Promise<void> {}
  async refreshChain(): Promise<void> {}
  async changedSincePlanned(): Promise<string | undefined> {
    return undefined;
  }
}
