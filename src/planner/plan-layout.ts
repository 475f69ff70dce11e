// Stage 4: the planner. A function of (resolved manifest, inspected layout incl. ledger), with
// no clock. It picks, per image, the cheapest recipe that is correct on the facts known. Its one
// read of the disk is on demand and goes through the layout: a snapshot delta's cluster tables
// (SnapshotDeltaPair.read), read only for an image being built and only from the file as
// inspected (a file changed since gives no delta, and the plan falls back to a safe rebase).
import { dirname, isAbsolute } from 'node:path';
import { type Diagnostic, error, hasErrors, type SourceLocation, warning } from '../diagnostics/diagnostic.js';
import { chainFiles, type InspectedFile, type InspectedLayout } from '../inspect/inspect-layout.js';
import { backingCycleFrom } from '../manifest/check-manifest.js';
import type { ResolvedImage, ResolvedManifest } from '../manifest/resolve-manifest.js';
import { backingNameFor } from '../qemu/filenames.js';
import { fileIdentity, sameFingerprint } from '../state/fingerprint.js';
import { shellQuote } from '../util/shell-quote.js';
import { chooseSteps, keptSettings } from './choose-steps.js';
import { ContentIdentity, contentKey } from './content-identity.js';
import { addRefreshes } from './ledger-refreshes.js';
import { addReaderEdges, topologicalOrder } from './order-steps.js';
import { dataFileIsFree, followGrownSources, planContent, settleStaleContent } from './plan-content.js';
import { type ContentPlan, fileKeys, namesDataFileOf, type PlanContext } from './plan-context.js';
import { type ImagePlan, type Plan, type SpaceCheck, type Step, stepsBefore, temporariesOf } from './plan-types.js';
import { type BackingTarget, newFileAt, type Target, withDataFile } from './recipes.js';
import { guardRecordedSources } from './source-guards.js';

/** Images ordered so that every backing comes before the images on top of it. */
function backingFirst(manifest: ResolvedManifest): ResolvedImage[] {
  const done = new Set<string>();
  const ordered: ResolvedImage[] = [];
  const visit = (image: ResolvedImage, depth: number) => {
    if (done.has(image.id) || depth > manifest.images.length) return;
    const backing = image.backing;
    if (backing?.kind === 'image') {
      const below = manifest.byId.get(backing.id);
      if (below) visit(below, depth + 1);
    }
    done.add(image.id);
    ordered.push(image);
  };
  for (const image of manifest.images) visit(image, 0);
  return ordered;
}

function resolveBacking(
  image: ResolvedImage,
  ctx: PlanContext,
):
  | {
      target: BackingTarget;
      key: string | undefined;
      virtualSize: number;
      /**
       * The most it measures while the image's steps run: before or after its own resize, as
       * the plan's order has it (a resize of either may come first, or run beside the other).
       */
      sizeWhenRead: number;
    }
  | null
  | 'failed' {
  const backing = image.backing;
  if (!backing) return null;
  const dir = dirname(image.path);
  if (backing.kind === 'image') {
    const below = ctx.final.get(backing.id);
    if (!below) return 'failed';
    return {
      target: {
        path: below.path,
        format: below.format,
        name: backingNameFor(dir, below.path, below.pathIsAbsolute),
        chain: below.chain,
        chainBytes: below.chainBytes,
        producedBy: below.producedBy,
      },
      key: below.key,
      virtualSize: below.virtualSize,
      sizeWhenRead: Math.max(below.virtualSize, ctx.layout.files.get(below.path)?.chain?.[0]?.virtualSize ?? 0),
    };
  }
  const file = ctx.layout.files.get(backing.path);
  if (!file?.chain || !file.fingerprint) return 'failed';
  const chain = file.chain;
  // A file the manifest also resizes as an image is that large once the plan has run, whichever
  // way the manifest names it: the next plan would measure it so.
  const resized = declaredSizes(ctx.manifest, ctx.layout).get(realNameOf(backing.path, ctx.layout));
  const sizeNow = chain[0]?.virtualSize ?? 0;
  return {
    target: {
      path: backing.path,
      format: backing.format,
      name: backingNameFor(dir, backing.path, backing.absolute),
      chain: chainFiles(chain),
      chainBytes: chain.reduce((sum, layer) => sum + layer.actualSize, 0),
      producedBy: undefined,
    },
    key: contentKey(fileIdentity(file.fingerprint), backing.format),
    virtualSize: resized ?? sizeNow,
    sizeWhenRead: Math.max(sizeNow, resized ?? sizeNow),
  };
}

