// addReaderEdges and topologicalOrder against the straightforward versions they replaced (every
// writer against every step; Kahn's algorithm re-scanning all steps per pick), kept here as the
// reference: the same edges in the same order, and the same order, on seeded random plans. The
// straightforward versions took about 100 s for a plan of 10,000 rewrites.
import { describe, expect, it } from 'vitest';
import { addReaderEdges, topologicalOrder } from '../../src/planner/order-steps.js';
import { type Step, stepsBefore } from '../../src/planner/plan-types.js';
import { mulberry32 } from '../helpers/random.js';

/** The replaced ancestorsOf, as it was (its memo makes a cycle's answers depend on call order). */
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

/** The replaced addReaderEdges, as it was. */
function referenceReaderEdges(steps: Step[], keyOf: (path: string) => string): void {
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

/** The replaced topologicalOrder, as it was. */
function referenceOrder(steps: readonly Step[], rank: (step: Step) => number): Step[] | null {
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

/**
 * A plan of up to `maxSteps` steps over `fileCount` files, with random reads, writes and dependencies, and
 * ranks per step or, as real plans have them, per image. `acyclic`: only edges to earlier steps.
 */
function randomSteps(
  random: () => number,
  { maxSteps = 40, acyclic = false, fileCount = 12 } = {},
): { steps: Step[]; ranks: Map<string, number> } {
  const pick = (n: number) => Math.floor(random() * n);
  const count = 1 + pick(maxSteps);
  const files = (max: number) => Array.from({ length: pick(max) }, () => `/f${pick(fileCount)}`);
  const steps = Array.from(
    { length: count },
    (_, i) =>
      ({
        id: `s${i}`,
        image: `i${pick(8)}`,
        reads: files(4),
        writes: files(3),
        // Mostly backwards edges (a DAG), now and then a forward one or an unknown id.
        dependsOn: Array.from({ length: i > 0 ? pick(3) : 0 }, () =>
          acyclic || random() < 0.9 ? `s${pick(i)}` : random() < 0.5 ? `s${pick(count)}` : 'elsewhere',
        ),
        ...(random() < 0.2 && i > 0 ? { finishAfter: { steps: [`s${pick(i)}`] } } : {}),
      }) as unknown as Step,
  );
  const perImage = random() < 0.5;
  const imageRanks = new Map(steps.map((s) => [s.image, pick(8)]));
  const ranks = new Map(steps.map((s) => [s.id, perImage ? (imageRanks.get(s.image) ?? 0) : pick(5)]));
  return { steps, ranks };
}

const copy = (steps: Step[]) => steps.map((s) => ({ ...s, dependsOn: [...s.dependsOn] }));

describe('ordering the steps', () => {
  it('adds the same reader edges and gives the same order as the reference, on 3,000 seeded plans', () => {
    const random = mulberry32(20261205);
    // Two names of one file: /f1 and /f2 are one file to keyOf.
    const keyOf = (path: string) => (path === '/f2' ? '/f1' : path);
    let cycles = 0;
    for (let i = 0; i < 3000; i++) {
      const { steps, ranks } = randomSteps(random);
      const [mine, theirs] = [copy(steps), copy(steps)];
      addReaderEdges(mine, keyOf);
      referenceReaderEdges(theirs, keyOf);
      expect(mine.map((s) => s.dependsOn)).toEqual(theirs.map((s) => s.dependsOn));
      const rank = (step: Step) => ranks.get(step.id) ?? 0;
      const ordered = topologicalOrder(mine, rank);
      expect(ordered?.map((s) => s.id) ?? null).toEqual(referenceOrder(theirs, rank)?.map((s) => s.id) ?? null);
      if (!ordered) cycles++;
    }
    // Both outcomes were exercised.
    expect(cycles).toBeGreaterThan(100);
    expect(cycles).toBeLessThan(2900);
  });

  it('agrees with the reference on 200 larger plans without cycles among their own edges', () => {
    const random = mulberry32(51202612);
    let ordered = 0;
    for (let i = 0; i < 200; i++) {
      const { steps, ranks } = randomSteps(random, { maxSteps: 120, acyclic: true, fileCount: 60 });
      const [mine, theirs] = [copy(steps), copy(steps)];
      addReaderEdges(mine, (path) => path);
      referenceReaderEdges(theirs, (path) => path);
      expect(mine.map((s) => s.dependsOn)).toEqual(theirs.map((s) => s.dependsOn));
      const rank = (step: Step) => ranks.get(step.id) ?? 0;
      const order = topologicalOrder(mine, rank)?.map((s) => s.id) ?? null;
      expect(order).toEqual(referenceOrder(theirs, rank)?.map((s) => s.id) ?? null);
      if (order) ordered++;
    }
    // Reader edges can still close a cycle (a step that reads what a later one rewrites and
    // waits for it); most of these plans order.
    expect(ordered).toBeGreaterThan(20);
  });
});
