// Drift: what a plan says about each image, in the terms of `chainform status`. Pure: read off
// the plan's per-image action and step kinds, so status and plan never disagree.
import type { Plan, Step, StepKind } from './plan-types.js';

/** How an image differs from the manifest. */
export type DriftState =
  | 'in-sync'
  | 'missing'
  /** Its source changed since chainform built it (or a run stopped while building it). */
  | 'source-changed'
  | 'wrong-backing'
  /** Format, options (compat, cluster size, ...) or size. */
  | 'wrong-options'
  /** It must become standalone, or stop being so. */
  | 'wrong-shape';

/** One image's drift, with the plan's reasons. */
export interface ImageDrift {
  id: string;
  path: string;
  state: DriftState;
  /** The reasons of the steps that would fix it. */
  reasons: string[];
}

/** What status reports: per image, and the files a plan would still retire. */
export interface Drift {
  images: ImageDrift[];
  retire: string[];
  inSync: boolean;
}

const BACKING_KINDS: ReadonlySet<StepKind> = new Set(['rebase', 'repoint', 'verified-repoint']);
const OPTION_KINDS: ReadonlySet<StepKind> = new Set(['amend', 'resize']);

function reshapeState(steps: readonly Step[]): DriftState {
  if (steps.some((s) => BACKING_KINDS.has(s.kind))) return 'wrong-backing';
  if (steps.some((s) => OPTION_KINDS.has(s.kind))) return 'wrong-options';
  // An in-place rewrite: into a standalone file (flatten), or keeping its backing (options).
  return steps.some((s) => s.kind === 'convert') ? 'wrong-shape' : 'wrong-options';
}

/** The drift a plan describes. */
export function driftOf(plan: Plan): Drift {
  const byId = new Map(plan.steps.map((s) => [s.id, s]));
  const images = plan.images.map((image): ImageDrift => {
    const steps = image.steps.map((id) => byId.get(id)).filter((s): s is Step => s !== undefined);
    const state: DriftState =
      image.action === 'unchanged'
        ? 'in-sync'
        : image.action === 'create'
          ? 'missing'
          : image.action === 'replace'
            ? 'source-changed'
            : reshapeState(steps);
    return { id: image.id, path: image.path, state, reasons: steps.map((s) => s.reason) };
  });
  return {
    images,
    retire: plan.retire,
    inSync: images.every((i) => i.state === 'in-sync') && plan.retire.length === 0,
  };
}
