// Fault injection for `apply`: runs the real CLI in its own process group, SIGKILLs it (the node
// process alone, or the whole group with its qemu-img/qemu-nbd children) after a chosen delay,
// and inspects what a kill leaves behind: files, processes, and outputs checked with qemu-img.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { checkImage, compareImages, imageInfo, topLayerDataBytes } from './qemu.js';

const CLI = new URL('../../dist/cli.js', import.meta.url).pathname;

/**
 * What a kill hits. `node`: only chainform's process dies (a crash of chainform; its qemu-img
 * children live on as orphans). `group`: chainform and every child of its process group die
 * (power loss, OOM killer on the whole service, `kill -9 -PGID`).
 */
export type KillMode = 'node' | 'group';

/**
 * When a SIGKILL lands: `afterMs` after the spawn, or after the run printed its plan; then
 * `afterMs` may depend on how many steps that plan has (a resumed run has fewer left).
 */
export interface KillAt {
  from: 'spawn' | 'plan';
  afterMs: number | ((plannedSteps: number) => number);
  mode: KillMode;
}

/** How one apply run ended. */
export interface ApplyRun {
  /** `killed`: ended by the test's SIGKILL; `completed`: exit 0; `failed`: anything else. */
  outcome: 'killed' | 'completed' | 'failed';
  exitCode: number | undefined;
  signal: string | undefined;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit. */
  ms: number;
  /** Wall time from spawn to its plan's summary line, when it printed one. */
  planMs: number | undefined;
  /** Steps in its plan (0: nothing to do), when it printed one. */
  plannedSteps: number | undefined;
  /** The delay of its kill, counted from `kill.from`, once it was armed. */
  killDelayMs: number | undefined;
}

/** Options of {@link runApply}. */
export interface RunApplyOptions {
  /** Extra CLI flags (e.g. `--jobs 2`). */
  flags?: readonly string[];
  /** Environment added to the test's own (the runtime folder's TMPDIR). */
  env?: Record<string, string>;
  /** SIGKILL the run then; omitted: let it finish. */
  kill?: KillAt;
  /** A run must end within this time (it is then killed and `failed`). */
  timeoutMs?: number;
}

/** The plan's summary line, printed once planning is over and before the first step starts. */
const PLANNED = /^(?:Plan: .*; (\d+) steps? writing|No changes: )/m;

function sigkill(pid: number, mode: KillMode): void {
  try {
    // detached: the CLI leads its own process group, so -pid names chainform and its children.
    process.kill(mode === 'group' ? -pid : pid, 'SIGKILL');
  } catch {
    // Already gone: the run finished before the kill; its outcome says so.
  }
}

/** Runs `chainform apply <manifest> --yes` in `cwd`, with a SIGKILL when `kill` says. */
export async function runApply(cwd: string, manifest: string, options: RunApplyOptions = {}): Promise<ApplyRun> {
  const started = performance.now();
  const child = execa('node', [CLI, '--no-color', 'apply', manifest, '--yes', ...(options.flags ?? [])], {
    cwd,
    reject: false,
    stdin: 'ignore',
    detached: true,
    env: options.env ?? {},
    ...(options.timeoutMs !== undefined ? { timeout: options.timeoutMs, killSignal: 'SIGKILL' as const } : {}),
  });
  const { pid } = child;
  const { kill } = options;
  let timer: NodeJS.Timeout | undefined;
  let killDelayMs: number | undefined;
  const arm = (plannedSteps: number) => {
    if (!kill || pid === undefined || timer !== undefined) return;
    killDelayMs = Math.max(0, Math.floor(typeof kill.afterMs === 'number' ? kill.afterMs : kill.afterMs(plannedSteps)));
    timer = setTimeout(() => sigkill(pid, kill.mode), killDelayMs);
  };
  let planMs: number | undefined;
  let plannedSteps: number | undefined;
  let seen = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    if (planMs !== undefined) return;
    seen += chunk.toString();
    const match = PLANNED.exec(seen);
    if (!match) return;
    planMs = Math.round(performance.now() - started);
    plannedSteps = Number(match[1] ?? 0);
    if (kill?.from === 'plan') arm(plannedSteps);
  });
  if (kill?.from === 'spawn') arm(0);
  const result = await child;
  clearTimeout(timer);
  const killed = kill !== undefined && result.signal === 'SIGKILL' && !result.timedOut;
  return {
    outcome: killed ? 'killed' : result.exitCode === 0 ? 'completed' : 'failed',
    exitCode: result.exitCode,
    signal: result.signal,
    stdout: String(result.stdout ?? ''),
    stderr: `${String(result.stderr ?? '')}${result.timedOut ? `\n(timed out after ${options.timeoutMs} ms)` : ''}`,
    ms: Math.round(performance.now() - started),
    planMs,
    plannedSteps,
    killDelayMs,
  };
}

/** Whether a run got as far as printing its plan: it accepted the state it found. */
export function planned(run: ApplyRun): boolean {
  return run.planMs !== undefined;
}

