// The library API: each stage as one call, with typed hand-offs. The CLI is built on these.
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { type Diagnostic, error, hasErrors, warning } from './diagnostics/diagnostic.js';
import { DiskEffects, RecordingEffects } from './executor/effects.js';
import type { ExecutionEvent, RunSummary } from './executor/events.js';
import { DEFAULT_JOBS, executePlan } from './executor/execute-plan.js';
import { type Recovery, recoverInterruptedApply } from './executor/recover-interrupted.js';
import { retireFiles } from './executor/retire-files.js';
import { reapOrphanedRuntimeFolders } from './executor/runtime-folders.js';
import { verifyLayout } from './executor/verify-layout.js';
import { layoutManifest, linearManifest } from './importer/build-manifest.js';
import { type ImportedLayout, inspectChains, snapshotsPastImageEnd } from './importer/inspect-chains.js';
import { type ImageFile, readImageFile } from './inspect/image-file.js';
import { type InspectedLayout, inspectLayout } from './inspect/inspect-layout.js';
import { measureSteps } from './inspect/measure-steps.js';
import { recordedSnapshotSizes } from './inspect/qcow2-delta.js';
import {
  DEFAULT_CHECKS_BEFORE_WORKER,
  type DeferredTruncationChecks,
  deferredTruncationChecks,
} from './inspect/truncation-checks.js';
import { checkManifest } from './manifest/check-manifest.js';
import { loadManifestFile, type ManifestSource } from './manifest/load-manifest.js';
import type { Manifest } from './manifest/manifest.generated.js';
import { type ResolvedManifest, resolveManifest } from './manifest/resolve-manifest.js';
import { manifestSchemaPath } from './manifest/schema.js';
import { validateSchema } from './manifest/validate-schema.js';
import { findSnapshot, snapshotPastImageEnd } from './planner/find-snapshot.js';
import { fitsAtWorst, planLayout, withMeasuredWrites } from './planner/plan-layout.js';
import type { Plan, SpaceCheck } from './planner/plan-types.js';
import { planDifferences, type SavedPlan, stalenessOf } from './planner/saved-plan.js';
import { savedPlanProblem } from './planner/saved-plan-schema.js';
import { layerInfoCommand } from './qemu/commands.js';
import { parseImageInfo } from './qemu/image-info.js';
import { qemuMessage } from './qemu/messages.js';
import { type CommandRunner, ExecaRunner } from './qemu/runner.js';
import { type Fingerprint, fingerprintOf } from './state/fingerprint.js';
import { JournalWriter, killedRun, readJournal } from './state/journal.js';
import { LedgerWriter, readLedger } from './state/ledger.js';
import { memoize } from './util/memo.js';
import { sameFile } from './util/same-file.js';
import { VERSION } from './version.js';

/** stat, or undefined when the path cannot exist (missing, a name too long, ...). */
function statIfAny(path: string): ReturnType<typeof statSync> | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

/**
 * A check of "the nearest existing ancestor of a path is a folder", remembering each folder's
 * answer: 10,000 images in 1,000 folders ask about 1,000 folders, not 10,000 times.
 */
function parentBlockedCheck(): (path: string) => string | undefined {
  const blockerOf = memoize((dir: string): string | undefined => {
    const stat = statIfAny(dir);
    if (stat) return stat.isDirectory() ? undefined : dir;
    return dirname(dir) === dir ? undefined : blockerOf(dirname(dir));
  });
  return (path) => blockerOf(dirname(path));
}

/** Whether `path` exists, as `existsSync` says it, from a file read (which may throw). */
function existsBy(fileOf: (path: string) => ImageFile, path: string): boolean {
  try {
    return fileOf(path).fingerprint !== null;
  } catch {
    return false;
  }
}

/** A loaded manifest, or why it could not be loaded. Diagnostics point into `source`. */
export type LoadResult =
  | { ok: true; manifest: ResolvedManifest; source: ManifestSource; warnings: Diagnostic[] }
  | { ok: false; diagnostics: Diagnostic[]; source?: ManifestSource };

