// Stage 4: the planner. A pure function of (resolved manifest, inspected layout incl. ledger):
// no I/O, no clock. It picks, per image, the cheapest recipe that is correct on the facts known.
import { dirname, resolve } from 'node:path';
import { type Diagnostic, error } from '../diagnostics/diagnostic.js';
import {
  type ChainLayer,
  chainFiles,
  chainPrints,
  type InspectedFile,
  type InspectedLayout,
} from '../inspect/inspect-layout.js';
import type { ResolvedImage, ResolvedManifest } from '../manifest/resolve-manifest.js';
import { backingNameFor, sameBackingName } from '../qemu/filenames.js';
import { type Fingerprint, fileIdentity, sameFingerprint } from '../state/fingerprint.js';
import { AMENDABLE, describeChange, downgradeBlockers, optionChanges } from './compare-options.js';
import { ContentIdentity, contentKey } from './content-identity.js';
import { findSnapshot } from './find-snapshot.js';
import { addReaderEdges, topologicalOrder } from './order-steps.js';
import type { ImagePlan, Plan, SpaceCheck, Step } from './plan-types.js';
import {
  amendStep,
  type BackingTarget,
  type ContentFile,
  convertKeepingBackingStep,
  convertStep,
  diffStep,
  repointStep,
  resizeOf,
  resizeStep,
  type Target,
  temporaryPathFor,
  verifiedConvertKeepingBackingStep,
  verifiedRepointStep,
  withDataFile,
} from './recipes.js';

/** What a planned image will be once its steps ran: what later images back onto. */
interface FinalImage {
  key: string;
  path: string;
  format: string;
  pathIsAbsolute: boolean;
  chain: string[];
  chainBytes: number;
  virtualSize: number;
  producedBy: string | undefined;
}

interface PlanContext {
  manifest: ResolvedManifest;
  layout: InspectedLayout;
  identity: ContentIdentity;
  final: Map<string, FinalImage>;
  diagnostics: Diagnostic[];
}

function keyOfLayer(layer: ChainLayer | undefined): string | undefined {
  return layer?.fingerprint ? contentKey(fileIdentity(layer.fingerprint), layer.format) : undefined;
}

function layerPaths(chain: readonly ChainLayer[]): string[] {
  return chain.map((layer) => resolve(layer.filename));
}

function contentOf(file: InspectedFile, chain: ChainLayer[]): ContentFile {
  const top = chain[0] as ChainLayer;
  return {
    path: file.path,
    format: file.format,
    chain: chainFiles(chain),
    backingFiles: chainFiles(chain.slice(1)),
    virtualSize: top.virtualSize,
    topBytes: top.actualSize,
    chainBytes: chain.reduce((sum, layer) => sum + layer.actualSize, 0),
  };
}

function chainMatches(recorded: readonly Fingerprint[], chain: readonly ChainLayer[]): boolean {
  const current = chainPrints(chain);
  return (
    recorded.length === current.length && recorded.every((fingerprint, i) => sameFingerprint(fingerprint, current[i]))
  );
}

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
): { target: BackingTarget; key: string | undefined; virtualSize: number } | null | 'failed' {
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
    };
  }
  const file = ctx.layout.files.get(backing.path);
  if (!file?.chain || !file.fingerprint) return 'failed';
  const chain = file.chain;
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
    virtualSize: chain[0]?.virtualSize ?? 0,
  };
}

/** Where the image's content comes from, and whether the file at its path already has it. */
type ContentPlan = {
  kind: 'in-place' | 'build';
  content: ContentFile;
  chain: ChainLayer[];
  key: string;
  action: ImagePlan['action'];
  /**
   * Set on an output the ledger shows is up to date: its own content key (to be declared equal
   * to the source's), and the plan to rebuild it from its source should it turn out stale.
   */
  ledger?: { outputKey: string; rebuild: ContentPlan };
};

