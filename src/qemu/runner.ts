// Runs external commands. Everything that spawns a process goes through CommandRunner, so unit
// tests can swap in a fake and integration tests use the real one.
import { execa } from 'execa';
import pLimit from 'p-limit';
import type { Argv } from './commands.js';

/** What a finished command left behind. */
export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Set when the process was ended by a signal. */
  signal?: string | undefined;
}

/** Options for one command run. */
export interface RunOptions {
  /** Receives stdout as it arrives, for live progress. */
  onOutput?: (chunk: string) => void;
  /** Aborting kills the process (SIGTERM, then SIGKILL). */
  signal?: AbortSignal;
  /** Called with the pid once the process exists (the journal records it). */
  onSpawn?: (pid: number) => void;
}

/** Runs argv arrays; never through a shell. */
export interface CommandRunner {
  run(argv: Argv, options?: RunOptions): Promise<CommandResult>;
}

/** The real runner, on execa. */
export class ExecaRunner implements CommandRunner {
  async run(argv: Argv, options: RunOptions = {}): Promise<CommandResult> {
    const [program, ...args] = argv;
    if (!program) throw new Error('internal: empty argv');
    const child = execa(program, args, {
      reject: false,
      stdin: 'ignore',
      buffer: true,
      env: { LC_ALL: 'C' },
      forceKillAfterDelay: 5_000,
      ...(options.signal ? { cancelSignal: options.signal } : {}),
    });
    if (child.pid !== undefined) options.onSpawn?.(child.pid);
    if (options.onOutput) {
      child.stdout?.on('data', (chunk: Buffer) => options.onOutput?.(chunk.toString('utf8')));
    }
    const result = await child;
    if (result.failed && result.exitCode === undefined && !result.signal) {
      // The program could not be started at all (e.g. qemu-img is not installed).
      return { exitCode: 127, stdout: '', stderr: result.shortMessage ?? `cannot run ${program}` };
    }
    return {
      exitCode: result.exitCode ?? 1,
      stdout: String(result.stdout ?? ''),
      stderr: String(result.stderr ?? ''),
      signal: result.signal,
    };
  }
}

/** `runner`, running at most `jobs` commands at once; the others wait their turn. */
export function withConcurrency(runner: CommandRunner, jobs: number): CommandRunner {
  const limit = pLimit(jobs);
  return { run: (argv, options) => limit(() => runner.run(argv, options)) };
}
