// The plan is plain data: what `plan` prints, what `--json` emits and what the executor runs.
import type { Diagnostic } from '../diagnostics/diagnostic.js';
import type { Argv } from '../qemu/commands.js';
import type { Fingerprint } from '../state/fingerprint.js';

/** The operations a step can perform. */
export type StepKind =
  /** A full copy into a new standalone image (`qemu-img convert`). */
  | 'convert'
  /** A copy of the source's top layer onto an equivalent backing (`qemu-img convert -B`). */
  | 'convert-keep-backing'
  /** A new overlay on the source, safely rebased onto the declared backing (the "diff" recipe). */
  | 'diff'
  /**
   * A new overlay on one state of a qcow2 file holding only the clusters whose tables differ
   * from the state the declared backing presents (copy-on-read), then linked to that backing.
   */
  | 'delta'
  /** A safe rebase of an existing image in place onto a backing with different content. */
  | 'rebase'
  /** An unsafe rebase: only the backing link changes, content is known to be equal. */
  | 'repoint'
  /**
   * `qemu-img compare` of the source's backing with the declared one; identical: copy only the
   * top layer (`convert -B`); different: the diff recipe (`otherwise`).
   */
  | 'verified-convert-keep-backing'
  /** `qemu-img compare` of old and new backing; identical: `rebase -u`; different: safe rebase. */
  | 'verified-repoint'
  /** `qemu-img amend` in place: compat, lazy_refcounts, refcount_bits. */
  | 'amend'
  /** `qemu-img resize` in place: grow, or shrink when the manifest says `shrink: true`. */
  | 'resize';

/** One command of a step, with why it is there. */
export interface PlannedCommand {
  argv: Argv;
  purpose: string;
  /**
   * A check (`qemu-img compare`): exit 0 goes on with the next command; exit 1 ("different")
   * runs the step's `otherwise` commands instead of the rest; any other exit fails the step.
   */
  check?: boolean;
}

/**
 * The token standing for the step's private runtime folder in helper and command argv. The
 * executor creates the folder (mode 0700, under the system temp dir) for the step and removes
 * it after; sockets of helper processes live there.
 */
export const RUNTIME_DIR = '{runtime}';

/** A helper process a step needs while its commands run, e.g. a read-only qemu-nbd export. */
export interface PlannedHelper {
  argv: Argv;
  /** The unix socket it serves; the step's commands start once it accepts connections. */
  socket: string;
  purpose: string;
}

/** What the executor records in the ledger after a step that built or changed a managed output. */
export interface LedgerIntent {
  imageId: string;
  format: string;
  source: { path: string; format: string; snapshot?: string };
  /** Files of the source chain, top first, to fingerprint. */
  sourceChain: string[];
  /** Files of the output's backing chain after the step, top first, to fingerprint. */
  backingChain: string[];
  /** The output's external data file, to fingerprint with it. */
  dataFile?: string;
}

