// The steps of one image: the cheapest correct recipe for its content and backing, an in-place
// amend, a resize, and the rules that keep internal snapshots of in-place images intact.
import { dirname } from 'node:path';
import { error } from '../diagnostics/diagnostic.js';
import type { ChainLayer } from '../inspect/inspect-layout.js';
import type { SnapshotDelta } from '../inspect/snapshot-deltas.js';
import type { Options } from '../manifest/manifest.generated.js';
import type { ResolvedImage } from '../manifest/resolve-manifest.js';
import { sameBackingName } from '../qemu/filenames.js';
import {
  canonicalCompat,
  compat11Features,
  EXTENDED_L2_MIN_CLUSTER_SIZE,
  QCOW2_DEFAULT_CLUSTER_SIZE,
} from '../qemu/formats.js';
import { fileIdentity, sameFingerprint } from '../state/fingerprint.js';
import { AMENDABLE, describeChange, downgradeBlockers, optionChanges } from './compare-options.js';
import { contentKey } from './content-identity.js';
import { type ContentPlan, keyOfLayer, namesDataFileOf, type PlanContext } from './plan-context.js';
import type { Step } from './plan-types.js';
import {
  amendStep,
  type BackingTarget,
  convertKeepingBackingStep,
  convertStep,
  deltaStep,
  diffStep,
  growCompat010Step,
  rebaseInPlaceStep,
  repointStep,
  resizeOf,
  resizeStep,
  type Target,
  verifiedConvertKeepingBackingStep,
  verifiedRepointStep,
} from './recipes.js';

/**
 * An image kept in place that has internal snapshots: its snapshots read through the same
 * backing file as its active layer, so only a repoint to content verified identical, or an
 * amend, keeps every snapshot right. A verified repoint then has no fallback (a safe rebase
 * would fix the active layer only); anything else is refused.
 */
export function keepsSnapshots(image: ResolvedImage, steps: Step[], resizes: boolean, ctx: PlanContext): boolean {
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
export function chooseSteps(
  image: ResolvedImage,
  target: Target,
  plan: ContentPlan,
  backing: { target: BackingTarget; key: string | undefined; sizeWhenRead: number } | null,
  ctx: PlanContext,
): Step[] | 'failed' {
  const top = plan.chain[0] as ChainLayer;
  // Staying compat 0.10 (the manifest names no compat), the image cannot take features of 1.1:
  // neither an amend nor a rewrite (which keeps compat 0.10 too) can give it them.
  const needsV3 = staysCompat010(image, plan) ? compat11Features(image.options).map((f) => f.text) : [];
  if (needsV3.length > 0) {
    ctx.diagnostics.push(
      error(
        'needs-compat-1.1',
        `"${image.id}" is a compat 0.10 image, and ${needsV3.join(' and ')} ${needsV3.length > 1 ? 'need' : 'needs'} compat 1.1`,
        {
          location: image.at.path,
          hint: 'add compat: "1.1" to its options (QEMU older than 1.1 can then no longer open it), or drop them',
        },
      ),
    );
    return 'failed';
  }
  const steps = chooseRecipe(image, target, plan, backing, ctx);
  const resizes = image.size !== undefined && image.size !== plan.content.virtualSize;
  if (plan.kind === 'in-place' && top.snapshots.length > 0 && !keepsSnapshots(image, steps, resizes, ctx))
    return 'failed';
  // A step that writes a new file creates it with the wanted options; in place, amend them.
  if (plan.kind === 'in-place' && steps.every((s) => !s.temporaryPath)) {
    const amendable = optionChanges(image.options, top, namesDataFileOf(top, ctx.layout)).filter((c) =>
      AMENDABLE.has(c.name),
    );
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
            // A copy of an image this plan grows copies it grown (followGrownSources).
            hint:
              image.source && current > (plan.chain[0]?.virtualSize ?? current)
                ? `its source grows to ${current} bytes in this plan, and the copy is made from it grown: declare that size, or add \`shrink: true\` if its guest no longer uses the space`
                : 'add `shrink: true` to the image if its guest no longer uses that space',
          },
        ),
      );
      return 'failed';
    }
    const shrink = size < current;
    const last = steps.at(-1);
    const cannotZero = shrink
      ? undefined
      : whyGrowCannotZero(image, target, plan, backing, last?.temporaryPath !== undefined);
    if (cannotZero && backing && growsInPlaceAsCompat010(image, plan, steps)) {
      const reason = `grow from ${current} to ${size} bytes over a backing of ${backing.sizeWhenRead} bytes; ${cannotZero}, so the image is amended to compat 1.1 for the resize and back to 0.10, which writes only the grown area the backing covers`;
      steps.push(growCompat010Step(target, plan.content, size, backing.target, backing.sizeWhenRead, reason));
    } else if (cannotZero && backing) {
      // Made anew at its final size instead (any recipe and amend chosen above fold into it; an
      // image with internal snapshots never gets here, see keepsSnapshots): the diff's safe
      // rebase writes zeros where the backing has data past the content.
      return [
        diffStep(
          target,
          plan.content,
          backing.target,
          `grows from ${current} to ${size} bytes over a backing of ${backing.sizeWhenRead} bytes, and ${cannotZero}: a new overlay of the final size on ${plan.kind === 'in-place' ? 'the image' : 'the content'}, then a safe rebase onto ${backing.target.name} keeps the clusters that differ and writes zeros where the backing has data past the content${steps.length > 0 ? `. This also does what these steps would have done: ${steps.map((step) => step.reason).join('; ')}` : ''}`,
          size,
        ),
      ];
    } else {
      const why = `${shrink ? 'shrink' : 'grow'} from ${current} to ${size} bytes`;
      if (last?.temporaryPath) {
        last.commands.push(resizeOf(last.temporaryPath, image.format, size, shrink));
        if (last.otherwise) last.otherwise.push(resizeOf(last.temporaryPath, image.format, size, shrink));
        last.reason = `${last.reason}; then ${why}`;
      } else {
        steps.push(resizeStep(target, plan.content, size, shrink, why, last));
      }
    }
  }
  for (const [i, step] of steps.entries()) {
    const previous = steps[i - 1];
    if (previous && !step.dependsOn.includes(previous.id)) step.dependsOn.push(previous.id);
  }
  return steps;
}