/** The last `started`/`done`/`failed` line of a plain-renderer run: where a kill landed. */
export function lastStepEvent(stdout: string): string {
  const events = stdout.split('\n').filter((l) => /^(started|done|failed) /.test(l));
  return events.at(-1) ?? '(before the first step started)';
}

/** `name size` of every entry of a folder, recursively, sorted; '' for a missing folder. */
export async function listing(dir: string, prefix = ''): Promise<string[]> {
  const names = await readdir(join(dir, prefix)).catch(() => [] as string[]);
  const rows: string[] = [];
  for (const name of names.sort()) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const info = await stat(join(dir, rel)).catch(() => undefined);
    if (info?.isDirectory()) rows.push(`${rel}/`, ...(await listing(dir, rel)));
    else rows.push(`${rel} ${info?.size ?? '?'}`);
  }
  return rows;
}

/** Names in a folder, sorted ([] when it does not exist). */
export async function names(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).sort();
}

/** `pid command` of every qemu-img/qemu-nbd/qemu-io process whose command line names `dir`. */
export async function qemuProcessesIn(dir: string): Promise<string[]> {
  const pattern = `qemu-(img|nbd|io) .*${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`;
  const result = await execa('pgrep', ['-af', pattern], { reject: false });
  return String(result.stdout).split('\n').filter(Boolean);
}

/** Polls {@link qemuProcessesIn} until none is left or `ms` passed; returns what is left. */
export async function qemuProcessesAfter(dir: string, ms: number): Promise<string[]> {
  const deadline = performance.now() + ms;
  for (;;) {
    const left = await qemuProcessesIn(dir);
    if (left.length === 0 || performance.now() > deadline) return left;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** SIGKILLs processes listed by {@link qemuProcessesIn} (the test's own leftovers), by pid. */
export function killListed(rows: readonly string[]): void {
  for (const row of rows) {
    const pid = Number(row.split(' ')[0]);
    if (!Number.isInteger(pid) || pid <= 1) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

/** An image the manifest builds, and the image whose guest content it must present. */
export interface Output {
  path: string;
  reference: string;
  referenceFormat: string;
}

/** What an output looks like after an uninterrupted run: a resumed one must end the same. */
export interface Shape {
  backing: unknown;
  backingFormat: unknown;
  clusterSize: unknown;
  dataBytes: number;
}

/** Backing name and format, cluster size and the data the image stores itself. */
export async function shapeOf(path: string): Promise<Shape> {
  const info = await imageInfo(path, 'qcow2');
  return {
    backing: info['backing-filename'],
    backingFormat: info['backing-filename-format'],
    clusterSize: info['cluster-size'],
    dataBytes: await topLayerDataBytes(path, 'qcow2'),
  };
}

/** Identity and version of a file (device, inode, size, mtime in ns), or undefined if absent. */
export async function versionOf(path: string): Promise<string | undefined> {
  const info = await stat(path, { bigint: true }).catch(() => undefined);
  return info && `${info.dev}:${info.ino}:${info.size}:${info.mtimeNs}`;
}

/**
 * Problems of the outputs on disk: each one present (all of them when `all`) must present its
 * reference and pass `qemu-img check`. A file under its final name is complete, or absent.
 * `verified` holds what was already found good (an output's version with the versions of the
 * outputs listed before it, which its chain may read through): that is not read again.
 */
export async function outputProblems(
  outputs: readonly Output[],
  all: boolean,
  verified: Set<string>,
): Promise<string[]> {
  const problems: string[] = [];
  const versions: string[] = [];
  for (const output of outputs) {
    const version = await versionOf(output.path);
    versions.push(version ?? 'absent');
    if (version === undefined) {
      if (all) problems.push(`${output.path} is missing`);
      continue;
    }
    const key = versions.join(' ');
    if (verified.has(key)) continue;
    const compared = await compareImages(output.path, 'qcow2', output.reference, output.referenceFormat);
    if (compared !== 0) problems.push(`qemu-img compare ${output.path} ${output.reference}: exit ${compared}`);
    const checked = await checkImage(output.path, 'qcow2');
    if (checked !== 0) problems.push(`qemu-img check ${output.path}: exit ${checked}`);
    if (compared === 0 && checked === 0) verified.add(key);
  }
  return problems;
}

/** The last `lines` lines of a text. */
export function tail(text: string, lines = 12): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** How a run ended, with the tail of its output, for a report. */
export function describeRun(label: string, run: ApplyRun): string {
  return [
    `${label}: ${run.outcome} (exit ${run.exitCode}, signal ${run.signal ?? 'none'}, ${run.ms} ms, plan printed at ${run.planMs ?? '-'} ms)`,
    `  stdout (tail):\n${indent(tail(run.stdout))}`,
    `  stderr:\n${indent(tail(run.stderr, 20)) || '    (empty)'}`,
  ].join('\n');
}

/** Indents every line of a non-empty text by four spaces. */
export function indent(text: string): string {
  return text ? text.replace(/^/gm, '    ') : '';
}