/**
 * Reads, parses, schema-validates, resolves and checks a manifest. Writes nothing. `fileOf`, when
 * given, answers whether files exist from its (memoized) reads, which inspection then reuses.
 */
export async function loadManifest(file: string, fileOf?: (path: string) => ImageFile): Promise<LoadResult> {
  const loaded = await loadManifestFile(resolve(file));
  if (!loaded.ok) return { ok: false, diagnostics: loaded.diagnostics };
  const source = loaded.source;
  const validated = validateSchema(source);
  if (!validated.ok) return { ok: false, diagnostics: validated.diagnostics, source };
  const manifest = resolveManifest(source, validated.manifest);
  const fileExists = fileOf ? (path: string) => existsBy(fileOf, path) : existsSync;
  const problems = checkManifest(manifest, { fileExists, parentBlocked: parentBlockedCheck() });
  if (hasErrors(problems)) return { ok: false, diagnostics: problems, source };
  return { ok: true, manifest, source, warnings: problems };
}

/**
 * {@link loadManifest}, then the checks that need an image header: every snapshot a `from`
 * names must exist (read with `qemu-img info -U`, which never writes).
 */
export async function validate(file: string, options: EngineOptions = {}): Promise<LoadResult> {
  const loaded = await loadManifest(file);
  if (!loaded.ok) return loaded;
  const runner = options.runner ?? new ExecaRunner();
  const diagnostics: Diagnostic[] = [];
  for (const image of loaded.manifest.images) {
    if (!image.source || image.source.snapshot === undefined) continue;
    // The top layer's header lists its snapshots; no backing file is opened.
    const result = await runner.run(layerInfoCommand(image.source.path, image.source.format));
    if (result.exitCode !== 0) {
      diagnostics.push(
        error('inspect-failed', `cannot read ${image.source.path}: ${qemuMessage(result.stderr)}`, {
          location: image.at.fromPath,
        }),
      );
      continue;
    }
    const top = parseImageInfo(result.stdout)[0];
    const choice = findSnapshot(image, top?.snapshots ?? []);
    if (!choice.ok) {
      diagnostics.push(choice.diagnostic);
      continue;
    }
    const sizes = image.source.format === 'qcow2' ? recordedSnapshotSizes(image.source.path) : undefined;
    const recorded = sizes instanceof Map ? sizes.get(choice.id) : undefined;
    const cutShort = top && snapshotPastImageEnd(image, choice, recorded, top.virtualSize);
    if (cutShort) diagnostics.push(cutShort);
  }
  if (diagnostics.length > 0) return { ok: false, diagnostics, source: loaded.source };
  return loaded;
}

/** A plan, or why there is none. */
export type PlanResult =
  | {
      ok: true;
      plan: Plan;
      manifest: ResolvedManifest;
      source: ManifestSource;
      warnings: Diagnostic[];
      /** Every file the plan was made from, with its fingerprint (null: missing), for saved plans. */
      files: Record<string, Fingerprint | null>;
      /** What inspection found on disk (chains, sizes, free space). */
      layout: InspectedLayout;
    }
  | { ok: false; diagnostics: Diagnostic[]; source?: ManifestSource };

/**
 * A warning when the last apply of this folder was killed and nothing has cleaned up after it
 * yet: its qemu-img may still run (and hold images), which the next `apply` deals with first.
 */
async function killedApplyWarning(manifestDir: string): Promise<Diagnostic[]> {
  const journal = await readJournal(manifestDir);
  if (!killedRun(journal)) return [];
  return [
    warning(
      'apply-killed',
      `the last apply (pid ${journal.pid} on ${journal.host}, started ${journal.startedAt}) was killed before it finished`,
      { hint: 'the next `chainform apply` stops what it left running and removes its half-written files first' },
    ),
  ];
}

/** Options shared by {@link plan} and {@link apply}. */
export interface EngineOptions {
  /** Runs qemu-img; defaults to the real one. */
  runner?: CommandRunner;
}

