// Where each image's content comes from (its source, or the file it is kept in), whether an
// existing output still presents it, and which images a rebuilt or shrunk file makes stale.
import { type Diagnostic, error, type SourceLocation } from '../diagnostics/diagnostic.js';
import { type ChainLayer, chainPrints, type InspectedFile } from '../inspect/inspect-layout.js';
import type { ResolvedBacking, ResolvedImage, ResolvedManifest } from '../manifest/resolve-manifest.js';
import { type Fingerprint, fileIdentity, sameFingerprint } from '../state/fingerprint.js';
import { contentKey } from './content-identity.js';
import { findSnapshot, snapshotPastImageEnd } from './find-snapshot.js';
import { type ContentPlan, contentOf, layerPaths, namesDataFileOf, type PlanContext } from './plan-context.js';

/** True when a chain's files are exactly those the ledger recorded, unchanged. */
export function chainMatches(recorded: readonly Fingerprint[], chain: readonly ChainLayer[]): boolean {
  const current = chainPrints(chain);
  return (
    recorded.length === current.length && recorded.every((fingerprint, i) => sameFingerprint(fingerprint, current[i]))
  );
}

export function planContent(image: ResolvedImage, ctx: PlanContext): ContentPlan | 'failed' {
  const existing = ctx.layout.files.get(image.path);
  if (!image.source) {
    if (!existing?.chain || !existing.fingerprint) return 'failed';
    return inPlace(existing, existing.chain, contentKey(fileIdentity(existing.fingerprint), existing.format));
  }
  const source = ctx.layout.files.get(image.source.path);
  if (!source?.fingerprint && ctx.manifest.retire.some((r) => r.path === image.source?.path)) {
    return afterRetiredSource(image, existing, ctx);
  }
  if (!source?.chain || !source.fingerprint) return 'failed';
  let snapshot: { id: string; selector: string } | undefined;
  if (image.source.snapshot !== undefined) {
    const top = source.chain[0] as ChainLayer;
    const choice = findSnapshot(image, top.snapshots);
    if (!choice.ok) {
      ctx.diagnostics.push(choice.diagnostic);
      return 'failed';
    }
    const sizes = top.snapshotSizes;
    const recorded = sizes && Object.hasOwn(sizes, choice.id) ? sizes[choice.id] : undefined;
    const cutShort = snapshotPastImageEnd(image, choice, recorded, top.virtualSize);
    if (cutShort) {
      ctx.diagnostics.push(cutShort);
      return 'failed';
    }
    snapshot = choice;
  }
  // Snapshots are keyed by id: names need not be unique.
  const key = contentKey(fileIdentity(source.fingerprint), source.format, snapshot && `id:${snapshot.id}`);
  const build = {
    content: { ...contentOf(source, source.chain), snapshot: snapshot?.selector, snapshotId: snapshot?.id },
    chain: source.chain,
    key,
  };
  if (existing?.danglingLink !== undefined) {
    ctx.diagnostics.push(danglingSymlink(image.path, existing, image.at.path));
    return 'failed';
  }
  if (!existing?.fingerprint) return { kind: 'build', ...build, action: 'create' };

  const entry = ctx.layout.ledger.outputs[image.path];
  // An entry in progress: chainform was changing this file when a run died; it is ours, but stale.
  const dataFileChanged =
    entry?.dataFile !== undefined && !sameFingerprint(entry.dataFile, existing.chain?.[0]?.dataFileFingerprint);
  if (!entry || (!entry.inProgress && (!sameFingerprint(entry.output, existing.fingerprint) || dataFileChanged))) {
    ctx.diagnostics.push(
      existing.notAFile
        ? notAnOutput(image, existing, existing.notAFile)
        : error(
            'output-exists',
            entry
              ? `${image.path} changed since chainform built it; replacing it could lose data written to it`
              : `${image.path} already exists and chainform did not create it`,
            {
              location: image.at.path,
              hint: 'move the file away (or delete it) to rebuild it, or drop `from` to reshape it in place',
            },
          ),
    );
    return 'failed';
  }
  const upToDate =
    !entry.inProgress &&
    existing.chain !== null &&
    entry.source.path === image.source.path &&
    entry.source.snapshot === image.source.snapshot &&
    chainMatches(entry.sourceChain, source.chain) &&
    chainMatches(entry.backingChain, existing.chain.slice(1));
  const rebuild: ContentPlan = { kind: 'build', ...build, action: 'replace' };
  if (!upToDate || !existing.chain) return rebuild;
  // The ledger shows the output presents the source's content: reshape it like an in-place image.
  // Resized to a declared size, it presents more or less than its source: it keeps its own key.
  const outputKey = contentKey(fileIdentity(existing.fingerprint), existing.format);
  const resized = image.size !== undefined && image.size !== source.chain[0]?.virtualSize;
  return inPlace(existing, existing.chain, resized ? outputKey : key, { outputKey, rebuild });
}

