// Stage 2c: semantic checks that the schema cannot express. Pure: the only outside fact it needs
// (does a file exist?) is passed in, so every check is unit-testable.
import { type Diagnostic, error } from '../diagnostics/diagnostic.js';
import { RUNTIME_DIR } from '../planner/plan-types.js';
import {
  canonicalCompat,
  clusterSizeRange,
  compat11Features,
  EXTENDED_L2_MIN_CLUSTER_SIZE,
  formatsWithBacking,
  optionsByFormat,
  preallocationByFormat,
  QCOW2_DEFAULT_CLUSTER_SIZE,
  subformatsByFormat,
} from '../qemu/formats.js';
import type { Options } from './manifest.generated.js';
import type { ResolvedImage, ResolvedManifest } from './resolve-manifest.js';

/** Facts about the filesystem the checks need. */
export interface CheckEnvironment {
  fileExists(path: string): boolean;
  /** The nearest existing ancestor folder of `path` is not a folder (a file is in the way). */
  parentBlocked?(path: string): string | undefined;
}

function checkBackingIds(manifest: ResolvedManifest): Diagnostic[] {
  return manifest.images.flatMap((image) => {
    const backing = image.backing;
    if (backing?.kind !== 'image' || manifest.byId.has(backing.id)) return [];
    const ids = [...manifest.byId.keys()].filter((id) => id !== image.id);
    return [
      error(
        'unknown-backing',
        `image "${image.id}" is backed by "${backing.id}", which is not an image of this manifest`,
        {
          location: image.at.backing,
          hint: `${ids.length ? `use one of: ${ids.join(', ')}; or ` : 'use '}{path: ..., format: ...} for a base the manifest does not manage`,
        },
      ),
    ];
  });
}

/** Each image has at most one backing, so cycles are found by walking from every image. */
/**
 * The backing cycle reached from `start` following `below` (the image an image is backed by), in
 * link order from the image where the walk comes back; undefined when the chain ends.
 */
export function backingCycleFrom(
  start: ResolvedImage,
  below: (image: ResolvedImage) => ResolvedImage | undefined,
): ResolvedImage[] | undefined {
  const trail: ResolvedImage[] = [];
  let current: ResolvedImage | undefined = start;
  while (current && !trail.includes(current)) {
    trail.push(current);
    current = below(current);
  }
  return current ? trail.slice(trail.indexOf(current)) : undefined;
}

