// Helper processes a step needs while it runs (read-only qemu-nbd exports): started, awaited
// until their socket accepts connections, and always stopped by the caller.
import { stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { execa } from 'execa';
import type { Argv } from '../qemu/commands.js';
import { qemuMessage } from '../qemu/messages.js';

/** A running helper. `stop` ends it (SIGTERM, then SIGKILL) and waits for it to exit. */
export interface StartedHelper {
  stop(): Promise<void>;
}

/** How long a helper may take to start serving. */
const READY_TIMEOUT_MS = 15_000;
/**
 * How often readiness is checked: qemu-nbd serves some 20-30 ms after its start, and every step
 * waits for it, so a coarse poll would add most of a poll interval to each step.
 */
const READY_POLL_MS = 5;

async function accepts(socket: string): Promise<boolean> {
  const isSocket = await stat(socket).then(
    (s) => s.isSocket(),
    () => false,
  );
  if (!isSocket) return false;
  return new Promise((resolve) => {
    const probe = connect(socket);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/**
 * Starts `argv` and resolves once `socket` accepts connections; rejects if it dies first. If this
 * process is killed, the next apply finds the helper by the runtime folder its argv names.
 */
export async function startHelperProcess(argv: Argv, socket: string): Promise<StartedHelper> {
  const [program, ...args] = argv;
  if (!program) throw new Error('internal: empty helper argv');
  const child = execa(program, args, {
    reject: false,
    stdin: 'ignore',
    stdout: 'ignore',
    env: { LC_ALL: 'C' },
    cleanup: true,
    forceKillAfterDelay: 5_000,
  });
  let exited = false;
  const done = child.then((result) => {
    exited = true;
    return result;
  });
  const stop = async () => {
    if (!exited) child.kill('SIGTERM');
    await done;
  };
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!(await accepts(socket))) {
    if (exited) {
      const result = await done;
      throw new Error(
        `${program} stopped before serving: ${qemuMessage(String(result.stderr ?? '')) || `exit ${result.exitCode}`}`,
      );
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${program} did not start serving within ${READY_TIMEOUT_MS / 1000}s`);
    }
    await delay(READY_POLL_MS);
  }
  return { stop };
}
