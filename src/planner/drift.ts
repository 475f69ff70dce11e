// Drift: what a plan says about each image, in the terms of `chainform status`. Pure: read off
// the plan's per-image action and step kinds, so status and plan never disagree.
import type { Plan, Step, StepKind } from './plan-types.js';

/** How an image differs from the manifest. */
export type DriftState =
  | 'in-sync'
  | 'missing'
  /**
   * To be built again: its source, or an image it is built on, changed since chainform built
   * it, or a run stopped while building it.
   */
  | 'rebuild'
  /** A file at its path that chainform did not build, or that changed since it built it. */
  | 'modified'
  /** Held open for writing by another process (a running VM, a qemu-nbd export). */
  | 'in-use'
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
  /** Ids of the manifest's other images when planning stopped at the drift listed: their state is not known. */
  notChecked?: string[];
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
            ? 'rebuild'
            : reshapeState(steps);
    return { id: image.id, path: image.path, state, reasons: steps.map((s) => s.reason) };
  });
  return {
    images,
    retire: plan.retire,
    inSync: images.every((i) => i.state === 'in-sync') && plan.retire.length === 0,
  };
}

/** Plan refusals that are drift of an image rather than an error of the manifest. */
const DRIFT_REFUSALS: Readonly<Record<string, DriftState>> = { 'output-exists': 'modified', 'image-in-use': 'in-use' };

/**
 * The drift behind a plan's refusal, when every error is one of an image of the manifest being
 * modified or in use (what a deployed, running VM looks like); undefined for any other error.
 * The other images are not known then, and are left out.
 */
export function refusalDrift(
  images: readonly { id: string; path: string }[],
  errors: readonly { code: string; message: string }[],
): Drift | undefined {
  const found: ImageDrift[] = [];
  for (const e of errors) {
    const state = DRIFT_REFUSALS[e.code];
    const image = images.find((i) => e.message.startsWith(`${i.path} `));
    if (!state || !image) return undefined;
    found.push({ id: image.id, path: image.path, state, reasons: [e.message] });
  }
  if (found.length === 0) return undefined;
  const notChecked = images.filter((i) => !found.some((f) => f.id === i.id)).map((i) => i.id);
  return { images: found, retire: [], inSync: false, ...(notChecked.length > 0 ? { notChecked } : {}) };
}
