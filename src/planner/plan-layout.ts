// Stage 4: the planner. A pure function of (resolved manifest, inspected layout incl. ledger):
// no I/O, no clock. It picks, per image, the cheapest recipe that is correct on the facts known.
import { dirname, resolve } from 'node:path';
import { type Diagnostic, error } from '../diagnostics/diagnostic.js';
import type { ChainLayer, InspectedFile, InspectedLayout } from '../inspect/inspect-layout.js';
import type { ResolvedImage, ResolvedManifest } from '../manifest/resolve-manifest.js';
import { backingNameFor } from '../qemu/filenames.js';
import { type Fingerprint, fileIdentity, sameFingerprint } from '../state/fingerprint.js';
import { optionDifferences } from './compare-options.js';
import { ContentIdentity, contentKey } from './content-identity.js';
import { addReaderEdges, topologicalOrder } from './order-steps.js';
import type { ImagePlan, Plan, SpaceCheck, Step } from './plan-types.js';
import {
  type BackingTarget,
  type ContentFile,
  convertKeepingBackingStep,
  convertStep,
  diffStep,
  repointStep,
  type Target,
  verifiedConvertKeepingBackingStep,
  verifiedRepointStep,
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
  return layer?.fingerprint ? contentKey(fileIdentity(layer.fingerprint)) : undefined;
}

function layerPaths(chain: readonly ChainLayer[]): string[] {
  return chain.map((layer) => resolve(layer.filename));
}

function contentOf(file: InspectedFile, chain: ChainLayer[]): ContentFile {
  const top = chain[0] as ChainLayer;
  return {
    path: file.path,
    format: file.format,
    chain: layerPaths(chain),
    virtualSize: top.virtualSize,
    topBytes: top.actualSize,
    chainBytes: chain.reduce((sum, layer) => sum + layer.actualSize, 0),
  };
}

function chainMatches(recorded: readonly Fingerprint[], chain: readonly ChainLayer[]): boolean {
  return (
    recorded.length === chain.length &&
    recorded.every((fingerprint, i) => sameFingerprint(fingerprint, chain[i]?.fingerprint))
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
      chain: layerPaths(chain),
      chainBytes: chain.reduce((sum, layer) => sum + layer.actualSize, 0),
      producedBy: undefined,
    },
    key: contentKey(fileIdentity(file.fingerprint)),
    virtualSize: chain[0]?.virtualSize ?? 0,
  };
}

/** Where the image's content comes from, and whether the file at its path already has it. */
type ContentPlan =
  | {
      kind: 'in-place';
      content: ContentFile;
      chain: ChainLayer[];
      key: string;
      action: ImagePlan['action'];
    }
  | {
      kind: 'build';
      content: ContentFile;
      chain: ChainLayer[];
      key: string;
      action: ImagePlan['action'];
    };