/** Options of {@link plan}. */
export interface PlanOptions extends EngineOptions {
  /**
   * When convert steps are sized with `qemu-img measure`: 'always' (the default: the plan's
   * figures are shown), or 'when-space-is-tight', only when their worst case (see
   * `Step.worstCaseWriteBytes`) would not fit in the free space. Then a measure could change the
   * free-space verdict; otherwise it would only refine figures nobody reads (`apply --quiet`),
   * for a process each.
   */
  measure?: 'always' | 'when-space-is-tight';
  /**
   * How many qcow2 files inspection checks for truncation itself before it hands the rest to a
   * worker thread (default {@link DEFAULT_CHECKS_BEFORE_WORKER}); null: never a worker.
   */
  checksBeforeWorker?: number | null;
}

/** Loads a manifest, inspects the disk and plans. Writes nothing. */
export async function plan(file: string, options: PlanOptions = {}): Promise<PlanResult> {
  // The truncation checks of a large inspection run on a worker thread meanwhile; when any file
  // turns out cut short (or changed, or the worker failed), planning again with every check made
  // here gives the very result a plan without the worker gives (truncation-checks.ts).
  const deferred =
    options.checksBeforeWorker === null ? undefined : deferredTruncationChecks(options.checksBeforeWorker);
  let result: PlanResult | undefined;
  let failure: unknown;
  try {
    result = await planWith(file, options, deferred);
  } catch (e) {
    failure = e; // maybe from a file cut short that the worker found, which a plan again shows
  }
  // Settled once more if planWith did (the same answer): the worker must not outlive the plan.
  if (deferred && (await deferred.settle()) === 'plan-again') return planWith(file, options, undefined);
  if (result === undefined) throw failure;
  return result;
}

async function planWith(
  file: string,
  options: PlanOptions,
  deferred: DeferredTruncationChecks | undefined,
): Promise<PlanResult> {
  // Each file is stat-ed and its header read once, by the manifest checks or by inspection.
  const fileOf = memoize((path: string) => readImageFile(path, deferred));
  const loaded = await loadManifest(file, fileOf);
  if (!loaded.ok) return loaded;
  const runner = options.runner ?? new ExecaRunner();
  let ledger: Awaited<ReturnType<typeof readLedger>>;
  try {
    ledger = await readLedger(loaded.manifest.dir);
  } catch (e) {
    return {
      ok: false,
      source: loaded.source,
      diagnostics: [
        {
          code: 'ledger-unreadable',
          severity: 'error',
          message: (e as Error).message,
          hint: 'restore the file from a backup, or remove it to let chainform treat existing outputs as foreign',
        },
      ],
    };
  }
  const inspected = await inspectLayout(loaded.manifest, ledger, runner, fileOf);
  const killed = await killedApplyWarning(loaded.manifest.dir);
  const warnings = [...loaded.warnings, ...killed, ...inspected.diagnostics.filter((d) => d.severity === 'warning')];
  if (hasErrors(inspected.diagnostics)) {
    return { ok: false, diagnostics: [...killed, ...inspected.diagnostics], source: loaded.source };
  }
  const planned = planLayout(loaded.manifest, inspected.layout);
  // Before any qemu-img measure: a plan made again without the worker would measure anew.
  if (deferred && (await deferred.settle()) === 'plan-again') return { ok: false, diagnostics: [] };
  if (!planned.ok) return { ok: false, diagnostics: [...warnings, ...planned.diagnostics], source: loaded.source };
  warnings.push(...planned.plan.warnings);
  const skipMeasures = options.measure === 'when-space-is-tight' && fitsAtWorst(planned.plan, inspected.layout);
  const measures = skipMeasures ? new Map<string, number>() : await measureSteps(planned.plan.steps, runner);
  const measured = withMeasuredWrites(planned.plan, measures, inspected.layout);
  measured.warnings = warnings;
  // Only a saved plan needs `files` (17 ms for 10,000 images): taken from the layout, which
  // inspection never changes, when first read.
  let files: Record<string, Fingerprint | null> | undefined;
  return {
    ok: true,
    plan: measured,
    manifest: loaded.manifest,
    source: loaded.source,
    warnings,
    get files() {
      files ??= inspectedFiles(inspected.layout);
      return files;
    },
    layout: inspected.layout,
  };
}

