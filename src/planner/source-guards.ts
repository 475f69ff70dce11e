// Source guards. A step that records an output in the ledger stores the fingerprints of the
// output's source chain as they are when it ends. If another process wrote to the source after
// planning (the plan waited at its prompt, or an earlier step ran long), an amend of the copy
// would record the new fingerprints without having copied the new content, and the next plan
// would call the copy up to date. So the step also lists those files in `plannedFrom`: it refuses
// to start, or to finish, when one is not as planned (execute-plan.ts ensureAsPlanned). Files a
// step of the plan itself writes are left out; the ordering and the ledger refreshes cover them.
import { chainFiles, chainPrints, type InspectedLayout } from '../inspect/inspect-layout.js';
import type { ResolvedManifest } from '../manifest/resolve-manifest.js';
import type { Step } from './plan-types.js';

/** Adds the source chain, as inspected, to the `plannedFrom` of every step that records an output. */
export function guardRecordedSources(manifest: ResolvedManifest, steps: Step[], layout: InspectedLayout): void {
  const written = new Set(steps.flatMap((step) => step.writes));
  for (const step of steps) {
    if (!step.ledger) continue;
    const source = manifest.byId.get(step.image)?.source;
    const chain = source ? layout.files.get(source.path)?.chain : undefined;
    if (!chain) continue;
    const planned = [...(step.plannedFrom ?? [])];
    const prints = chainPrints(chain);
    chainFiles(chain).forEach((path, i) => {
      const fingerprint = prints[i];
      if (!fingerprint || written.has(path) || planned.some((p) => p.path === path)) return;
      planned.push({ path, fingerprint });
    });
    if (planned.length > 0) step.plannedFrom = planned;
  }
}
