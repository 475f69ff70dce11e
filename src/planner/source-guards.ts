// Source and backing guards. A step that records an output in the ledger stores the
// fingerprints of the output's source chain and of its backing chain as they are when it ends.
// If another process wrote to one of those files after planning (the plan waited at its prompt,
// or an earlier step ran long), or while the step ran, the output may not present what the
// entry says: an amend of a copy would record a source it never copied, and an overlay built
// on a base that changed under it holds the wrong clusters. The next plan would call either up
// to date. So the step also lists those files in `plannedFrom`: it refuses to start, or to
// finish, when one is not as planned (execute-plan.ts ensureAsPlanned). Files a step of the
// plan itself writes, and the data files of images it writes, are left out; the ordering and
// the ledger refreshes cover them.
import { chainFiles, chainPrints, type InspectedLayout } from '../inspect/inspect-layout.js';
import type { ResolvedManifest } from '../manifest/resolve-manifest.js';
import type { Fingerprint } from '../state/fingerprint.js';
import type { Step } from './plan-types.js';

/** The fingerprint of every file of every inspected chain, by path. */
function inspectedPrints(layout: InspectedLayout): Map<string, Fingerprint> {
  const prints = new Map<string, Fingerprint>();
  for (const file of layout.files.values()) {
    if (!file.chain) continue;
    const fingerprints = chainPrints(file.chain);
    chainFiles(file.chain).forEach((path, i) => {
      const fingerprint = fingerprints[i];
      if (fingerprint) prints.set(path, fingerprint);
    });
  }
  return prints;
}

/**
 * Adds the source chain and the backing chain, as inspected, to the `plannedFrom` of every step
 * that records an output.
 */
export function guardRecordedSources(
  manifest: ResolvedManifest,
  steps: Step[],
  layout: InspectedLayout,
  /** A key per file, two names of one file alike (fileKeys): a write through one name counts for all. */
  keyOf: (path: string) => string,
): void {
  const written = new Set(steps.flatMap((step) => step.writes.map(keyOf)));
  // A step that changes an image in place may write its external data file too (a resize grows
  // it, a safe rebase writes clusters into it), though only the image is in its `writes`.
  for (const step of steps) {
    for (const path of step.writes) {
      const dataFile = layout.files.get(path)?.chain?.[0]?.dataFilePath;
      if (dataFile !== undefined) written.add(keyOf(dataFile));
    }
  }
  let prints: Map<string, Fingerprint> | undefined;
  for (const step of steps) {
    if (!step.ledger) continue;
    const source = manifest.byId.get(step.image)?.source;
    const sourceChain = source ? layout.files.get(source.path)?.chain : undefined;
    const guarded = [...(sourceChain ? chainFiles(sourceChain) : []), ...step.ledger.backingChain];
    if (guarded.length === 0) continue;
    prints ??= inspectedPrints(layout);
    const planned = [...(step.plannedFrom ?? [])];
    for (const path of guarded) {
      const fingerprint = prints.get(path);
      if (!fingerprint || written.has(keyOf(path)) || planned.some((p) => p.path === path)) continue;
      planned.push({ path, fingerprint });
    }
    if (planned.length > 0) step.plannedFrom = planned;
  }
}
