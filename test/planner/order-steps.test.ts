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

/** A plan of up to 40 steps over 12 files, with random reads, writes, dependencies and ranks. */
function randomSteps(random: () => number): { steps: Step[]; ranks: Map<string, number> } {
  const pick = (n: number) => Math.floor(random() * n);
  const count = 1 + pick(40);
  const files = (max: number) => Array.from({ length: pick(max) }, () => `/f${pick(12)}`);
  const steps = Array.from(
    { length: count },
    (_, i) =>
      ({
        id: `s${i}`,
        image: `i${pick(8)}`,
        reads: files(4),
        writes: files(3),
        // Mostly backwards edges (a DAG), now and then a forward one or an unknown id.
        dependsOn: Array.from({ length: pick(3) }, () =>
          random() < 0.9 && i > 0 ? `s${pick(i)}` : random() < 0.5 ? `s${pick(count)}` : 'elsewhere',
        ),
        ...(random() < 0.2 && i > 0 ? { finishAfter: { steps: [`s${pick(i)}`] } } : {}),
      }) as unknown as Step,
  );
  const ranks = new Map(steps.map((s) => [s.id, pick(5)]));
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
});