/**
 * The directory entry a path leads to: its path with symlinks resolved (inspection records it
 * where the planner needs it), the file a symlink there names, or the path itself.
 */
function realNameOf(path: string, layout: InspectedLayout): string {
  const file = layout.files.get(path);
  return file?.realPath ?? file?.symlink?.target ?? path;
}

/**
 * The declared `size` of each manifest image that has one, by the name its path leads to, so that
 * a backing named through a symlink to its file is measured at it too: a resize changes that
 * file, and a rewrite is renamed onto it. Not by inode: a hard link keeps the old file when the
 * image is rewritten (computed once per plan).
 */
function declaredSizes(manifest: ResolvedManifest, layout: InspectedLayout): ReadonlyMap<string, number> {
  let sizes = declaredSizesOf.get(layout);
  if (!sizes) {
    sizes = new Map(
      manifest.images.flatMap((image) =>
        image.size === undefined ? [] : [[realNameOf(image.path, layout), image.size] as const],
      ),
    );
    declaredSizesOf.set(layout, sizes);
  }
  return sizes;
}
const declaredSizesOf = new WeakMap<InspectedLayout, ReadonlyMap<string, number>>();

/**
 * A step that records its image's source chain in the ledger depends on that chain as it is,
 * also when its commands never open it (an amend of a copy): listed in `reads`, a step that
 * rewrites one of those files in place is ordered after it (addReaderEdges). Otherwise a resize
 * of the source could run first, and the entry would call the copy a copy of the grown source.
 */
function readsWhatItRecords(step: Step): Step {
  const recorded = step.ledger?.sourceChain ?? [];
  if (recorded.every((path) => step.reads.includes(path))) return step;
  return { ...step, reads: [...new Set([...step.reads, ...recorded])] };
}

/**
 * The retired files that are there, each once: two spellings of one path (old.raw, ./old.raw)
 * resolve to one, and names through a symlinked folder (real/old.raw, lnk/old.raw) lead to one
 * directory entry (the first name listed is kept). Hard links are two entries, both deleted.
 */
function retiredOnce(manifest: ResolvedManifest, layout: InspectedLayout): string[] {
  const entries = new Set<string>();
  const retired: string[] = [];
  for (const { path } of manifest.retire) {
    const file = layout.files.get(path);
    const entry = file?.realPath ?? path;
    if (!file?.fingerprint || entries.has(entry)) continue;
    entries.add(entry);
    retired.push(path);
  }
  return retired;
}