/** The fingerprint of every file inspection looked at: images, chain layers, data files. */
function inspectedFiles(layout: InspectedLayout): Record<string, Fingerprint | null> {
  const files: Record<string, Fingerprint | null> = {};
  for (const file of layout.files.values()) {
    files[file.path] = file.fingerprint;
    for (const layer of file.chain ?? []) {
      files[layer.path] = layer.fingerprint;
      if (layer.dataFilePath) files[layer.dataFilePath] = layer.dataFileFingerprint ?? null;
    }
  }
  return files;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** The saved-plan file of a plan (see {@link applySavedPlan}). */
export function savePlan(planned: Extract<PlanResult, { ok: true }>, now: Date = new Date()): SavedPlan {
  return {
    kind: 'chainform-saved-plan',
    formatVersion: 1,
    createdAt: now.toISOString(),
    chainformVersion: VERSION,
    manifest: { path: planned.manifest.file, sha256: sha256(planned.source.text) },
    files: planned.files,
    plan: planned.plan,
  };
}

/** The largest file read as a saved plan (one of 10,000 images takes a few MB). */
const MAX_SAVED_PLAN_BYTES = 256 * 1024 * 1024;

/** Reads and checks a saved-plan file against its schema. */
export async function loadSavedPlan(
  file: string,
): Promise<{ ok: true; saved: SavedPlan } | { ok: false; diagnostics: Diagnostic[] }> {
  const fail = (message: string) => ({ ok: false as const, diagnostics: [error('saved-plan-unreadable', message)] });
  let data: unknown;
  try {
    // A disk image given where the plan goes would otherwise be read whole into memory.
    const info = await stat(resolve(file));
    if (!info.isFile()) return fail(`cannot read the saved plan ${file}: it is not a regular file`);
    const size = info.size;
    if (size > MAX_SAVED_PLAN_BYTES) return fail(`${file} is not a chainform saved plan: it holds ${size} bytes`);
    data = JSON.parse(await readFile(resolve(file), 'utf8'));
  } catch (e) {
    // JSON.parse quotes the text it stopped at, which for a binary file is binary.
    if (e instanceof SyntaxError) return fail(`${file} is not a chainform saved plan: it is not valid JSON`);
    return fail(`cannot read the saved plan ${file}: ${(e as Error).message}`);
  }
  const problem = savedPlanProblem(data);
  if (problem) return fail(`${file} is not a chainform saved plan: ${problem}`);
  return { ok: true, saved: data as SavedPlan };
}

/**
 * The saved plan ready to apply (with its manifest loaded again), or why it is stale: the
 * manifest's bytes or any file the plan was made from changed since it was saved.
 */
export async function checkSavedPlan(
  saved: SavedPlan,
  options: EngineOptions = {},
): Promise<
  | { ok: true; plan: Plan; manifest: ResolvedManifest }
  | { ok: false; stale: string[] }
  | { ok: false; diagnostics: Diagnostic[] }
> {
  const text = await readFile(saved.manifest.path, 'utf8').catch(() => null);
  const files: Record<string, Fingerprint | null> = {};
  for (const path of Object.keys(saved.files)) files[path] = await fingerprintOf(path).catch(() => null);
  const stale = stalenessOf(saved, { manifestSha256: text === null ? null : sha256(text), files });
  if (stale.length > 0) return { ok: false, stale };
  // Only a plan chainform itself makes from this manifest and disk is ever run: planning again
  // must give the very steps the file holds. That also catches what fingerprints cannot see,
  // and a file edited by hand (its commands are never trusted on their own).
  const fresh = await plan(saved.manifest.path, options);
  if (!fresh.ok) return { ok: false, diagnostics: fresh.diagnostics };
  const differences = planDifferences(saved.plan, fresh.plan);
  if (differences.length > 0) return { ok: false, stale: differences };
  return { ok: true, plan: fresh.plan, manifest: fresh.manifest };
}

/** Options for {@link apply}. */
export interface ApplyOptions extends EngineOptions {
  /** Steps at most running at once; default {@link DEFAULT_JOBS} (one per CPU, at most 4). */
  jobs?: number;
  /** Record the commands instead of running them. */
  dryRun?: boolean;
  /**
   * Start even when the plan's writes exceed the free space (e.g. a compressing or deduplicating
   * filesystem stores less than qemu-img measures). A full disk still fails the step cleanly.
   */
  skipSpaceCheck?: boolean;
  /**
   * After the steps, compare every output with its source and `qemu-img check` every qcow2
   * image. Always done when the plan retires files: nothing is deleted unless it passes.
   */
  verify?: boolean;
  signal?: AbortSignal;
  onEvent?: (event: ExecutionEvent) => void;
}

/**
 * The filesystems the plan's outputs do not fit on (expected writes against the free space seen
 * when planning). {@link apply} refuses to start while this is not empty.
 */
export function spaceShortfalls(plan: Plan): SpaceCheck[] {
  return plan.space.filter((space) => !space.fits);
}

/** Runs a plan made by {@link plan}; refuses to start when {@link spaceShortfalls} finds any. */
export async function apply(
  planned: { plan: Plan; manifest: ResolvedManifest },
  options: ApplyOptions = {},
): Promise<RunSummary> {
  const runner = options.runner ?? new ExecaRunner();
  const run = {
    jobs: options.jobs ?? DEFAULT_JOBS,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onEvent ? { onEvent: options.onEvent } : {}),
  };
  if (options.dryRun) return executePlan(planned.plan, { ...run, effects: new RecordingEffects() });
  const short = options.skipSpaceCheck ? [] : spaceShortfalls(planned.plan);
  if (short.length > 0) {
    return {
      ok: false,
      done: [],
      failed: short.map((space) => ({
        stepId: 'preflight',
        message: `not enough free space in ${space.dir}: the plan writes about ${space.expectedWriteBytes} bytes there and ${space.freeBytes} are free`,
      })),
      notStarted: planned.plan.steps.map((step) => step.id),
      interrupted: false,
      durationMs: 0,
    };
  }
  // Helpers left running by an earlier run that was killed hold locks on images: stop them.
  await reapOrphanedRuntimeFolders();
  const dir = planned.manifest.dir;
  const effects = new DiskEffects(runner, new LedgerWriter(dir, await readLedger(dir)));
  const journal = JournalWriter.begin(dir, planned.plan);
  const summary = await executePlan(planned.plan, { ...run, effects, journal });
  // Every step cleaned up after itself: nothing is left for the next run's recovery.
  await journal.finish(summary.ok ? 'completed' : summary.interrupted ? 'interrupted' : 'failed');
  if (!summary.ok || (!options.verify && planned.plan.retire.length === 0)) return summary;
  return verifyThenRetire(planned, summary, effects, runner);
}