function checkBackingCycles(manifest: ResolvedManifest): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const reported = new Set<string>();
  // A backing named by path may be the file of another image of the manifest: that image's link.
  const atPath = new Map(manifest.images.map((image) => [image.path, image] as const));
  const below = ({ backing }: ResolvedImage) =>
    backing?.kind === 'image'
      ? manifest.byId.get(backing.id)
      : backing?.kind === 'file'
        ? atPath.get(backing.path)
        : undefined;
  for (const start of manifest.images) {
    const cycle = backingCycleFrom(start, below);
    if (!cycle) continue;
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

/** A data file must be a file of its own: not an image, a source, a base or another data file. */
function checkDataFiles(manifest: ResolvedManifest): Diagnostic[] {
  const taken = new Map<string, string>();
  for (const image of manifest.images) {
    taken.set(image.path, `the path of "${image.id}"`);
    if (image.source) taken.set(image.source.path, `the source of "${image.id}"`);
    if (image.backing?.kind === 'file') taken.set(image.backing.path, `the backing of "${image.id}"`);
  }
  const diagnostics: Diagnostic[] = [];
  for (const image of manifest.images) {
    const dataFile = image.options.data_file;
    if (dataFile === undefined) continue;
    const other = taken.get(dataFile);
    if (other) {
      diagnostics.push(
        error('data-file-collision', `the data file of "${image.id}" is ${other}: ${dataFile}`, {
          location: image.at.option('data_file'),
          hint: 'give the data file a path of its own',
        }),
      );
    }
    taken.set(dataFile, `the data file of "${image.id}"`);
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

function checkFiles(manifest: ResolvedManifest, env: CheckEnvironment): Diagnostic[] {
  // A retired source may be gone after the apply that retired it; the planner checks the output.
  const retired = new Set(manifest.retire.map((r) => r.path));
  return manifest.images.flatMap((image) => {
    const problems: Diagnostic[] = [];
    if (/[/\\]$/.test(image.declaredPath)) {
      problems.push(
        error('path-is-folder', `the path of "${image.id}" ends with "/": it names a folder, not an image file`, {
          location: image.at.path,
          hint: 'give the file name too, e.g. out/disk.qcow2',
        }),
      );
    }
    const blocker = env.parentBlocked?.(image.path);
    if (blocker) {
      problems.push(
        error('path-blocked', `"${image.id}" cannot be written to ${image.path}: ${blocker} is a file, not a folder`, {
          location: image.at.path,
        }),
      );
    }
    if (image.source && !env.fileExists(image.source.path) && !retired.has(image.source.path)) {
      problems.push(
        error('source-missing', `the source of "${image.id}" does not exist: ${image.source.path}`, {
          location: image.at.fromPath,
        }),
      );
    }
    if (!image.source && !env.fileExists(image.path)) {
      problems.push(
        error(
          'in-place-missing',
          `"${image.id}" has no \`from\`, so it reshapes ${image.path} in place, but that file does not exist`,
          {
            location: image.at.path,
            hint: 'if the file was renamed or moved, write its new path here; to build it anew, add `from: {path: ...}` naming the content it must present',
          },
        ),
      );
    }
    if (image.backing?.kind === 'file' && !env.fileExists(image.backing.path)) {
      problems.push(
        error('backing-missing', `the backing of "${image.id}" does not exist: ${image.backing.path}`, {
          location: image.at.backing,
          hint: 'name an existing image, or the id of an image of this manifest',
        }),
      );
    }
    return problems;
  });
}

/** One file read under two formats would present two different contents: refuse it. */
function checkFormatConflicts(manifest: ResolvedManifest): Diagnostic[] {
  const declared = new Map<
    string,
    { format: string; image: ResolvedImage; location: () => ResolvedImage['at']['path'] }
  >();
  const diagnostics: Diagnostic[] = [];
  // Locations are computed only for a conflict: finding one in the YAML costs time at scale.
  const note = (
    path: string,
    format: string | undefined,
    image: ResolvedImage,
    location: () => ResolvedImage['at']['path'],
  ) => {
    if (format === undefined) return;
    const first = declared.get(path);
    if (!first) {
      declared.set(path, { format, image, location });
    } else if (first.format !== format) {
      diagnostics.push(
        error(
          'format-conflict',
          `${path} is declared as ${format} here but as ${first.format} for "${first.image.id}"`,
          {
            location: location(),
            related: [{ message: `declared ${first.format} here`, location: first.location() }],
            hint: 'a file has one format; use the same one everywhere',
          },
        ),
      );
    }
  };
  for (const image of manifest.images) {
    if (!image.source) note(image.path, image.format, image, () => image.at.format);
    if (image.source) note(image.source.path, image.source.format, image, () => image.at.fromPath);
    if (image.backing?.kind === 'file') note(image.backing.path, image.backing.format, image, () => image.at.backing);
  }
  return diagnostics;
}

/** Outputs must not replace a file that some image still reads (its source, or a fixed base). */
function checkOverwrites(manifest: ResolvedManifest): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  // The images that read each path (as their source or their backing file), in manifest order:
  // each image looks up its own path instead of going through every image (10,000 copies took
  // 0.8 s so).
  const readersOf = new Map<string, ResolvedImage[]>();
  for (const reader of manifest.images) {
    const paths = new Set([reader.source?.path, reader.backing?.kind === 'file' ? reader.backing.path : undefined]);
    for (const path of paths) {
      if (path === undefined) continue;
      const readers = readersOf.get(path);
      if (readers) readers.push(reader);
      else readersOf.set(path, [reader]);
    }
  }
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
    for (const reader of readersOf.get(image.path) ?? []) {
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
    diagnostics.push(...checkOptionValues(image));
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

/** qemu sizes every disk in whole 512-byte sectors. */
const SECTOR = 512;

/**
 * A `size` that is not a whole number of sectors: qemu-img resize refuses it for qcow2, and
 * rounds a raw image up, which the next plan would then see as a shrink to refuse.
 */
function checkSizes(manifest: ResolvedManifest): Diagnostic[] {
  const problems: Diagnostic[] = [];
  for (const image of manifest.images) {
    if (image.size === undefined || image.size % SECTOR === 0) continue;
    const below = Math.floor(image.size / SECTOR) * SECTOR;
    const choices = below > 0 ? `${below} or ${below + SECTOR}` : `${below + SECTOR}`;
    problems.push(
      error(
        'invalid-size',
        `the size of "${image.id}" (${image.size} bytes) is not a whole number of 512-byte sectors`,
        {
          location: image.at.size,
          hint: `qemu sizes disks in 512-byte sectors: use ${choices}`,
        },
      ),
    );
  }
  return problems;
}

/** Values qemu-img would refuse for this format, caught before anything runs. */
function checkOptionValues(image: ResolvedImage): Diagnostic[] {
  const problems: Diagnostic[] = [];
  const refuse = (name: string, message: string, hint: string) =>
    problems.push(error('invalid-option', `${message} ("${image.id}")`, { location: image.at.option(name), hint }));
  const { cluster_size, compat, extended_l2, preallocation, subformat } = image.options;
  const range = clusterSizeRange[image.format];
  if (cluster_size !== undefined && range) {
    const [min, max] = range;
    if (cluster_size < min || cluster_size > max || (cluster_size & (cluster_size - 1)) !== 0) {
      refuse(
        'cluster_size',
        `cluster_size ${cluster_size} is not valid for ${image.format}`,
        `use a power of two from ${min} to ${max}`,
      );
    }
  }
  const preallocations = preallocationByFormat[image.format];
  if (preallocation !== undefined && preallocations && !preallocations.includes(preallocation)) {
    refuse(
      'preallocation',
      `${image.format} does not take preallocation ${preallocation}`,
      `use one of: ${preallocations.join(', ')}`,
    );
  }
  const subformats = subformatsByFormat[image.format];
  if (subformat !== undefined && subformats && !subformats.includes(subformat)) {
    refuse('subformat', `${image.format} has no subformat ${subformat}`, `use one of: ${subformats.join(', ')}`);
  }
  if (image.format !== 'qcow2') return problems;
  if (image.options.data_file_raw !== undefined && image.options.data_file === undefined) {
    refuse(
      'data_file_raw',
      'data_file_raw needs a data_file',
      'add data_file: path/to/data.raw, or drop data_file_raw',
    );
  }
  if (image.options.data_file_raw && image.backing) {
    refuse(
      'data_file_raw',
      'a raw data file cannot be combined with a backing file (qemu refuses it)',
      'drop data_file_raw, or the backing',
    );
  }
  if (compat !== undefined && canonicalCompat(compat) === '0.10') {
    for (const { name } of compat11Features(image.options)) {
      problems.push(
        error('option-needs-compat', `${name} needs compat 1.1, but "${image.id}" asks for compat ${compat}`, {
          location: image.at.option(name),
          hint: `drop ${name} or use compat "1.1"`,
        }),
      );
    }
  }
  if (extended_l2 && (cluster_size ?? QCOW2_DEFAULT_CLUSTER_SIZE) < EXTENDED_L2_MIN_CLUSTER_SIZE) {
    refuse(
      'extended_l2',
      'extended_l2 needs a cluster_size of at least 16384',
      'raise cluster_size or drop extended_l2',
    );
  }
  if (image.backing && preallocation !== undefined && preallocation !== 'off' && !extended_l2) {
    refuse(
      'preallocation',
      'qcow2 allows preallocation with a backing file only with extended_l2 on',
      'drop preallocation for this overlay, or set extended_l2: true',
    );
  }
  return problems;
}

/** Runs every semantic check; returns all problems found (an empty list means valid). */
/** Longest file name (one path component, in bytes) Linux filesystems hold. */
const NAME_MAX = 255;

/** Every path the manifest names, with where; a name no filesystem can hold, or one with chainform's placeholder, is an error. */
function checkNameLengths(manifest: ResolvedManifest): Diagnostic[] {
  // Locations are looked up only for a name at fault: finding one in the YAML costs time at scale.
  const paths = manifest.images.flatMap((image) => [
    { path: image.path, at: () => image.at.path },
    ...(image.source ? [{ path: image.source.path, at: () => image.at.fromPath }] : []),
    ...(image.backing?.kind === 'file' ? [{ path: image.backing.path, at: () => image.at.backing }] : []),
    ...(image.options.data_file !== undefined
      ? [{ path: image.options.data_file, at: () => image.at.option('data_file') }]
      : []),
  ]);
  const retired = manifest.retire.map((r) => ({ path: r.path, at: () => r.at }));
  return [...paths, ...retired].flatMap(({ path, at }) => {
    if (path.includes(RUNTIME_DIR)) {
      return [
        error(
          'reserved-name',
          `the path ${path} contains "${RUNTIME_DIR}", which chainform uses for its private folders`,
          {
            location: at(),
            hint: 'rename the file or folder',
          },
        ),
      ];
    }
    if (path.length <= NAME_MAX / 4) return []; // no name in it can be longer, even in 4-byte UTF-8
    const long = path.split('/').find((name) => Buffer.byteLength(name) > NAME_MAX);
    if (long === undefined) return [];
    return [
      error('name-too-long', `the file name "${long.slice(0, 40)}..." is ${Buffer.byteLength(long)} bytes long`, {
        location: at(),
        hint: `file and folder names can be at most ${NAME_MAX} bytes`,
      }),
    ];
  });
}

/**
 * A retired file must not be a file the new layout keeps: an image, a declared backing or a data
 * file. A source may be retired (that is the point of turning full copies into overlays): it is
 * deleted only after the steps that read it. Files read only through a backing chain are checked
 * right before deleting.
 */
function checkRetire(manifest: ResolvedManifest): Diagnostic[] {
  const used = new Map<string, string>();
  for (const image of manifest.images) {
    used.set(image.path, `the path of image "${image.id}"`);
    if (image.backing?.kind === 'file') used.set(image.backing.path, `the backing of image "${image.id}"`);
    if (image.options.data_file !== undefined)
      used.set(image.options.data_file, `the data file of image "${image.id}"`);
  }
  return manifest.retire.flatMap(({ path, at }) => {
    const role = used.get(path);
    if (!role) return [];
    return [
      error('retire-in-use', `${path} is listed under retire but is ${role}`, {
        location: at,
        hint: 'retire only files the new layout no longer needs; remove it from the retire list',
      }),
    ];
  });
}

export function checkManifest(manifest: ResolvedManifest, env: CheckEnvironment): Diagnostic[] {
  const structural = [...checkBackingIds(manifest), ...checkBackingCycles(manifest)];
  return [
    ...structural,
    ...checkDuplicatePaths(manifest),
    ...checkDataFiles(manifest),
    ...checkFiles(manifest, env),
    ...checkFormatConflicts(manifest),
    ...checkOverwrites(manifest),
    ...checkOptions(manifest),
    ...checkSizes(manifest),
    ...checkRetire(manifest),
    ...checkNameLengths(manifest),
  ];
}
