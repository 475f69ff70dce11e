// Orders the plan's steps: adds "readers before writers" edges for files changed in place, then
// sorts topologically with a deterministic tie-break (manifest order, then step order).
import { type Step, stepsBefore } from './plan-types.js';

function ancestorsOf(step: Step, byId: ReadonlyMap<string, Step>, memo: Map<string, Set<string>>): Set<string> {
  const cached = memo.get(step.id);
  if (cached) return cached;
  const result = new Set<string>();
  memo.set(step.id, result);
  for (const dep of stepsBefore(step)) {
    result.add(dep);
    const depStep = byId.get(dep);
    if (depStep) for (const a of ancestorsOf(depStep, byId, memo)) result.add(a);
  }
  return result;
}

/** The ids of the steps each step waits for, directly or not (its dependencies once ordered). */
export function ancestry(steps: readonly Step[]): (step: Step) => Set<string> {
  const byId = new Map(steps.map((s) => [s.id, s]));
  const memo = new Map<string, Set<string>>();
  return (step) => ancestorsOf(step, byId, memo);
}

/**
 * A step that rewrites a file must wait for every step that reads that file's current content,
 * unless the reader already waits for the writer (it reads the result). Files are compared by
 * `keyOf` (fileKeys: two names of one file are one file).
 */
export function addReaderEdges(steps: Step[], keyOf: (path: string) => string): void {
  const byId = new Map(steps.map((s) => [s.id, s]));
  const memo = new Map<string, Set<string>>();
  const writes = new Map(steps.map((s) => [s.id, new Set(s.writes.map(keyOf))]));
  const reads = new Map(steps.map((s) => [s.id, s.reads.map(keyOf)]));
  for (const writer of steps) {
    const written = writes.get(writer.id) ?? new Set<string>();
    for (const reader of steps) {
      if (reader === writer) continue;
      if (!(reads.get(reader.id) ?? []).some((file) => written.has(file))) continue;
      if (ancestorsOf(reader, byId, memo).has(writer.id)) continue;
      if (!writer.dependsOn.includes(reader.id)) {
        writer.dependsOn.push(reader.id);
        memo.clear();
      }
    }
  }
}

/** Kahn's algorithm. Returns null when the steps contain a dependency cycle. */
export function topologicalOrder(steps: readonly Step[], rank: (step: Step) => number): Step[] | null {
  const remaining = new Map(steps.map((s) => [s.id, new Set(stepsBefore(s))]));
  const ordered: Step[] = [];
  while (remaining.size > 0) {
    const ready = steps.filter((s) => remaining.get(s.id)?.size === 0).sort((a, b) => rank(a) - rank(b));
    const next = ready[0];
    if (!next) return null;
    ordered.push(next);
    remaining.delete(next.id);
    for (const deps of remaining.values()) deps.delete(next.id);
  }
  return ordered;
}
