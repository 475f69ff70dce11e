// Stage 2c: semantic checks that the schema cannot express. Pure: the only outside fact it needs
// (does a file exist?) is passed in, so every check is unit-testable.
import { type Diagnostic, error } from '../diagnostics/diagnostic.js';
import { canonicalCompat, formatsWithBacking, optionsByFormat } from '../qemu/formats.js';
import type { Options } from './manifest.generated.js';
import type { ResolvedImage, ResolvedManifest } from './resolve-manifest.js';

/** Facts about the filesystem the checks need. */
export interface CheckEnvironment {
  fileExists(path: string): boolean;
}

function checkBackingIds(manifest: ResolvedManifest): Diagnostic[] {
  const ids = [...manifest.byId.keys()];
  return manifest.images.flatMap((image) => {
    const backing = image.backing;
    if (backing?.kind !== 'image' || manifest.byId.has(backing.id)) return [];
    return [
      error(
        'unknown-backing',
        `image "${image.id}" is backed by "${backing.id}", which is not an image of this manifest`,
        {
          location: image.at.backing,
          hint: `use one of: ${ids.join(', ')}; or {path: ..., format: ...} for a base the manifest does not manage`,
        },
      ),
    ];
  });
}

/** Each image has at most one backing, so cycles are found by walking from every image. */
function checkBackingCycles(manifest: ResolvedManifest): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const reported = new Set<string>();
  for (const start of manifest.images) {
    const trail: ResolvedImage[] = [];
    let current: ResolvedImage | undefined = start;
    while (current && !trail.includes(current)) {
      trail.push(current);
      const backing: ResolvedImage['backing'] = current.backing;
      current = backing?.kind === 'image' ? manifest.byId.get(backing.id) : undefined;
    }
    if (!current) continue;
    const cycle = trail.slice(trail.indexOf(current));
    const key = cycle
      .map((i) => i.id)
      .sort()
      .join(' ');
    if (reported.has(key)) continue;
    reported.add(key);
    // Start the cycle at the image that comes first in the manifest, for stable output.
    const first = cycle.reduce((a, b) => (b.index < a.index ? b : a));
    const ordered = [...cycle.slice(cycle.indexOf(first)), ...cycle.slice(0, cycle.indexOf(first))];
    const edges = ordered.map((image, i) => ({
      from: image,
      to: ordered[(i + 1) % ordered.length] as ResolvedImage,
    }));
    diagnostics.push(
      error('backing-cycle', `backing cycle: ${[...ordered, first].map((i) => i.id).join(' -> ')}`, {
        location: first.at.backing,
        related: edges.map((edge) => ({
          message: `${edge.from.id} is backed by ${edge.to.id}`,
          location: edge.from.at.backing,
        })),
        hint: 'a backing chain must end in a standalone image; remove one of these links',
      }),
    );
  }
  return diagnostics;
}

function checkDuplicatePaths(manifest: ResolvedManifest): Diagnostic[] {
  const firstByPath = new Map<string, ResolvedImage>();
  const diagnostics: Diagnostic[] = [];
  for (const image of manifest.images) {
    const first = firstByPath.get(image.path);
    if (!first) {
      firstByPath.set(image.path, image);
      continue;
    }
    diagnostics.push(
      error('duplicate-path', `images "${first.id}" and "${image.id}" have the same path ${image.path}`, {
        location: image.at.path,
        related: [{ message: `"${first.id}" uses it here`, location: first.at.path }],
        hint: 'every image needs a file of its own',
      }),
    );
  }
  return diagnostics;
}

function checkSourcesExist(manifest: ResolvedManifest, env: CheckEnvironment): Diagnostic[] {
  return manifest.images.flatMap((image) => {
    if (image.source) {
      if (env.fileExists(image.source.path)) return [];
      return [
        error('source-missing', `the source of "${image.id}" does not exist: ${image.source.path}`, {
          location: image.at.fromPath,
        }),
      ];
    }
    if (env.fileExists(image.path)) return [];
    return [
      error(
        'in-place-missing',
        `"${image.id}" has no \`from\`, so it reshapes ${image.path} in place, but that file does not exist`,
        {
          location: image.at.path,
          hint: 'add `from: {path: ...}` naming the content it must present',
        },
      ),
    ];
  });
}

/** Outputs must not replace a file that some image still reads (its source, or a fixed base). */
function checkOverwrites(manifest: ResolvedManifest): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  for (const image of manifest.images) {
    if (image.source?.path === image.path) {
      diagnostics.push(
        error('overwrites-input', `"${image.id}" would overwrite its own source ${image.path}`, {
          location: image.at.fromPath,
          hint: 'omit `from` to reshape the file in place, or write to another path',
        }),
      );
    }
    if (!image.source) continue; // an in-place reshape keeps the content others read
    for (const reader of manifest.images) {
      if (reader === image) continue;
      if (reader.source?.path === image.path) {
        diagnostics.push(
          error(
            'overwrites-input',
            `"${image.id}" would replace ${image.path}, which "${reader.id}" reads as its source`,
            {
              location: image.at.path,
              related: [{ message: `"${reader.id}" reads it here`, location: reader.at.fromPath }],
              hint: 'write the new image to another path',
            },
          ),
        );
      }
      if (reader.backing?.kind === 'file' && reader.backing.path === image.path) {
        diagnostics.push(
          error(
            'overwrites-input',
            `"${image.id}" would replace ${image.path}, which "${reader.id}" uses as its backing`,
            {
              location: image.at.path,
              related: [{ message: `"${reader.id}" names it here`, location: reader.at.backing }],
              hint: `refer to the image by its id instead: backing: ${image.id}`,
            },
          ),
        );
      }
    }
  }
  return diagnostics;
}

function checkOptions(manifest: ResolvedManifest): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  for (const image of manifest.images) {
    const allowed = optionsByFormat[image.format];
    for (const name of Object.keys(image.options) as (keyof Options)[]) {
      if (allowed.has(name)) continue;
      diagnostics.push(
        error('unknown-option', `option "${name}" does not apply to ${image.format} image "${image.id}"`, {
          location: image.at.option(name),
          hint: allowed.size ? `${image.format} takes: ${[...allowed].join(', ')}` : `${image.format} takes no options`,
        }),
      );
    }
    const { compat, lazy_refcounts, extended_l2 } = image.options;
    if (compat !== undefined && canonicalCompat(compat) === '0.10') {
      for (const [name, on] of [
        ['lazy_refcounts', lazy_refcounts],
        ['extended_l2', extended_l2],
      ] as const) {
        if (!on) continue;
        diagnostics.push(
          error('option-needs-compat', `${name} needs compat 1.1, but "${image.id}" asks for compat ${compat}`, {
            location: image.at.option(name),
            hint: `drop ${name} or use compat "1.1"`,
          }),
        );
      }
    }
    if (image.backing && !formatsWithBacking.has(image.format)) {
      diagnostics.push(
        error('backing-unsupported', `${image.format} images cannot have a backing file ("${image.id}")`, {
          location: image.at.backing,
          hint: `use format qcow2, or remove the backing to make a standalone ${image.format} image`,
        }),
      );
    }
  }
  return diagnostics;
}

/** Runs every semantic check; returns all problems found (an empty list means valid). */
export function checkManifest(manifest: ResolvedManifest, env: CheckEnvironment): Diagnostic[] {
  const structural = [...checkBackingIds(manifest), ...checkBackingCycles(manifest)];
  return [
    ...structural,
    ...checkDuplicatePaths(manifest),
    ...checkSourcesExist(manifest, env),
    ...checkOverwrites(manifest),
    ...checkOptions(manifest),
  ];
}