function planContent(image: ResolvedImage, ctx: PlanContext): ContentPlan | 'failed' {
  const existing = ctx.layout.files.get(image.path);
  if (!image.source) {
    if (!existing?.chain || !existing.fingerprint) return 'failed';
    return inPlace(existing, existing.chain, contentKey(fileIdentity(existing.fingerprint), existing.format));
  }
  const source = ctx.layout.files.get(image.source.path);
  if (!source?.chain || !source.fingerprint) return 'failed';
  let snapshot: { id: string; selector: string } | undefined;
  if (image.source.snapshot !== undefined) {
    const choice = findSnapshot(image, (source.chain[0] as ChainLayer).snapshots);
    if (!choice.ok) {
      ctx.diagnostics.push(choice.diagnostic);
      return 'failed';
    }
    snapshot = choice;
  }
  // Snapshots are keyed by id: names need not be unique.
  const key = contentKey(fileIdentity(source.fingerprint), source.format, snapshot && `id:${snapshot.id}`);
  const build = {
    content: { ...contentOf(source, source.chain), snapshot: snapshot?.selector },
    chain: source.chain,
    key,
  };
  if (!existing?.fingerprint) return { kind: 'build', ...build, action: 'create' };

  const entry = ctx.layout.ledger.outputs[image.path];
  // An entry in progress: chainform was changing this file when a run died; it is ours, but stale.
  const dataFileChanged =
    entry?.dataFile !== undefined && !sameFingerprint(entry.dataFile, existing.chain?.[0]?.dataFileFingerprint);
  if (!entry || (!entry.inProgress && (!sameFingerprint(entry.output, existing.fingerprint) || dataFileChanged))) {
    ctx.diagnostics.push(
      error(
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
 * The data file path must be free, or be the data file of the existing image chainform keeps or
 * rebuilds at this path: an unrelated file there would be overwritten.
 */
function dataFileIsFree(image: ResolvedImage, dataFile: string, ctx: PlanContext): boolean {
  const existing = ctx.layout.files.get(dataFile);
  if (!existing?.fingerprint) return true;
  const output = ctx.layout.files.get(image.path);
  if (output?.chain?.[0]?.dataFilePath === dataFile) return true;
  ctx.diagnostics.push(
    error('data-file-exists', `${dataFile} already exists and is not the data file of "${image.id}"`, {
      location: image.at.option('data_file'),
      hint: 'move the file away, or choose another data_file path',
    }),
  );
  return false;
}

/** The content plan of a file that already presents the wanted content. */
function inPlace(file: InspectedFile, chain: ChainLayer[], key: string, ledger?: ContentPlan['ledger']): ContentPlan {
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
function settleStaleContent(
  manifest: ResolvedManifest,
  contents: Map<string, ContentPlan | 'failed'>,
  ctx: PlanContext,
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
        .map((i) => [i.path, i] as const),
    );
  for (const reader of manifest.images) {
    const chain = reader.source ? ctx.layout.files.get(reader.source.path)?.chain : undefined;
    const built = builtPaths();
    const through = chain ? layerPaths(chain).find((path) => built.has(path)) : undefined;
    const writer = through ? built.get(through) : undefined;
    if (!through || !writer) continue;
    contents.set(reader.id, 'failed');
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
    for (const image of manifest.images) {
      const plan = contents.get(image.id);
      if (!plan || plan === 'failed' || plan.kind === 'build') continue;
      const through = layerPaths(plan.chain)
        .slice(1)
        .find((path) => built.has(path));
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

/**
 * An image kept in place that has internal snapshots: its snapshots read through the same
 * backing file as its active layer, so only a repoint to content verified identical, or an
 * amend, keeps every snapshot right. A verified repoint then has no fallback (a safe rebase
 * would fix the active layer only); anything else is refused.
 */
function keepsSnapshots(image: ResolvedImage, steps: Step[], resizes: boolean, ctx: PlanContext): boolean {
  const refused = steps.filter((s) => s.kind !== 'repoint' && s.kind !== 'verified-repoint');
  if (refused.length > 0 || resizes) {
    ctx.diagnostics.push(
      error(
        'in-place-snapshots',
        `"${image.id}" has internal snapshots, which ${refused[0]?.kind ?? 'resize'} in place would leave wrong or lose`,
        {
          location: image.at.path,
          hint: 'turn the snapshots into external links first (chainform import --linearize), or rebuild the image with `from`',
        },
      ),
    );
    return false;
  }
  for (const step of steps) {
    if (step.kind !== 'verified-repoint') continue;
    delete step.otherwise;
    step.reason = `${step.reason}. It has internal snapshots: if the bases differ, the step fails instead`;
  }
  return true;
}

/**
 * All steps of one image: an in-place `amend` first (when options amend can change differ), the
 * recipe for its content and backing, then the resize to a declared size (appended to the
 * recipe's new file when there is one). Steps of one image run in order.
 */
function chooseSteps(
  image: ResolvedImage,
  target: Target,
  plan: ContentPlan,
  backing: { target: BackingTarget; key: string | undefined } | null,
  ctx: PlanContext,
): Step[] | 'failed' {
  const steps = chooseRecipe(image, target, plan, backing, ctx);
  const top = plan.chain[0] as ChainLayer;
  const resizes = image.size !== undefined && image.size !== plan.content.virtualSize;
  if (plan.kind === 'in-place' && top.snapshots.length > 0 && !keepsSnapshots(image, steps, resizes, ctx))
    return 'failed';
  // A step that writes a new file creates it with the wanted options; in place, amend them.
  if (plan.kind === 'in-place' && steps.every((s) => !s.temporaryPath)) {
    const amendable = optionChanges(image.options, top).filter((c) => AMENDABLE.has(c.name));
    if (amendable.length > 0 && plan.content.format === image.format) {
      const wantsV2 = amendable.some((c) => c.name === 'compat' && c.want === '0.10');
      const blockers = wantsV2 ? downgradeBlockers(image.options, top) : [];
      if (blockers.length > 0) {
        ctx.diagnostics.push(
          error(
            'compat-downgrade-refused',
            `"${image.id}" cannot be downgraded to compat 0.10 in place: ${blockers.join('; ')}`,
            {
              location: image.at.option('compat'),
            },
          ),
        );
        return 'failed';
      }
      const options = Object.fromEntries(amendable.map((c) => [c.name, c.want]));
      steps.unshift(
        amendStep(
          target,
          plan.content,
          options,
          `change in place with qemu-img amend: ${amendable.map(describeChange).join(', ')}`,
        ),
      );
    }
  }
  const size = image.size;
  const current = plan.content.virtualSize;
  if (size !== undefined && size !== current) {
    if (size < current && !image.shrink) {
      ctx.diagnostics.push(
        error(
          'shrink-refused',
          `"${image.id}" would shrink from ${current} to ${size} bytes, dropping the data past the new end`,
          {
            location: image.at.size,
            hint: 'add `shrink: true` to the image if its guest no longer uses that space',
          },
        ),
      );
      return 'failed';
    }
    const shrink = size < current;
    const last = steps.at(-1);
    const why = `${shrink ? 'shrink' : 'grow'} from ${current} to ${size} bytes`;
    if (last?.temporaryPath) {
      last.commands.push(resizeOf(last.temporaryPath, image.format, size, shrink));
      if (last.otherwise) last.otherwise.push(resizeOf(last.temporaryPath, image.format, size, shrink));
      last.reason = `${last.reason}; then ${why}`;
    } else {
      steps.push(resizeStep(target, plan.content, size, shrink, why));
    }
  }
  for (const [i, step] of steps.entries()) {
    const previous = steps[i - 1];
    if (previous && !step.dependsOn.includes(previous.id)) step.dependsOn.push(previous.id);
  }
  return steps;
}

/** Picks the recipe for one image's content and backing; returns its steps (possibly none). */
function chooseRecipe(
  image: ResolvedImage,
  target: Target,
  plan: ContentPlan,
  backing: { target: BackingTarget; key: string | undefined } | null,
  ctx: PlanContext,
): Step[] {
  const { content, chain } = plan;
  const top = chain[0] as ChainLayer;
  const currentBacking = chain[1];
  const backingIsEquivalent = backing !== null && ctx.identity.same(keyOfLayer(currentBacking), backing.key);

  // The backing it has today, to compare with the declared one when equality is not known.
  const current = currentBacking
    ? { path: resolve(currentBacking.filename), format: currentBacking.format }
    : undefined;

  if (plan.kind === 'build') {
    if (!backing) return [convertStep(target, content, 'a standalone image: full copy of the source')];
    if (backingIsEquivalent) {
      return [
        convertKeepingBackingStep(
          target,
          content,
          backing.target,
          "the source's backing presents the same content as the declared backing, so only the source's top layer is copied",
        ),
      ];
    }
    if (current) {
      return [
        verifiedConvertKeepingBackingStep(
          target,
          content,
          current,
          backing.target,
          `the source's backing ${top.backingName ?? current.path} is not known to present the same content as ${backing.target.name}: compare them; identical: copy only the top layer; different: keep only the clusters that differ from ${backing.target.name}`,
        ),
      ];
    }
    return [
      diffStep(
        target,
        content,
        backing.target,
        'the source is a full copy: keep only the clusters that differ from the declared backing',
      ),
    ];
  }

  // In place: the file at `path` already presents the wanted content. Option changes that
  // `qemu-img amend` can make are made in place; any other change rewrites the file.
  const optionDiffs = optionChanges(image.options, top);
  const amendOnly = content.format === image.format && optionDiffs.every((c) => AMENDABLE.has(c.name));
  const changes = [
    ...(content.format !== image.format ? [`format ${content.format} -> ${image.format}`] : []),
    ...optionDiffs.map(describeChange),
  ];
  const rewrite = changes.length > 0 && !amendOnly;
  if (!backing) {
    if (currentBacking) {
      return [
        convertStep(
          target,
          content,
          `becomes standalone: flatten its backing chain into a new file${rewrite ? ` (${changes.join(', ')})` : ''}`,
        ),
      ];
    }
    return rewrite ? [convertStep(target, content, `rewrite with new settings: ${changes.join(', ')}`)] : [];
  }
  if (backingIsEquivalent) {
    if (rewrite) {
      return [
        convertKeepingBackingStep(
          target,
          content,
          backing.target,
          `rewrite with new settings (${changes.join(', ')}), copying only its own layer`,
        ),
      ];
    }
    if (
      sameBackingName(top.backingName, backing.target.name, dirname(image.path)) &&
      top.backingFormat === backing.target.format
    ) {
      return [];
    }
    return [
      repointStep(
        target,
        content,
        backing.target,
        `its backing ${top.backingName ?? '?'} presents the same content as ${backing.target.name} (same file), so only the link changes`,
      ),
    ];
  }
  if (!current) {
    return [
      diffStep(
        target,
        content,
        backing.target,
        `a full image gets a backing: keep only the clusters that differ from ${backing.target.name}${rewrite ? ` (${changes.join(', ')})` : ''}`,
      ),
    ];
  }
  const unknown = `its backing ${top.backingName ?? current.path} is not known to present the same content as ${backing.target.name}`;
  if (rewrite) {
    return [
      verifiedConvertKeepingBackingStep(
        target,
        content,
        current,
        backing.target,
        `rewrite with new settings (${changes.join(', ')}); ${unknown}: compare them; identical: copy only its own layer; different: keep only the clusters that differ`,
      ),
    ];
  }
  const oldBackingBytes = chain.slice(1).reduce((sum, layer) => sum + layer.actualSize, 0);
  return [
    verifiedRepointStep(
      target,
      content,
      current,
      backing.target,
      oldBackingBytes,
      `${unknown}: compare them; identical: rewrite the link only (rebase -u); different: a safe rebase copies in what differs`,
    ),
  ];
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
          hint: 'grow the image first, or back it with an image of its own size',
        },
      ),
    );
    return 'failed';
  }
  const dataFile = image.options.data_file;
  if (dataFile !== undefined && !dataFileIsFree(image, dataFile, ctx)) return 'failed';
  const target: Target = {
    id: image.id,
    path: image.path,
    format: image.format,
    // A new file's data file is created under a temporary name too (see withDataFile).
    options: dataFile === undefined ? image.options : { ...image.options, data_file: temporaryPathFor(dataFile) },
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
  const steps = dataFile === undefined ? chosen : chosen.map((step) => withDataFile(step, dataFile, image.format));
  ctx.final.set(image.id, {
    // A declared size that differs from its content's makes it other content.
    key: finalSize === content.content.virtualSize ? content.key : `${content.key}#size=${finalSize}`,
    path: image.path,
    format: image.format,
    pathIsAbsolute: image.pathIsAbsolute,
    chain: [
      image.path,
      ...(image.options.data_file ? [image.options.data_file] : []),
      ...(backing?.target.chain ?? []),
    ],
    chainBytes: content.content.chainBytes,
    virtualSize: finalSize,
    producedBy: steps.at(-1)?.id ?? backing?.target.producedBy,
  });
  const action = steps.length === 0 ? 'unchanged' : content.action;
  return { plan: { id: image.id, path: image.path, action, steps: steps.map((s) => s.id) }, steps };
}

/**
 * An up-to-date output with no step of its own keeps presenting its source's content when a
 * file of its chain is rewritten in place (content-preserving steps only reach here: a file
 * rebuilt with new content made the output stale earlier). Its ledger entry must follow the
 * new fingerprints, or the next plan would rebuild it for nothing.
 */
function addRefreshes(
  manifest: ResolvedManifest,
  contents: ReadonlyMap<string, ContentPlan | 'failed'>,
  steps: Step[],
  layout: InspectedLayout,
): void {
  const stepped = new Set(steps.map((s) => s.image));
  for (const image of manifest.images) {
    const plan = contents.get(image.id);
    if (!plan || plan === 'failed' || !plan.ledger || stepped.has(image.id)) continue;
    const chains = {
      backingChain: chainFiles(plan.chain.slice(1)),
      sourceChain: chainFiles(layout.files.get(image.source?.path ?? '')?.chain ?? []),
    } as const;
    for (const step of steps) {
      for (const chain of ['backingChain', 'sourceChain'] as const) {
        const files = chains[chain];
        if (!step.writes.some((path) => files.includes(path))) continue;
        step.refreshLedger = [...(step.refreshLedger ?? []), { output: image.path, chain, files }];
      }
    }
  }
}

function spaceChecks(steps: readonly Step[], layout: InspectedLayout): SpaceCheck[] {
  const byDir = new Map<string, SpaceCheck>();
  for (const step of steps) {
    const space = layout.freeSpace.get(dirname(step.path));
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
  const images: ImagePlan[] = [];
  const steps: Step[] = [];
  let failed = false;
  const contents = new Map(manifest.images.map((image) => [image.id, planContent(image, ctx)] as const));
  settleStaleContent(manifest, contents, ctx);
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
  if (failed || ctx.diagnostics.length > 0) {
    if (ctx.diagnostics.length === 0) {
      ctx.diagnostics.push(error('plan-failed', 'planning failed; see the errors above'));
    }
    return { ok: false, diagnostics: ctx.diagnostics };
  }
  addRefreshes(manifest, contents, steps, layout);
  addReaderEdges(steps);
  const rank = new Map(manifest.images.map((image) => [image.id, image.index]));
  const ordered = topologicalOrder(steps, (step) => rank.get(step.image) ?? 0);
  if (!ordered) {
    return {
      ok: false,
      diagnostics: [
        error(
          'plan-cycle',
          `the steps depend on each other in a cycle: ${steps.map((s) => `${s.id} after ${s.dependsOn.join(', ') || 'nothing'}`).join('; ')}`,
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
      warnings: [],
    },
  };
}