/** One node of the plan's DAG. */
export interface Step {
  /** Stable id: `<image id>:<kind>`. */
  id: string;
  kind: StepKind;
  /** The manifest image this step produces or changes. */
  image: string;
  /** The image's final path. */
  path: string;
  /** Why this recipe, in words. */
  reason: string;
  /** Steps that must finish first. */
  dependsOn: string[];
  /**
   * Steps this one needs only from its command `beforeCommand` on (and to finish): with a job
   * to spare it starts while they run, runs its first commands beside them, then waits for
   * them. A linearised link copies its clusters from the source while the link below is still
   * being written, and links itself to it (`rebase -u`) once it is done. Ordered like
   * `dependsOn` everywhere else (a serial run, `--emit sh`).
   */
  finishAfter?: { steps: string[]; beforeCommand: number };
  /** Files the step reads. */
  reads: string[];
  /** Final files the step writes (in place, or by renaming its temporary file). */
  writes: string[];
  /** When set, commands write this file, which is renamed onto `path` only after they all succeed. */
  temporaryPath?: string;
  /**
   * The file `temporaryPath` is renamed onto when it is not `path`: the file a symlink at `path`
   * names, so that the link keeps naming the image (see newFileFor in recipes.ts).
   */
  renameOnto?: string;
  /**
   * More files written under temporary names (an external data file), renamed before `path`:
   * onto `onto` when `path` is a symlink (see renameOnto).
   */
  extraTemporaries?: { temporaryPath: string; path: string; onto?: string }[];
  /** Started before the commands, always stopped after (also on failure and Ctrl-C). */
  helpers?: PlannedHelper[];
  commands: PlannedCommand[];
  /** Run instead of the remaining commands when a `check` command reports a difference. */
  otherwise?: PlannedCommand[];
  /** Bytes the step is expected to write (the larger branch when there is an `otherwise`). */
  expectedWriteBytes: number;
  /** True when `expectedWriteBytes` is an upper bound rather than an estimate. */
  writeBytesIsUpperBound: boolean;
  /**
   * A `qemu-img measure` that sizes this step's output exactly (convert steps). `plan` runs it and
   * puts its `required` figure in `expectedWriteBytes`; without it the figure is the planner's bound.
   */
  measure?: Argv;
  /**
   * With `measure`: the most the step's convert can write, from the output's virtual size and
   * options alone (like the measure, it leaves out a grow `resize` the step runs after the
   * convert). `apply --quiet` skips the measures when even these fit in the free space.
   */
  worstCaseWriteBytes?: number;
  ledger?: LedgerIntent;
  /**
   * Files whose metadata the step's commands were computed from (a delta's cluster ranges), as
   * they were when planned: the executor refuses to start the step if any has changed since.
   */
  plannedFrom?: { path: string; fingerprint: Fingerprint }[];
  /**
   * Up-to-date outputs whose backing or source chain reads through a file this step rewrites
   * without changing its content: their ledger entries get that chain's new fingerprints.
   */
  refreshLedger?: { output: string; chain: 'backingChain' | 'sourceChain'; files: string[] }[];
}

/** Free space against expected writes, per filesystem of the outputs. */
export interface SpaceCheck {
  dir: string;
  freeBytes: number;
  expectedWriteBytes: number;
  fits: boolean;
}

/** What happens to one image. */
export interface ImagePlan {
  id: string;
  path: string;
  /** `unchanged` when the image already satisfies the manifest. */
  action: 'unchanged' | 'create' | 'replace' | 'reshape';
  steps: string[];
}

/** The whole plan. `formatVersion` changes whenever the JSON shape changes incompatibly. */
export interface Plan {
  formatVersion: 1;
  manifest: string;
  images: ImagePlan[];
  /** Steps in a deterministic topological order. */
  steps: Step[];
  space: SpaceCheck[];
  /**
   * Existing files the manifest retires: deleted after every step succeeded and the new layout
   * was verified (outputs compared with their sources, qcow2 images checked).
   */
  retire: string[];
  warnings: Diagnostic[];
}

/** Every step `step` comes after in a serial order: `dependsOn` and `finishAfter` alike. */
export function stepsBefore(step: Step): string[] {
  return [...step.dependsOn, ...(step.finishAfter?.steps ?? [])];
}

/**
 * The files a step writes under temporary names, with their final names (`path`) and the files
 * they are renamed onto (`onto`: `path`, or the file a symlink there names): an external data
 * file first, then the image itself. Each is renamed only when the step is done.
 */
export function temporariesOf(step: Step): { temporaryPath: string; path: string; onto: string }[] {
  return [
    ...(step.extraTemporaries ?? []).map((extra) => ({ ...extra, onto: extra.onto ?? extra.path })),
    ...(step.temporaryPath
      ? [{ temporaryPath: step.temporaryPath, path: step.path, onto: step.renameOnto ?? step.path }]
      : []),
  ];
}
