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
 * `keyOf` (fileKeys: two names of one file are one file). Each writer looks only at the readers
 * of the files it writes, in step order (a plan of 10,000 rewrites compared every pair).
 */
export function addReaderEdges(steps: Step[], keyOf: (path: string) => string): void {
  const byId = new Map(steps.map((s) => [s.id, s]));
  const memo = new Map<string, Set<string>>();
  const position = new Map(steps.map((s, i) => [s, i]));
  const readersOf = new Map<string, Step[]>();
  for (const reader of steps) {
    for (const file of new Set(reader.reads.map(keyOf))) {
      const readers = readersOf.get(file);
      if (readers) readers.push(reader);
      else readersOf.set(file, [reader]);
    }
  }
  for (const writer of steps) {
    const candidates = new Set<Step>();
    for (const file of new Set(writer.writes.map(keyOf)))
      for (const reader of readersOf.get(file) ?? []) candidates.add(reader);
    const inStepOrder = [...candidates].sort((a, b) => (position.get(a) ?? 0) - (position.get(b) ?? 0));
    for (const reader of inStepOrder) {
      if (reader === writer) continue;
      if (ancestorsOf(reader, byId, memo).has(writer.id)) continue;
      if (!writer.dependsOn.includes(reader.id)) {
        writer.dependsOn.push(reader.id);
        memo.clear();
      }
    }
  }
}

/**
 * Kahn's algorithm: among the steps whose dependencies are all placed, the one of lowest rank
 * comes next, ties in step order. Returns null when the steps contain a dependency cycle (or wait
 * for a step that is not among them).
 */
export function topologicalOrder(steps: readonly Step[], rank: (step: Step) => number): Step[] | null {
  const index = new Map(steps.map((s, i) => [s.id, i]));
  const waiting = steps.map(() => 0);
  const dependents = steps.map((): number[] => []);
  steps.forEach((step, i) => {
    for (const dep of new Set(stepsBefore(step))) {
      waiting[i] = (waiting[i] ?? 0) + 1;
      const before = index.get(dep);
      if (before !== undefined) dependents[before]?.push(i);
    }
  });
  const ranks = steps.map(rank);
  const ready = new MinHeap((a, b) => (ranks[a] ?? 0) - (ranks[b] ?? 0) || a - b);
  waiting.forEach((count, i) => {
    if (count === 0) ready.push(i);
  });
  const ordered: Step[] = [];
  for (let next = ready.pop(); next !== undefined; next = ready.pop()) {
    ordered.push(steps[next] as Step);
    for (const after of dependents[next] ?? []) {
      waiting[after] = (waiting[after] ?? 0) - 1;
      if (waiting[after] === 0) ready.push(after);
    }
  }
  return ordered.length === steps.length ? ordered : null;
}

/** A binary heap of numbers, smallest first by `before`. */
class MinHeap {
  private readonly items: number[] = [];
  constructor(private readonly before: (a: number, b: number) => number) {}

  push(item: number): void {
    const items = this.items;
    items.push(item);
    let at = items.length - 1;
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (this.before(items[at] as number, items[parent] as number) >= 0) break;
      [items[at], items[parent]] = [items[parent] as number, items[at] as number];
      at = parent;
    }
  }

  pop(): number | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last !== undefined) {
      items[0] = last;
      let at = 0;
      for (;;) {
        const [left, right] = [2 * at + 1, 2 * at + 2];
        let smallest = at;
        if (left < items.length && this.before(items[left] as number, items[smallest] as number) < 0) smallest = left;
        if (right < items.length && this.before(items[right] as number, items[smallest] as number) < 0)
          smallest = right;
        if (smallest === at) break;
        [items[at], items[smallest]] = [items[smallest] as number, items[at] as number];
        at = smallest;
      }
    }
    return top;
  }
}