function planImage(
  image: ResolvedImage,
  content: ContentPlan | 'failed',
  ctx: PlanContext,
): { plan: ImagePlan; steps: Step[] } | 'failed' {
  const backing = resolveBacking(image, ctx);
  if (content === 'failed' || backing === 'failed') return 'failed';
  const finalSize = image.size ?? content.content.virtualSize;
  if (backing && backing.virtualSize > finalSize) {
    ctx.diagnostics.push(
      error(
        'backing-larger',
        `the backing of "${image.id}" (${backing.virtualSize} bytes) is larger than the image itself (${finalSize} bytes)`,
        {
          location: image.at.backing,
          hint:
            image.size !== undefined
              ? `declare a size of at least ${backing.virtualSize} bytes, or back it with an image no larger than ${finalSize} bytes`
              : `grow it to at least ${backing.virtualSize} bytes (declare size), or back it with an image no larger than ${finalSize} bytes`,
        },
      ),
    );
    return 'failed';
  }
  const dataFile = image.options.data_file;
  if (dataFile !== undefined && !dataFileIsFree(image, dataFile, ctx)) return 'failed';
  // A data file the image already has, declared through a symlink to it, is written where the link leads.
  const newData = dataFile === undefined ? undefined : newFileAt(dataFile, ctx.layout.files.get(dataFile)?.symlink);
  const symlink = followedSymlink(image, ctx);
  const target: Target = {
    id: image.id,
    path: image.path,
    format: image.format,
    ...(symlink === undefined ? {} : { symlink }),
    // A rewrite in place keeps the settings the manifest does not name (keptSettings); a new
    // file's data file is created under a temporary name too (see withDataFile).
    options: {
      ...keptSettings(image, content),
      ...image.options,
      ...(newData === undefined ? {} : { data_file: newData.temporaryPath }),
    },
    ledger: image.source
      ? {
          imageId: image.id,
          format: image.format,
          source: {
            path: image.source.path,
            format: ctx.layout.files.get(image.source.path)?.format ?? 'raw',
            ...(image.source.snapshot !== undefined ? { snapshot: image.source.snapshot } : {}),
          },
          sourceChain: chainFiles(ctx.layout.files.get(image.source.path)?.chain ?? []),
          ...(image.options.data_file ? { dataFile: image.options.data_file } : {}),
        }
      : undefined,
  };
  const chosen = chooseSteps(image, target, content, backing, ctx);
  if (chosen === 'failed') return 'failed';
  const steps = (
    dataFile === undefined || newData === undefined
      ? chosen
      : chosen.map((step) => withDataFile(step, dataFile, image.format, newData))
  ).map(readsWhatItRecords);
  // An image kept in place keeps the data file it has, unless the manifest names another or a
  // step writes the image anew (a new file gets a data file only when one is declared).
  const rewritten = steps.some((step) => step.temporaryPath !== undefined);
  // An output (built from a source) is rebuilt from it if a run dies between its renames.
  if (rewritten && content.kind === 'in-place' && !image.source && replacesDataFileInUse(image, content, steps, ctx))
    return 'failed';
  if (rewritten && backing && relativeBackingAcrossFilesystems(image, target, backing.target.name, ctx))
    return 'failed';
  if (rewritten && mountedOver(image, steps, ctx)) return 'failed';
  if (rewritten) warnOtherNamesKeepOldFile(image, target, ctx);
  const finalDataFile =
    dataFile ?? (image.source || rewritten ? undefined : ctx.layout.files.get(image.path)?.chain?.[0]?.dataFilePath);
  ctx.final.set(image.id, {
    // A declared size that differs from its content's makes it other content.
    key: finalSize === content.content.virtualSize ? content.key : `${content.key}#size=${finalSize}`,
    path: image.path,
    format: image.format,
    pathIsAbsolute: image.pathIsAbsolute,
    chain: [image.path, ...(finalDataFile ? [finalDataFile] : []), ...(backing?.target.chain ?? [])],
    ...(finalDataFile ? { dataFile: finalDataFile } : {}),
    chainBytes: content.content.chainBytes,
    virtualSize: finalSize,
    producedBy: steps.at(-1)?.id ?? backing?.target.producedBy,
  });
  const action = steps.length === 0 ? 'unchanged' : content.action;
  return { plan: { id: image.id, path: image.path, action, steps: steps.map((s) => s.id) }, steps };
}

/**
 * A retired file must be one the new layout no longer reads: not a file of an image's chain as
 * the plan leaves it (its own file, its data file, its backing chain), nor of the chain of a
 * source that stays, under that name (checkRetire refuses the names the manifest writes) or
 * another (a symlink, a hard link). retireFiles looks again before it deletes anything; found
 * here, nothing runs first, where apply would run every step and then keep the file.
 */