/** The last phase of a successful run: verify the layout, and only then delete retired files. */
async function verifyThenRetire(
  planned: { plan: Plan; manifest: ResolvedManifest },
  summary: RunSummary,
  effects: DiskEffects,
  runner: CommandRunner,
): Promise<RunSummary> {
  const verified = await verifyLayout(planned.manifest, effects);
  const checked: RunSummary = { ...summary, verified: verified.images };
  // An output that does not match must not pass for a finished one: its ledger entry is marked
  // in progress, so the next plan rebuilds it instead of calling it up to date.
  for (const image of verified.images) if (!image.ok) await effects.markInProgress(image.path);
  if (!verified.ok) {
    const failed = verified.images
      .filter((i) => !i.ok)
      .map((i) => ({ stepId: 'verify', message: `${i.path} (${i.image}) ${i.detail}` }));
    return {
      ...checked,
      ok: false,
      failed,
      keptFromRetire: planned.plan.retire.map((path) => ({ path, reason: 'the layout did not verify' })),
    };
  }
  const retired = await retireFiles(planned.manifest, planned.plan.retire, runner);
  return {
    ...checked,
    retired: retired.retired,
    keptFromRetire: retired.kept,
    ok: retired.kept.length === 0,
    failed: retired.kept.map((k) => ({ stepId: 'retire', message: `kept ${k.path}: ${k.reason}` })),
  };
}