/**
 * Whether a grow that compat 0.10 cannot zero can be made in place through compat 1.1
 * (growCompat010Step): a qcow2 image kept at its path, compat 0.10 now, whose manifest declares
 * compat 0.10 (a run killed after its first resize leaves it at 1.1, and only a declared level
 * brings it back; undeclared, 1.1 would pass for the level to keep), and no step of the plan
 * writes it into a new file. A rewrite otherwise makes it anew at its final size.
 */
function growsInPlaceAsCompat010(image: ResolvedImage, plan: ContentPlan, steps: readonly Step[]): boolean {
  return (
    plan.kind === 'in-place' &&
    image.format === 'qcow2' &&
    image.options.compat !== undefined &&
    canonicalCompat(image.options.compat) === '0.10' &&
    plan.chain[0]?.qcow2.compat === '0.10' &&
    steps.every((step) => !step.temporaryPath)
  );
}

/**
 * A compat 0.10 qcow2 image kept at its path whose manifest names no compat stays compat 0.10:
 * an amend leaves the level as it is, and a step that rewrites the file creates it with compat
 * 0.10 too (qemu-img's default, 1.1, would shut out the QEMU older than 1.1 it may be kept for).
 */
export function staysCompat010(image: ResolvedImage, plan: ContentPlan): boolean {
  return (
    plan.kind === 'in-place' &&
    image.format === 'qcow2' &&
    image.options.compat === undefined &&
    plan.chain[0]?.qcow2.compat === '0.10'
  );
}

/**
 * The settings an image kept in place has and the manifest does not name, for a step that
 * rewrites it into a new file: the new file keeps them (qemu-img's defaults, a 64 KiB cluster,
 * compat 1.1, would change what the manifest left as it is). Only values other than qemu-img's
 * defaults, and only those the new file can take beside the declared options: features of
 * compat 1.1 are not kept when the manifest asks for 0.10, a cluster under 16 KiB not beside a
 * declared extended_l2, extended_l2 not beside a declared cluster under 16 KiB, a qed cluster
 * not when the image is too large for it with qed's default table size. An image made
 * from its source (built, or rebuilt when stale) gets qemu-img's defaults.
 */