function retiredStillRead(
  manifest: ResolvedManifest,
  ctx: PlanContext,
  steps: readonly Step[],
  keyOf: (path: string) => string,
): Diagnostic | undefined {
  if (manifest.retire.length === 0) return undefined;
  for (const { path, at } of manifest.retire) {
    // A symlink is never deleted (retireFiles takes only files), whatever else names it.
    const file = ctx.layout.files.get(path);
    if (file?.danglingLink !== undefined) {
      return error('not-a-file', `${path} is a symlink to ${file.danglingLink}, which does not exist`, {
        location: at,
        hint: 'apply deletes only image files: remove the link yourself, or take it out of retire',
      });
    }
    const link = file?.symlink;
    if (link) {
      return error('not-a-file', `${path} is a symlink to ${link.target}, not an image file`, {
        location: at,
        hint: `apply deletes only image files: remove the link yourself; to retire ${link.target}, name it by that path wherever the manifest reads it`,
      });
    }
  }
  const retired = new Set(manifest.retire.map((r) => r.path));
  // A file the plan writes anew is another file once it has run: only its name still leads to
  // it, and another name (a hard link) keeps the old file, which nothing reads then.
  const renamed = new Set(steps.flatMap((step) => temporariesOf(step).flatMap((t) => [t.path, t.onto])));
  const renamedNames = new Set([...renamed].map((path) => realNameOf(path, ctx.layout)));
  const keyOfFinal = (path: string) => {
    const name = realNameOf(path, ctx.layout);
    return renamedNames.has(name) ? `name:${name}` : keyOf(path);
  };
  const readers = new Map<string, { path: string; reader: string }>();
  const read = (paths: readonly string[], reader: string) => {
    for (const path of paths) if (!readers.has(keyOfFinal(path))) readers.set(keyOfFinal(path), { path, reader });
  };
  for (const image of manifest.images) {
    read(ctx.final.get(image.id)?.chain ?? [image.path], `image "${image.id}"`);
    const source = image.source;
    if (!source || retired.has(source.path)) continue;
    // A source the manifest also reshapes reads what the plan leaves of it.
    const sourceName = realNameOf(source.path, ctx.layout);
    const reshaped = manifest.images.find((other) => realNameOf(other.path, ctx.layout) === sourceName);
    const chain = reshaped
      ? ctx.final.get(reshaped.id)?.chain
      : chainFiles(ctx.layout.files.get(source.path)?.chain ?? []);
    read(chain ?? [source.path], `the source of "${image.id}"`);
  }
  for (const { path, at } of manifest.retire) {
    const found = readers.get(keyOfFinal(path)) ?? readers.get(keyOf(path));
    if (!found) continue;
    const named = found.path === path ? '' : ` (another name of ${found.path})`;
    return error('retire-in-use', `${path} is listed under retire, but ${found.reader} still reads it${named}`, {
      location: at,
      hint: 'retire only files the new layout no longer needs; remove it from the retire list',
    });
  }
  return undefined;
}

/**
 * A backing named by path through another name of an image the manifest resizes, where planImage
 * could not tell its size: that depends on how the image changes, known once every image is
 * planned. A resize in place changes the file under every name (a hard link, a path through a
 * symlinked folder); a rewrite only the name it is renamed onto, which planImage already measured
 * (declaredSizes), while a hard link keeps the old file.
 */
function resizedUnderOtherNames(
  manifest: ResolvedManifest,
  ctx: PlanContext,
  steps: readonly Step[],
  keyOf: (path: string) => string,
): Diagnostic[] {
  const resized = manifest.images.filter((image) => image.size !== undefined);
  if (resized.length === 0) return [];
  const problems: Diagnostic[] = [];
  for (const image of manifest.images) {
    const backing = image.backing;
    if (backing?.kind !== 'file') continue;
    const owner = resized.find(
      (other) =>
        keyOf(other.path) === keyOf(backing.path) &&
        realNameOf(other.path, ctx.layout) !== realNameOf(backing.path, ctx.layout),
    );
    if (!owner?.size || steps.some((step) => step.image === owner.id && step.temporaryPath !== undefined)) continue;
    const size = ctx.final.get(image.id)?.virtualSize;
    if (size === undefined || owner.size <= size) continue;
    problems.push(
      error(
        'backing-larger',
        `the backing of "${image.id}" (${owner.size} bytes once "${owner.id}" is resized: ${backing.path} is another name of its file) is larger than the image itself (${size} bytes)`,
        { location: image.at.backing, hint: 'grow the image first, or back it with an image of its own size' },
      ),
    );
  }
  return problems;
}

/**
 * The symlink at an image's path that a rewrite follows (renames onto the file it names): for an
 * image kept in place always, the manifest names that file; for an output only when the ledger
 * says chainform built the very file it names. An interrupted run can leave an output the ledger
 * no longer vouches for: then the link itself is replaced, never a file nobody said chainform
 * may write.
 */
function followedSymlink(image: ResolvedImage, ctx: PlanContext): InspectedFile['symlink'] {
  const file = ctx.layout.files.get(image.path);
  if (!file?.symlink || !image.source) return file?.symlink;
  const entry = ctx.layout.ledger.outputs[image.path];
  return entry && !entry.inProgress && sameFingerprint(entry.output, file.fingerprint) ? file.symlink : undefined;
}