/**
 * Cleans up after an earlier apply of this manifest that was killed (see
 * {@link recoverInterruptedApply}); call it with the apply lock held, before {@link plan}.
 */
export function recover(manifestFile: string): Promise<Recovery | null> {
  return recoverInterruptedApply(dirname(resolve(manifestFile)));
}

/** Options for {@link importLayout}. */
export interface ImportOptions extends EngineOptions {
  /** Format of the given images; detected (with a warning) when omitted. */
  format?: string;
  /** Folder the manifest will be written to; paths in it are relative to this folder. */
  manifestDir: string;
  /** Write the linearising manifest instead, with the links under this folder. */
  linearizeInto?: string;
  /**
   * The file the manifest will be written to: refused when it is one of the files read (an
   * image of the chains, or a data file), under any name.
   */
  manifestFile?: string;
  /** Clock, for the origin comment. */
  now?: () => Date;
}

/** The file of the imported chains (an image or its data file) that `path` names, if any. */
function chainFileAt(layout: ImportedLayout, path: string): string | undefined {
  const files = layout.layers.flatMap((layer) => {
    const dataFile = layer.info.format === 'qcow2' ? layer.info.qcow2.dataFile : undefined;
    return dataFile === undefined ? [layer.path] : [layer.path, resolve(dirname(layer.path), dataFile)];
  });
  return files.find((file) => sameFile(file, path));
}

/** Captures the chains of `images` as manifest text (read-only: nothing on disk changes). */
export async function importLayout(
  images: readonly string[],
  options: ImportOptions,
): Promise<{ ok: true; text: string; warnings: Diagnostic[] } | { ok: false; diagnostics: Diagnostic[] }> {
  const runner = options.runner ?? new ExecaRunner();
  const { layout, diagnostics } = await inspectChains(images, options.format, runner);
  if (hasErrors(diagnostics)) return { ok: false, diagnostics };
  const overwritten = options.manifestFile && chainFileAt(layout, options.manifestFile);
  if (overwritten) {
    return {
      ok: false,
      diagnostics: [
        error('import-out-file', `the manifest would be written over ${overwritten}, a file of the chains read`, {
          hint: 'name a new file for the manifest (-o)',
        }),
      ],
    };
  }
  const context = {
    manifestDir: resolve(options.manifestDir),
    schemaPath: manifestSchemaPath,
    origin: `Written by chainform import on ${(options.now ?? (() => new Date()))().toISOString()}.`,
  };
  const doc = options.linearizeInto
    ? linearManifest(layout, context, resolve(options.linearizeInto))
    : layoutManifest(layout, context);
  if (options.linearizeInto) {
    // The links are new files: none may land on an image of the chains being read.
    const links = Object.values((doc.toJS() as Manifest).images).map((image) =>
      resolve(context.manifestDir, image.path),
    );
    const clash = links.find((path) => layout.layers.some((layer) => layer.path === path));
    if (clash) {
      return {
        ok: false,
        diagnostics: [
          error('import-out-dir', `--out-dir would put a new link over an input image: ${clash}`, {
            hint: 'choose an empty folder for --out-dir',
          }),
        ],
      };
    }
    // The manifest's own file would then stand where the plan makes a link, and be refused.
    const manifestFile = options.manifestFile && resolve(options.manifestFile);
    if (manifestFile && links.includes(manifestFile)) {
      return {
        ok: false,
        diagnostics: [
          error('import-out-file', `the manifest would be written where a new link goes: ${manifestFile}`, {
            hint: 'name the manifest file outside --out-dir, or under another name',
          }),
        ],
      };
    }
  }
  const warnings = options.linearizeInto ? [...diagnostics, ...snapshotsPastImageEnd(layout)] : diagnostics;
  return { ok: true, text: doc.toString({ lineWidth: 0 }), warnings };
}