export function keptSettings(image: ResolvedImage, plan: ContentPlan): Options {
  const top = plan.chain[0];
  if (plan.kind !== 'in-place' || !top || top.format !== image.format) return {};
  const declared = image.options;
  const kept: Options = {};
  const cluster = top.clusterSize;
  if (declared.cluster_size === undefined && cluster !== undefined && cluster !== QCOW2_DEFAULT_CLUSTER_SIZE) {
    const size = image.size ?? plan.content.virtualSize;
    // qed's tables (manifests cannot name their size) cover cluster^3 / 4 bytes at their default size.
    const fits = image.format !== 'qed' || size < cluster ** 3 / 4;
    if (fits && !(declared.extended_l2 === true && cluster < EXTENDED_L2_MIN_CLUSTER_SIZE)) kept.cluster_size = cluster;
  }
  if (image.format !== 'qcow2') return kept;
  const q = top.qcow2;
  if (staysCompat010(image, plan)) kept.compat = '0.10';
  const v2 = canonicalCompat(declared.compat ?? q.compat ?? '1.1') === '0.10';
  if (v2) return kept;
  if (declared.lazy_refcounts === undefined && q.lazyRefcounts) kept.lazy_refcounts = true;
  if (declared.refcount_bits === undefined && q.refcountBits !== undefined && q.refcountBits !== 16) {
    kept.refcount_bits = q.refcountBits as Options['refcount_bits'];
  }
  if (
    declared.extended_l2 === undefined &&
    q.extendedL2 &&
    (declared.cluster_size ?? QCOW2_DEFAULT_CLUSTER_SIZE) >= EXTENDED_L2_MIN_CLUSTER_SIZE
  ) {
    kept.extended_l2 = true;
  }
  if (declared.compression_type === undefined && q.compressionType === 'zstd') kept.compression_type = 'zstd';
  return kept;
}

/**
 * Why qemu cannot grow this image over its backing with a resize, or undefined when it can.
 * Growing an image whose backing is larger than the image is now makes qemu zero the grown
 * area, or the backing's data there would show through. A compat 0.10 qcow2 image has no zero
 * clusters and qed cannot zero on resize: `qemu-img resize` fails ("Failed to zero out new
 * clusters", "Block driver does not support requested flags"). The backing is taken at the
 * larger of its sizes before and after the plan (`sizeWhenRead`): a backing the manifest also
 * grows may grow before this image's resize runs, or beside it.
 */
function whyGrowCannotZero(
  image: ResolvedImage,
  target: Target,
  plan: ContentPlan,
  backing: { sizeWhenRead: number } | null,
  newFile: boolean,
): string | undefined {
  if (!backing || backing.sizeWhenRead <= plan.content.virtualSize) return undefined;
  if (image.format === 'qed') return 'qed cannot zero it on a resize';
  // A new file gets qemu-img's default, compat 1.1, unless the target's options say otherwise
  // (declared, or kept: staysCompat010).
  const declared = target.options.compat;
  const compat = declared !== undefined ? canonicalCompat(declared) : newFile ? '1.1' : plan.chain[0]?.qcow2.compat;
  return image.format === 'qcow2' && compat === '0.10' ? 'compat 0.10 has no zero clusters' : undefined;
}

/**
 * The format qemu opens a qed image's backing with when the header names none: qed records a
 * backing format only for raw (a flag), and qemu probes any other; the link then cannot be made
 * more exact, so it is taken as naming the probed format.
 */
function qedProbedFormat(top: ChainLayer, backing: ChainLayer | undefined): string | undefined {
  return top.format === 'qed' && backing && backing.format !== 'raw' ? backing.format : undefined;
}

/** Bytes as MiB with one decimal, as the step reasons give sizes. */
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

/**
 * The cluster delta from the state the declared backing presents to the state the image must
 * present, when both are states of the image's qcow2 source file and the image is a qcow2
 * overlay; or, when they are but the file's tables gave none, why (for the fallback's reason).
 * Only here, for an image that must be built, are the file's tables read, and only while the
 * file is still the one inspected (SnapshotDeltaPair.read).
 */