/** Why a step of `steps` writes the image anew, for a refusal's message. */
function rewriteReason(steps: readonly Step[]): string {
  return steps.find((step) => step.temporaryPath !== undefined)?.reason ?? 'a rewrite';
}

/**
 * A rewrite of an image kept in place whose guest data lives in an external data file must write
 * that data to a new data file. Replacing the one it has cannot be done safely: the data file and
 * the header are renamed one after the other, and a run killed between the two leaves the old
 * header reading the new data (a review lost data so); whatever else reads the old data file or
 * header (a backing named by it, a hard link) would read the new one. Without a data file in the
 * manifest, the rewrite would move the data into the image and leave the data file behind.
 */
function replacesDataFileInUse(
  image: ResolvedImage,
  content: ContentPlan,
  steps: readonly Step[],
  ctx: PlanContext,
): boolean {
  const top = content.chain[0];
  const current = top?.dataFilePath;
  if (!top || current === undefined) return false;
  const declared = image.options.data_file;
  if (declared !== undefined && !namesDataFileOf(top, ctx.layout)(declared)) return false;
  const why = rewriteReason(steps);
  ctx.diagnostics.push(
    error(
      'data-file-rewrite',
      `"${image.id}" is written anew (${why}), and its guest data lives in the data file ${current}: ${
        declared === undefined
          ? 'with no data_file in the manifest, the new image would hold the data and leave that file behind'
          : 'that file cannot be replaced safely under the image that uses it'
      }`,
      {
        location: declared === undefined ? image.at.path : image.at.option('data_file'),
        hint: `declare data_file with a new path to move the data there, and list ${current} under retire to delete it once the new layout is verified`,
      },
    ),
  );
  return true;
}

/**
 * A rewrite of an image whose path is a symlink to a file on another filesystem is written
 * beside that file (newFileFor in recipes.ts), where a relative backing name resolves from
 * another folder than the link's: qemu-img would open another file, or none, midway through.
 */
function relativeBackingAcrossFilesystems(
  image: ResolvedImage,
  target: Target,
  backingName: string,
  ctx: PlanContext,
): boolean {
  const link = target.symlink;
  if (!link || link.sameFilesystem || isAbsolute(backingName)) return false;
  ctx.diagnostics.push(
    error(
      'symlink-across-filesystems',
      `${image.path} is a symlink to ${link.target}, on another filesystem or mount: a rewrite is written beside that file, where the relative backing name "${backingName}" does not name what it names beside the link`,
      {
        location: image.at.path,
        hint: "spell the backing's path absolutely in the manifest: the image then stores an absolute backing name, which resolves alike from both folders",
      },
    ),
  );
  return true;
}

/**
 * A rewrite of a file that is itself a mount point (bind-mounted at its path, as a container gets
 * a disk image): the new file could not be renamed onto it (EBUSY), after the whole copy. That
 * holds for the image, and for a declared data file, which a rewrite also writes anew.
 */
function mountedOver(image: ResolvedImage, steps: readonly Step[], ctx: PlanContext): boolean {
  const dataFile = image.options.data_file;
  // Locations are looked up only for the error: each costs a parse of the manifest with positions.
  const names = [
    { path: image.path, location: () => image.at.path },
    ...(dataFile === undefined ? [] : [{ path: dataFile, location: () => image.at.option('data_file') }]),
  ];
  const mounted = names
    .map((name) => ({ ...name, point: ctx.layout.files.get(name.path)?.mountedOver }))
    .find((name) => name.point !== undefined);
  if (mounted?.point === undefined) return false;
  const point = mounted.point;
  const named = point === mounted.path ? point : `${point} (which ${mounted.path} names)`;
  const why = rewriteReason(steps);
  ctx.diagnostics.push(
    error(
      'mounted-file',
      `${named} is a mount point (a file mounted there): "${image.id}" is written anew (${why}), and a new file cannot replace a mounted one`,
      {
        location: mounted.location(),
        hint:
          mounted.path === image.path
            ? 'reshape the file where it is mounted from (outside this mount), or write the result to another path with `from` naming this one'
            : 'choose another data_file path: the data is written there',
      },
    ),
  );
  return true;
}