/**
 * The source was retired (deleted by an earlier apply): the output stands for it if the ledger
 * shows it is still exactly what was built from that source, on the same backing chain.
 */
function afterRetiredSource(image: ResolvedImage, existing: InspectedFile | undefined, ctx: PlanContext) {
  const entry = ctx.layout.ledger.outputs[image.path];
  const chain = existing?.chain;
  if (
    !entry ||
    entry.inProgress ||
    !existing?.fingerprint ||
    !chain ||
    entry.source.path !== image.source?.path ||
    !sameFingerprint(entry.output, existing.fingerprint) ||
    !chainMatches(entry.backingChain, chain.slice(1))
  ) {
    ctx.diagnostics.push(
      error(
        'source-missing',
        `the source of "${image.id}" (${image.source?.path}) is retired and gone, and ${image.path} is not the image chainform built from it`,
        {
          location: image.at.fromPath,
          hint: 'restore the source from a backup, or drop `from` to keep the image as it is on disk',
        },
      ),
    );
    return 'failed';
  }
  return inPlace(existing, chain, contentKey(fileIdentity(existing.fingerprint), existing.format));
}

/**
 * A symlink to nothing where a new file is to be written (an image or its data file): renamed
 * onto, the link would be replaced by the new file; written through, the file would land
 * wherever the link says, which nothing vouches for.
 */
function danglingSymlink(path: string, file: InspectedFile, location: SourceLocation): Diagnostic {
  const target = file.danglingLink as string;
  return error('dangling-symlink', `${path} is a symlink to ${target}, which does not exist`, {
    location,
    hint: file.danglingThroughFile
      ? 'it leads through a file where a folder should be; to write the file here, remove the link'
      : `to write the file at ${target}, name that path in the manifest; to write it here, remove the link`,
  });
}

/**
 * Something other than a file where a new image is to be written (a folder, a FIFO, a device,
 * or a symlink to one): named for what it is. Kept as `output-exists`, which `status` reports
 * as a modified output.
 */
function notAnOutput(image: ResolvedImage, file: InspectedFile, kind: string): Diagnostic {
  const what = file.symlink ? `a symlink to ${file.symlink.target}, a ${kind}` : `a ${kind}`;
  const device = kind === 'block device' || kind === 'character device';
  return error('output-exists', `${image.path} is ${what}, where the manifest makes a new image`, {
    location: image.at.path,
    hint: device
      ? 'chainform makes new images as files: give the image another path'
      : `give the image another path, or move the ${file.symlink ? 'link' : kind} away`,
  });
}

/**
 * The data file path must be free, or be the data file of the existing image chainform keeps or
 * rebuilds at this path: an unrelated file there would be overwritten.
 */
export function dataFileIsFree(image: ResolvedImage, dataFile: string, ctx: PlanContext): boolean {
  const existing = ctx.layout.files.get(dataFile);
  if (existing?.danglingLink !== undefined) {
    ctx.diagnostics.push(danglingSymlink(dataFile, existing, image.at.option('data_file')));
    return false;
  }
  if (!existing?.fingerprint) return true;
  const top = ctx.layout.files.get(image.path)?.chain?.[0];
  if (top && namesDataFileOf(top, ctx.layout)(dataFile)) return true;
  // Renamed into place by a run killed before it renamed the image: the ledger knows the file.
  if (sameFingerprint(ctx.layout.ledger.outputs[image.path]?.dataFile, existing.fingerprint)) return true;
  ctx.diagnostics.push(
    error('data-file-exists', `${dataFile} already exists and is not the data file of "${image.id}"`, {
      location: image.at.option('data_file'),
      hint: 'move the file away, or choose another data_file path',
    }),
  );
  return false;
}

/** The content plan of a file that already presents the wanted content. */
export function inPlace(
  file: InspectedFile,
  chain: ChainLayer[],
  key: string,
  ledger?: ContentPlan['ledger'],
): ContentPlan {
  return {
    kind: 'in-place',
    content: contentOf(file, chain),
    chain,
    key,
    action: 'reshape',
    ...(ledger ? { ledger } : {}),
  };
}

/**
 * A file this plan (re)builds changes what every chain through it presents. A source read
 * through one would be damaged: refused. An output read through one is stale and is rebuilt
 * from its source (which can make more outputs stale, hence the loop). An image reshaped in
 * place cannot be rebuilt: refused.
 */
