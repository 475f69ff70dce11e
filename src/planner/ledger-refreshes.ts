// Ledger refreshes. An output whose chains run through a file that a step of the plan rewrites
// in place keeps presenting the same content: only content-preserving rewrites (amend, repoint,
// safe rebase) get this far, since one that changes content makes the output stale first
// (settleStaleContent). But its ledger entry names the chains' files and fingerprints as they
// were, so the next plan would rebuild it for nothing. The rewriting step refreshes the entry
// when it finishes, with the chain as the plan leaves it (a repoint changes the files, not only
// their fingerprints). That holds for outputs built before (up to date, with no step of their
// own) and for outputs built in this run by a step that runs before the rewrite.
// An output built in this run by a step that runs after a rewrite of its chains records them as
// the plan leaves them. A source grown in place is the exception: what it presents is now larger
// than a copy made before, so the resize of the source itself refreshes no copy of it. The plan
// copies such a source after it grew instead (followGrownSources in plan-content.ts). A layer
// below the source that grows changes nothing the source presents (the source's own size bounds
// it, and qemu reads the grown end of a layer as zeros, not as its backing's data), so its steps
// refresh the copy like any other rewrite.
import { backingFiles, type ChainLayer, chainFiles } from '../inspect/inspect-layout.js';
import type { ResolvedManifest } from '../manifest/resolve-manifest.js';
import { ancestry } from './order-steps.js';
import type { ContentPlan, PlanContext } from './plan-context.js';
import type { Step } from './plan-types.js';

type RecordedChain = 'backingChain' | 'sourceChain';

/**
 * The files of chains once every step of the plan has run, top first. An image's FinalImage
 * chain holds what a step reading through it opens, which for a backing named by path is that
 * file's chain as inspected (readers of a file run before the steps that reshape it); these
 * follow such a file to the image the manifest makes of it, as the next plan will see it.
 */
function settledChains(manifest: ResolvedManifest, ctx: PlanContext, keyOf: (path: string) => string) {
  const imageAt = new Map(manifest.images.map((image) => [keyOf(image.path), image.id] as const));
  const memo = new Map<string, string[]>();
  /** An image's files: its own, then its backing's (a chain deeper than the manifest is a loop). */
  const ofImage = (id: string, depth: number): string[] => {
    const final = ctx.final.get(id);
    const image = manifest.byId.get(id);
    if (!final || !image || depth > manifest.images.length) return final?.chain ?? [];
    let files = memo.get(id);
    if (!files) {
      const backing = image.backing;
      const below =
        backing === null
          ? []
          : backing.kind === 'image'
            ? ofImage(backing.id, depth + 1)
            : ofChain(ctx.layout.files.get(backing.path)?.chain ?? [], depth + 1);
      files = [final.path, ...(final.dataFile ? [final.dataFile] : []), ...below];
      memo.set(id, files);
    }
    return files;
  };
  /** An inspected chain: its layers down to the first file the manifest keeps or builds as an image, then that image's. */
  const ofChain = (chain: readonly ChainLayer[], depth: number): string[] => {
    for (const [i, layer] of chain.entries()) {
      const id = imageAt.get(keyOf(layer.path));
      if (id !== undefined && ctx.final.has(id)) return [...chainFiles(chain.slice(0, i)), ...ofImage(id, depth)];
    }
    return chainFiles(chain);
  };
  return { ofImage: (id: string) => ofImage(id, 0), ofChain: (chain: readonly ChainLayer[]) => ofChain(chain, 0) };
}

/**
 * Adds `refreshLedger` entries to the steps that rewrite a file of a recorded output's chains.
 * Call it once the steps' order is final (after the reader edges): an output built in this run
 * is refreshed only by steps that run after the step that records it.
 */
export function addRefreshes(
  manifest: ResolvedManifest,
  contents: ReadonlyMap<string, ContentPlan | 'failed'>,
  steps: readonly Step[],
  ctx: PlanContext,
  /** A key per file, two names of one file alike (fileKeys). */
  keyOf: (path: string) => string,
): void {
  if (steps.length === 0) return;
  const writersOf = new Map<string, Step[]>();
  for (const step of steps) {
    for (const key of step.writes.map(keyOf)) writersOf.set(key, [...(writersOf.get(key) ?? []), step]);
  }
  const recorderOf = new Map<string, Step>();
  const stepped = new Set<string>();
  for (const step of steps) {
    stepped.add(step.image);
    if (step.ledger) recorderOf.set(step.image, step);
  }
  const settled = settledChains(manifest, ctx, keyOf);
  const resized = new Set(
    manifest.images
      .filter((image) => {
        const plan = contents.get(image.id);
        return (
          image.size !== undefined && plan !== undefined && plan !== 'failed' && image.size !== plan.content.virtualSize
        );
      })
      .map((image) => image.id),
  );
  const ancestorsOf = ancestry(steps);
  for (const image of manifest.images) {
    const plan = contents.get(image.id);
    if (!plan || plan === 'failed') continue;
    const recorder = recorderOf.get(image.id);
    // Recorded by a step of this run, or recorded before and left as it is.
    if (!recorder && (!plan.ledger || stepped.has(image.id))) continue;
    const source = image.source ? (ctx.layout.files.get(image.source.path)?.chain ?? []) : [];
    const final = ctx.final.get(image.id);
    const chains: Record<RecordedChain, { recorded: string[]; after: string[] }> = {
      sourceChain: {
        recorded: recorder?.ledger?.sourceChain ?? chainFiles(source),
        after: settled.ofChain(source),
      },
      backingChain: {
        recorded: recorder?.ledger?.backingChain ?? backingFiles(plan.chain),
        // A backing named by path, here or further down (an image on an image that names one),
        // may be an image the manifest reshapes (a flatten or repoint changes its files).
        after: settled.ofImage(image.id).slice(final?.dataFile ? 2 : 1),
      },
    };
    for (const chain of ['backingChain', 'sourceChain'] as const) {
      const { recorded, after } = chains[chain];
      const rewriters = new Set<Step>();
      let rewrittenBefore = false;
      for (const path of new Set([...recorded, ...after])) {
        for (const writer of writersOf.get(keyOf(path)) ?? []) {
          if (writer.image === image.id) continue;
          if (recorder && ancestorsOf(recorder).has(writer.id)) rewrittenBefore = true;
          if (
            chain === 'sourceChain' &&
            resized.has(writer.image) &&
            image.source &&
            keyOf(writer.path) === keyOf(image.source.path)
          )
            continue;
          if (recorder && !ancestorsOf(writer).has(recorder.id)) continue;
          // Only a rewrite of an image kept in place presents what it did. An image built anew
          // from its source presents other content: an output read through it is stale
          // (settleStaleContent), and a refresh would have the next plan call it up to date.
          const writerPlan = contents.get(writer.image);
          if (writerPlan === undefined || writerPlan === 'failed' || writerPlan.kind !== 'in-place') continue;
          rewriters.add(writer);
        }
      }
      // A step that runs before the recorder may change which files the chain has (a flatten,
      // a repoint): the recorder names the chain as the plan leaves it, not as inspected.
      if (recorder?.ledger && rewrittenBefore) recorder.ledger = { ...recorder.ledger, [chain]: after };
      for (const writer of rewriters) {
        writer.refreshLedger = [...(writer.refreshLedger ?? []), { output: image.path, chain, files: after }];
      }
    }
  }
}