/**
 * A rewrite gives the image's path, and its declared data file's, a new file: other hard links
 * to an old file keep the old file (a symlink is followed instead, see Step.renameOnto). Nothing
 * is lost, but a VM that opens the disk by another name would not see the change.
 */
function warnOtherNamesKeepOldFile(image: ResolvedImage, target: Target, ctx: PlanContext): void {
  const found = ctx.layout.files.get(image.path);
  // A symlink the rewrite does not follow is replaced itself: the file it names keeps its names.
  if (!(found?.symlink && !target.symlink)) warnHardLinks(image.path, target.symlink, () => image.at.path, ctx);
  const dataFile = image.options.data_file;
  if (dataFile !== undefined) {
    const data = ctx.layout.files.get(dataFile);
    warnHardLinks(dataFile, data?.symlink, () => image.at.option('data_file'), ctx);
  }
}

/**
 * The hard-linked warning for the file at `path` (or the file its followed symlink names). The
 * location is looked up only for a warning: it costs a parse of the manifest with positions.
 */
function warnHardLinks(path: string, link: Target['symlink'], location: () => SourceLocation, ctx: PlanContext): void {
  const links = ctx.layout.files.get(path)?.links;
  if (links === undefined) return;
  const others = links - 1;
  const file = link ? `${link.target} (the file ${path} links to)` : path;
  const named = link?.target ?? path;
  ctx.diagnostics.push(
    warning(
      'hard-linked',
      `${file} has ${others} other name${others === 1 ? '' : 's'} (hard links): the rewrite puts a new file under this name only, and the other names keep the old file`,
      {
        location: location(),
        hint: `to see them: ${shellQuote(['find', '/', '-samefile', named])} 2>/dev/null; remove them first if they should not keep the old disk`,
      },
    ),
  );
}

/**
 * The folder whose filesystem a step's bytes land on: its external data file's, where it has
 * one (a new one under its temporary name, or the one an image written in place keeps), else
 * its temporary file's, else its image's.
 */
function writtenFolder(step: Step, layout: InspectedLayout): string {
  const data = step.extraTemporaries?.[0]?.temporaryPath;
  if (data !== undefined) return dirname(data);
  const kept = step.temporaryPath === undefined ? layout.files.get(step.path)?.chain?.[0]?.dataFilePath : undefined;
  return dirname(kept ?? step.temporaryPath ?? step.path);
}

function spaceChecks(steps: readonly Step[], layout: InspectedLayout): SpaceCheck[] {
  const byDir = new Map<string, SpaceCheck>();
  for (const step of steps) {
    const space = layout.freeSpace.get(writtenFolder(step, layout));
    if (!space) continue;
    const check = byDir.get(space.dir) ?? {
      dir: space.dir,
      freeBytes: space.freeBytes,
      expectedWriteBytes: 0,
      fits: true,
    };
    check.expectedWriteBytes += step.expectedWriteBytes;
    check.fits = !(check.expectedWriteBytes > check.freeBytes);
    byDir.set(space.dir, check);
  }
  return [...byDir.values()];
}

/**
 * True when the plan fits in the free space even if every measurable step writes its worst case
 * (see `Step.worstCaseWriteBytes`): its measures could then change no free-space verdict.
 */
export function fitsAtWorst(plan: Plan, layout: InspectedLayout): boolean {
  const atWorst = plan.steps.map((step) =>
    step.worstCaseWriteBytes === undefined
      ? step
      : { ...step, expectedWriteBytes: Math.max(step.expectedWriteBytes, step.worstCaseWriteBytes) },
  );
  return spaceChecks(atWorst, layout).every((check) => check.fits);
}

/**
 * The plan with measured write figures (from `qemu-img measure`, by step id) in place of the
 * planner's bounds, and its free-space checks redone with them.
 */
export function withMeasuredWrites(plan: Plan, measured: ReadonlyMap<string, number>, layout: InspectedLayout): Plan {
  const steps = plan.steps.map((step) => {
    const bytes = measured.get(step.id);
    return bytes === undefined ? step : { ...step, expectedWriteBytes: bytes, writeBytesIsUpperBound: false };
  });
  return { ...plan, steps, space: spaceChecks(steps, layout) };
}