function usableDelta(
  image: ResolvedImage,
  plan: ContentPlan,
  backingKey: string | undefined,
  ctx: PlanContext,
): SnapshotDelta | { why: string } | undefined {
  const { content } = plan;
  if (image.format !== 'qcow2' || content.format !== 'qcow2') return undefined;
  const source = ctx.layout.files.get(content.path);
  let none: { why: string } | undefined;
  for (const pair of ctx.layout.snapshotDeltaPairs) {
    const matches =
      pair.path === content.path &&
      pair.toId === (content.snapshotId ?? null) &&
      sameFingerprint(pair.fingerprint, source?.fingerprint) &&
      ctx.identity.same(
        backingKey,
        contentKey(fileIdentity(pair.fingerprint), 'qcow2', pair.fromId === null ? undefined : `id:${pair.fromId}`),
      );
    if (!matches) continue;
    const read = pair.read();
    if (!('why' in read)) return read;
    none ??= read;
  }
  return none;
}

/** Picks the recipe for one image's content and backing; returns its steps (possibly none). */
export function chooseRecipe(
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
  const current = currentBacking ? { path: currentBacking.path, format: currentBacking.format } : undefined;
  // The declared backing presents what a layer further down the chain presents (dropping middle
  // links): a safe rebase then reads only the clusters allocated in the skipped layers, where a
  // compare would read the whole disk twice (qemu-img rebase stops at a new backing it finds in
  // the old chain).
  const ancestor =
    backing !== null && !backingIsEquivalent
      ? chain.findIndex((layer, i) => i >= 2 && ctx.identity.same(keyOfLayer(layer), backing.key))
      : -1;
  const skipped = ancestor > 0 ? chain.slice(1, ancestor) : [];
  const skippedNames = skipped.map((layer) => layer.path).join(', ');

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
    if (ancestor > 0) {
      return [
        diffStep(
          target,
          content,
          backing.target,
          `the declared backing ${backing.target.name} lies further down the source's chain: keep only the clusters that differ from it, reading only those of the skipped layers (${skippedNames})`,
        ),
      ];
    }
    const delta = usableDelta(image, plan, backing.key, ctx);
    if (delta && !('why' in delta)) {
      return [
        deltaStep(
          target,
          content,
          backing.target,
          delta,
          `the declared backing ${backing.target.name} presents another state of the same qcow2 file: copy only the clusters whose tables differ (${delta.ranges.length} range${delta.ranges.length === 1 ? '' : 's'}, ${mib(delta.bytes)} MiB${delta.zeroBytes > 0 ? `, ${mib(delta.zeroBytes)} MiB of them zeroed` : ''}; found from the cluster tables, without reading data)`,
        ),
      ];
    }
    // The declared backing presents another state of the same file, but its tables gave no delta.
    const noDelta = delta ? ` (no delta from the cluster tables of ${content.path}: ${delta.why})` : '';
    if (current) {
      return [
        verifiedConvertKeepingBackingStep(
          target,
          content,
          current,
          backing.target,
          `the source's backing ${top.backingName ?? current.path} is not known to present the same content as ${backing.target.name}: compare them; identical: copy only the top layer; different: keep only the clusters that differ from ${backing.target.name}${noDelta}`,
        ),
      ];
    }
    return [
      diffStep(
        target,
        content,
        backing.target,
        `the source is a full copy: keep only the clusters that differ from the declared backing${noDelta}`,
      ),
    ];
  }

  // In place: the file at `path` already presents the wanted content. Option changes that
  // `qemu-img amend` can make are made in place; any other change rewrites the file.
  const optionDiffs = optionChanges(image.options, top, namesDataFileOf(top, ctx.layout));
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
      (top.backingFormat ?? qedProbedFormat(top, currentBacking)) === backing.target.format
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
  if (ancestor > 0 && !rewrite) {
    return [
      rebaseInPlaceStep(
        target,
        content,
        backing.target,
        skipped.reduce((sum, layer) => sum + layer.actualSize, 0),
        `its new backing ${backing.target.name} lies further down its chain: a safe rebase reads only the clusters of the skipped layers (${skippedNames}) and copies in those that differ`,
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
