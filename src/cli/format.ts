// Small formatting helpers for what people read.
import { relative } from 'node:path';

/**
 * `path` as shown to someone working in `cwd`: relative to it, except from the root folder,
 * where a relative name ("tmp/x") would read as if it lay somewhere else. `same` stands for
 * `cwd` itself.
 */
export function shownPath(cwd: string, path: string, same = '.'): string {
  if (cwd === '/') return path;
  return relative(cwd, path) || same;
}

/** 1536 -> "1.5 KiB". */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return 'unknown';
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

/** "1 step", "3 steps". */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

/**
 * A running step's progress: qemu-img's percentage, the bytes that share of the plan's figure
 * stands for, and the time left at the pace so far ("42% of ~6.3 MiB, about 3s left").
 */
export function describeProgress(
  percent: number,
  step: { expectedWriteBytes: number; writeBytesIsUpperBound: boolean },
  elapsedMs: number,
): string {
  const parts = [`${percent.toFixed(0)}%`];
  if (step.expectedWriteBytes > 0)
    parts.push(`of ${step.writeBytesIsUpperBound ? 'up to ' : '~'}${formatBytes(step.expectedWriteBytes)}`);
  const text = parts.join(' ');
  if (percent < 1 || percent >= 100 || elapsedMs < 1_000) return text;
  const leftMs = (elapsedMs * (100 - percent)) / percent;
  return `${text}, about ${formatDuration(leftMs)} left`;
}

/** 3400 -> "3s", 95000 -> "1m35s". */
export function formatDuration(ms: number): string {
  const seconds = Math.max(1, Math.round(ms / 1000));
  return seconds < 60 ? `${seconds}s` : `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
}