/**
 * Each copy of an image the plan grows (followGrownSources) reads it once every step of the
 * image that writes its file has run: it copies the grown image, and addReaderEdges then finds
 * no writer left to order after it (and addRefreshes has the copy record the source's chain as
 * the plan leaves it).
 */
function waitForGrownSources(
  manifest: ResolvedManifest,
  steps: Step[],
  copiesOf: ReadonlyMap<string, string>,
  keyOf: (path: string) => string,
): void {
  if (copiesOf.size === 0) return;
  const byImage = new Map<string, Step[]>();
  for (const step of steps) byImage.set(step.image, [...(byImage.get(step.image) ?? []), step]);
  for (const [copyId, imageId] of copiesOf) {
    const path = manifest.byId.get(imageId)?.path;
    if (path === undefined) continue;
    const writers = (byImage.get(imageId) ?? []).filter((step) => step.writes.includes(path)).map((step) => step.id);
    for (const step of byImage.get(copyId) ?? []) {
      if (!step.reads.some((file) => keyOf(file) === keyOf(path))) continue;
      for (const writer of writers) if (!step.dependsOn.includes(writer)) step.dependsOn.push(writer);
      step.reason = `${step.reason}; made once "${imageId}" has grown, so that it presents the grown image`;
    }
  }
}

/**
 * What the manifest's text does not show (check-manifest catches the rest), found by file
 * identity: two images whose paths are two names of one file (a symlink, a hard link), a copy
 * that would replace a file another image reads under another name, and a backing loop through a
 * backing named by another name of an image's file (applied, each image would end up backed by
 * the other).
 */
function sameFileUnderOtherNames(manifest: ResolvedManifest, layout: InspectedLayout): Diagnostic | undefined {
  const identityOf = (path: string) => {
    const fingerprint = layout.files.get(path)?.fingerprint;
    return fingerprint ? fileIdentity(fingerprint) : undefined;
  };
  const imageWithIdentity = new Map<string, ResolvedImage>();
  for (const image of manifest.images) {
    const identity = identityOf(image.path);
    if (identity === undefined) continue;
    // Two images on one file under two names: the same refusal as one path given twice.
    const first = imageWithIdentity.get(identity);
    if (first) {
      return error(
        'duplicate-path',
        `images "${first.id}" and "${image.id}" are one file: ${image.path} is another name of ${first.path} (a symlink or a hard link)`,
        {
          location: image.at.path,
          related: [{ message: `"${first.id}" uses it here`, location: first.at.path }],
          hint: 'every image needs a file of its own',
        },
      );
    }
    imageWithIdentity.set(identity, image);
  }
  const below = (image: ResolvedImage): ResolvedImage | undefined => {
    const backing = image.backing;
    if (backing?.kind === 'image') return manifest.byId.get(backing.id);
    const identity = backing ? identityOf(backing.path) : undefined;
    return identity === undefined ? undefined : imageWithIdentity.get(identity);
  };
  // A copy replaces its file: nothing may read that file under another name, as checkOverwrites
  // (check-manifest.ts) refuses for the same name.
  for (const reader of manifest.images) {
    // Locations are looked up only for the error: finding one costs milliseconds.
    const reads = [
      ...(reader.source ? [{ path: reader.source.path, as: 'reads as its source', at: () => reader.at.fromPath }] : []),
      ...(reader.backing?.kind === 'file'
        ? [{ path: reader.backing.path, as: 'uses as its backing', at: () => reader.at.backing }]
        : []),
    ];
    for (const read of reads) {
      const identity = identityOf(read.path);
      const image = identity === undefined ? undefined : imageWithIdentity.get(identity);
      if (!image?.source || image === reader || image.path === read.path) continue;
      return error(
        'overwrites-input',
        `"${image.id}" would replace ${image.path}, which "${reader.id}" ${read.as} under another name, ${read.path}`,
        {
          location: image.at.path,
          related: [{ message: `"${reader.id}" names it here`, location: read.at() }],
          hint: 'write the new image to another path',
        },
      );
    }
  }
  // Loops of ids and paths as written were refused before planning: only another name can hide one.
  const hidden = manifest.images.some((image) => {
    const backing = image.backing;
    const other = backing?.kind === 'file' ? below(image) : undefined;
    return other !== undefined && backing?.kind === 'file' && other.path !== backing.path;
  });
  if (!hidden) return undefined;
  for (const start of manifest.images) {
    const cycle = backingCycleFrom(start, below);
    const first = cycle?.[0];
    if (!cycle || !first) continue;
    return error('backing-cycle', `backing cycle: ${[...cycle, first].map((i) => i.id).join(' -> ')}`, {
      location: first.at.backing,
      related: cycle.map((image) => ({
        message:
          image.backing?.kind === 'file'
            ? `${image.id} is backed by ${image.backing.path}, the file of ${below(image)?.id}`
            : `${image.id} is backed by ${below(image)?.id}`,
        location: image.at.backing,
      })),
      hint: 'a backing chain must end in a standalone image; a backing named by path here is the file of another image of the manifest (a link to it): remove one of these links',
    });
  }
  return undefined;
}