function planContent(image: ResolvedImage, ctx: PlanContext): ContentPlan | 'failed' {
  const existing = ctx.layout.files.get(image.path);
  if (!image.source) {
    if (!existing?.chain || !existing.fingerprint) return 'failed';
    const key = contentKey(fileIdentity(existing.fingerprint));
    return {
      kind: 'in-place',
      content: contentOf(existing, existing.chain),
      chain: existing.chain,
      key,
      action: 'reshape',
    };
  }
  if (image.source.snapshot !== undefined) {
    ctx.diagnostics.push(
      error('snapshot-unsupported', `internal snapshots as a source are not supported yet ("${image.id}")`, {
        location: image.at.from,
        hint: 'export the snapshot first: qemu-img convert -l snapshot.name=NAME ...',
      }),
    );
    return 'failed';
  }
  const source = ctx.layout.files.get(image.source.path);
  if (!source?.chain || !source.fingerprint) return 'failed';
  const key = contentKey(fileIdentity(source.fingerprint));
  const build = { content: contentOf(source, source.chain), chain: source.chain, key };
  if (!existing?.fingerprint) return { kind: 'build', ...build, action: 'create' };

  const entry = ctx.layout.ledger.outputs[image.path];
  if (!entry || !sameFingerprint(entry.output, existing.fingerprint)) {
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
    existing.chain !== null &&
    entry.source.path === image.source.path &&
    entry.source.snapshot === image.source.snapshot &&
    chainMatches(entry.sourceChain, source.chain) &&
    chainMatches(entry.backingChain, existing.chain.slice(1));
  if (!upToDate || !existing.chain) return { kind: 'build', ...build, action: 'replace' };
  // The ledger proves the output presents the source's content: reshape it like an in-place image.
  ctx.identity.union(contentKey(fileIdentity(existing.fingerprint)), key);
  return {
    kind: 'in-place',
    content: contentOf(existing, existing.chain),
    chain: existing.chain,
    key,
    action: 'reshape',
  };
}

/** Picks the recipe for one image; returns its steps (possibly none). */
function chooseSteps(
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
          `the source's backing ${currentBacking?.backingName ?? current.path} is not known to present the same content as ${backing.target.name}: compare them; identical: copy only the top layer; different: keep only the clusters that differ from ${backing.target.name}`,
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

  // In place: the file at `path` already presents the wanted content.
  const changes = [
    ...(content.format !== image.format ? [`format ${content.format} -> ${image.format}`] : []),
    ...optionDifferences(image.options, top),
  ];
  const rewrite = changes.length > 0;
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
    if (top.backingName === backing.target.name && top.backingFormat === backing.target.format) return [];
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

function planImage(image: ResolvedImage, ctx: PlanContext): { plan: ImagePlan; steps: Step[] } | 'failed' {
  const content = planContent(image, ctx);
  const backing = resolveBacking(image, ctx);
  if (content === 'failed' || backing === 'failed') return 'failed';
  if (backing && backing.virtualSize > content.content.virtualSize) {
    ctx.diagnostics.push(
      error(
        'backing-larger',
        `the backing of "${image.id}" (${backing.virtualSize} bytes) is larger than the image itself (${content.content.virtualSize} bytes)`,
        {
          location: image.at.backing,
          hint: 'grow the image first, or back it with an image of its own size',
        },
      ),
    );
    return 'failed';
  }
  const target: Target = {
    id: image.id,
    path: image.path,
    format: image.format,
    options: image.options,
    ledger: image.source
      ? {
          imageId: image.id,
          format: image.format,
          source: {
            path: image.source.path,
            format: ctx.layout.files.get(image.source.path)?.format ?? 'raw',
          },
          sourceChain: layerPaths(ctx.layout.files.get(image.source.path)?.chain ?? []),
        }
      : undefined,
  };
  const steps = chooseSteps(image, target, content, backing, ctx);
  ctx.final.set(image.id, {
    key: content.key,
    path: image.path,
    format: image.format,
    pathIsAbsolute: image.pathIsAbsolute,
    chain: [image.path, ...(backing?.target.chain ?? [])],
    chainBytes: content.content.chainBytes,
    virtualSize: content.content.virtualSize,
    producedBy: steps.at(-1)?.id ?? backing?.target.producedBy,
  });
  const action = steps.length === 0 ? 'unchanged' : content.action;
  return { plan: { id: image.id, path: image.path, action, steps: steps.map((s) => s.id) }, steps };
}

/** An image built from a source must not replace a file some chain still reads through. */
function checkReplacedFiles(manifest: ResolvedManifest, layout: InspectedLayout): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  for (const image of manifest.images) {
    if (!image.source) continue;
    for (const other of manifest.images) {
      const file = layout.files.get(other.source?.path ?? other.path);
      const chain = file?.chain ? layerPaths(file.chain).slice(1) : [];
      if (!chain.includes(image.path)) continue;
      diagnostics.push(
        error(
          'overwrites-input',
          `"${image.id}" would replace ${image.path}, which the chain of ${file?.path} reads through`,
          {
            location: image.at.path,
            related: [
              {
                message: `"${other.id}" reads that chain`,
                location: other.source ? other.at.fromPath : other.at.path,
              },
            ],
            hint: 'write the new image to another path',
          },
        ),
      );
    }
  }
  return diagnostics;
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
    diagnostics: checkReplacedFiles(manifest, layout),
  };
  const images: ImagePlan[] = [];
  const steps: Step[] = [];
  let failed = false;
  for (const image of backingFirst(manifest)) {
    const planned = planImage(image, ctx);
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