export function settleStaleContent(
  manifest: ResolvedManifest,
  contents: Map<string, ContentPlan | 'failed'>,
  ctx: PlanContext,
  /** A key per file, two names of one file alike (fileKeys): a chain may name a rebuilt image through a symlink. */
  keyOf: (path: string) => string,
): void {
  // Rebuilt from a source, or shrunk in place: either way its content changes.
  const builtPaths = () =>
    new Map(
      manifest.images
        .filter((i) => {
          const plan = contents.get(i.id);
          if (plan === undefined || plan === 'failed') return false;
          return plan.kind === 'build' || (i.size !== undefined && i.size < plan.content.virtualSize);
        })
        .map((i) => [keyOf(i.path), i] as const),
    );
  // Computed once (not per reader: 10,000 images would make that quadratic); a reader refused
  // here is no longer built, so it leaves the map.
  const builtNow = builtPaths();
  if (builtNow.size === 0) return;
  for (const reader of manifest.images) {
    const chain = reader.source ? ctx.layout.files.get(reader.source.path)?.chain : undefined;
    const through = chain ? layerPaths(chain).find((path) => builtNow.has(keyOf(path))) : undefined;
    const writer = through ? builtNow.get(keyOf(through)) : undefined;
    if (!through || !writer) continue;
    contents.set(reader.id, 'failed');
    builtNow.delete(keyOf(reader.path));
    ctx.diagnostics.push(
      error(
        'overwrites-input',
        `"${writer.id}" would change ${through} (rebuild or shrink it), which the source of "${reader.id}" reads through`,
        {
          location: writer.at.path,
          related: [{ message: `"${reader.id}" reads it here`, location: reader.at.fromPath }],
          hint: 'write the new image to another path',
        },
      ),
    );
  }
  for (let changed = true; changed; ) {
    changed = false;
    const built = builtPaths();
    if (built.size === 0) break;
    for (const image of manifest.images) {
      const plan = contents.get(image.id);
      if (!plan || plan === 'failed' || plan.kind === 'build') continue;
      const through = layerPaths(plan.chain)
        .slice(1)
        .find((path) => built.has(keyOf(path)));
      if (!through) continue;
      changed = true;
      if (plan.ledger) {
        contents.set(image.id, plan.ledger.rebuild);
        continue;
      }
      contents.set(image.id, 'failed');
      ctx.diagnostics.push(
        error(
          'backing-rebuilt',
          `"${image.id}" keeps its content in place, but its chain reads through ${through}, which this plan rebuilds or shrinks`,
          {
            location: image.at.path,
            hint: 'give it a `from` and a new path so it is rebuilt too, or write the rebuilt image to another path',
          },
        ),
      );
    }
  }
}

/** Whether `image`, once the plan has run, sits on `below` (directly or further down its chain). */
function backsOnto(manifest: ResolvedManifest, image: ResolvedImage, below: ResolvedImage): boolean {
  const seen = new Set<string>();
  let backing: ResolvedBacking | null | undefined = image.backing;
  while (backing) {
    if (backing.kind === 'file') return backing.path === below.path;
    if (backing.id === below.id) return true;
    if (seen.has(backing.id)) return false;
    seen.add(backing.id);
    backing = manifest.byId.get(backing.id)?.backing;
  }
  return false;
}

/**
 * An image the plan grows in place presents more once the plan has run (zeros past its old end),
 * and an output is up to date only while it presents its source as the source is now. So a copy
 * of such an image (its `from` names the image's path, not one of its snapshots) is built after
 * the grow, from the grown image, and one apply reaches the layout: built before it, the copy
 * would be stale at once and the next apply would rebuild it. A copy that is up to date today is
 * rebuilt for the same reason. Not when the grown image is to sit on the copy: its steps need
 * the copy first, and the copy is made before them as before (the next plan reports it).
 * Returns, by the copy's id, the id of the image whose steps it waits for (see
 * waitForGrownSources in plan-layout.ts).
 */
export function followGrownSources(
  manifest: ResolvedManifest,
  contents: Map<string, ContentPlan | 'failed'>,
  /** A key per file, two names of one file alike (fileKeys). */
  keyOf: (path: string) => string,
): Map<string, string> {
  const grown = new Map<string, ResolvedImage>();
  for (const image of manifest.images) {
    const plan = contents.get(image.id);
    if (plan === undefined || plan === 'failed' || plan.kind !== 'in-place') continue;
    if (image.size !== undefined && image.size > plan.content.virtualSize) grown.set(keyOf(image.path), image);
  }
  const waits = new Map<string, string>();
  if (grown.size === 0) return waits;
  for (const copy of manifest.images) {
    const source = copy.source;
    const image = source && source.snapshot === undefined ? grown.get(keyOf(source.path)) : undefined;
    const plan = contents.get(copy.id);
    if (!image || image === copy || image.size === undefined || plan === undefined || plan === 'failed') continue;
    if (backsOnto(manifest, image, copy)) continue;
    const build = plan.kind === 'build' ? plan : plan.ledger?.rebuild;
    if (!build) continue;
    contents.set(copy.id, { ...build, content: { ...build.content, virtualSize: image.size } });
    waits.set(copy.id, image.id);
  }
  return waits;
}