/** Plans how to reach the manifest's layout from what is on disk. */
export function planLayout(
  manifest: ResolvedManifest,
  layout: InspectedLayout,
): { ok: true; plan: Plan } | { ok: false; diagnostics: Diagnostic[] } {
  const ctx: PlanContext = {
    manifest,
    layout,
    identity: new ContentIdentity(),
    final: new Map(),
    diagnostics: [],
  };
  const aliased = sameFileUnderOtherNames(manifest, layout);
  if (aliased) return { ok: false, diagnostics: [aliased] };
  const images: ImagePlan[] = [];
  const steps: Step[] = [];
  let failed = false;
  const contents = new Map(manifest.images.map((image) => [image.id, planContent(image, ctx)] as const));
  // Two names of one file (a symlink, a hard link) are one file to the ordering and the ledger;
  // the keys are made only when needed (a plan of 10,000 images in sync needs none).
  let keys: ((path: string) => string) | undefined;
  const keyOf = (path: string) => {
    keys ??= fileKeys(layout);
    return keys(path);
  };
  const copiesOfGrown = followGrownSources(manifest, contents, keyOf);
  settleStaleContent(manifest, contents, ctx, keyOf);
  for (const plan of contents.values()) {
    if (plan !== 'failed' && plan.ledger) ctx.identity.union(plan.ledger.outputKey, plan.key);
  }
  for (const image of backingFirst(manifest)) {
    const planned = planImage(image, contents.get(image.id) ?? 'failed', ctx);
    if (planned === 'failed') {
      failed = true;
      continue;
    }
    images.push(planned.plan);
    steps.push(...planned.steps);
  }
  if (!failed) ctx.diagnostics.push(...resizedUnderOtherNames(manifest, ctx, steps, keyOf));
  const stillRead = failed || hasErrors(ctx.diagnostics) ? undefined : retiredStillRead(manifest, ctx, steps, keyOf);
  if (stillRead) ctx.diagnostics.push(stillRead);
  if (failed || hasErrors(ctx.diagnostics)) {
    if (!hasErrors(ctx.diagnostics)) {
      ctx.diagnostics.push(error('plan-failed', 'planning failed; see the errors above'));
    }
    return { ok: false, diagnostics: ctx.diagnostics };
  }
  waitForGrownSources(manifest, steps, copiesOfGrown, keyOf);
  addReaderEdges(steps, keyOf);
  addRefreshes(manifest, contents, steps, ctx, keyOf);
  guardRecordedSources(manifest, steps, layout, keyOf);
  const rank = new Map(manifest.images.map((image) => [image.id, image.index]));
  const ordered = topologicalOrder(steps, (step) => rank.get(step.image) ?? 0);
  if (!ordered) {
    return {
      ok: false,
      diagnostics: [
        error(
          'plan-cycle',
          `the steps depend on each other in a cycle: ${steps.map((s) => `${s.id} after ${stepsBefore(s).join(', ') || 'nothing'}`).join('; ')}`,
        ),
      ],
    };
  }
  images.sort((a, b) => (rank.get(a.id) ?? 0) - (rank.get(b.id) ?? 0));
  return {
    ok: true,
    plan: {
      formatVersion: 1,
      manifest: manifest.file,
      images,
      steps: ordered,
      space: spaceChecks(ordered, layout),
      retire: retiredOnce(manifest, layout),
      warnings: ctx.diagnostics,
    },
  };
}
