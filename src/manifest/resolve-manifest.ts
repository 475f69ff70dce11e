// Stage 2b: turn a schema-valid manifest into the resolved model the rest of chainform uses:
// absolute paths, defaults merged in, and the source location of every field kept for errors.
import { dirname, isAbsolute } from 'node:path';
import type { SourceLocation } from '../diagnostics/diagnostic.js';
import { optionsByFormat } from '../qemu/formats.js';
import { resolvePath } from '../util/paths.js';
import type { ManifestSource } from './load-manifest.js';
import { locate } from './locate.js';
import type { Manifest, Options, OutputFormat, Source } from './manifest.generated.js';

/** One image as the manifest spells it. */
type ManifestImage = Manifest['images'][string];

/** Input formats, as the schema spells them. */
export type InputFormat = NonNullable<Source['format']>;

/** Where the image's content comes from when it is not reshaped in place. */
export interface ResolvedSource {
  /** Absolute path of the source file. */
  path: string;
  /** Declared format (required: chainform never lets qemu-img guess one). */
  format: InputFormat;
  snapshot: string | undefined;
}

/** The backing an image must end up with. */
export type ResolvedBacking =
  | { kind: 'image'; id: string }
  | {
      kind: 'file';
      /** Absolute path of the existing backing file. */
      path: string;
      format: InputFormat;
      /** True when the manifest gave an absolute path, which is then stored as is. */
      absolute: boolean;
    };

/** Source locations of an image's fields, for diagnostics from any later stage. */
export interface ImageLocations {
  id: SourceLocation;
  path: SourceLocation;
  format: SourceLocation;
  from: SourceLocation;
  fromPath: SourceLocation;
  fromSnapshot: SourceLocation;
  backing: SourceLocation;
  size: SourceLocation;
  /** Where an option is set (in the image, or else in `defaults`). */
  option: (name: string) => SourceLocation;
}

/** One image of the desired layout. */
export interface ResolvedImage {
  id: string;
  /** Position in the manifest, for deterministic ordering. */
  index: number;
  /** Absolute path where the image must end up. */
  path: string;
  /** `path` as written in the manifest. */
  declaredPath: string;
  /** True when the manifest gave `path` as absolute (backing links to it are then absolute). */
  pathIsAbsolute: boolean;
  format: OutputFormat;
  /** The default options its format accepts, overridden by the image's own. */
  options: Options;
  /** null: keep what the file at `path` presents today (reshape in place). */
  source: ResolvedSource | null;
  /** null: a standalone image. */
  backing: ResolvedBacking | null;
  /** The virtual size it must have, in bytes; undefined: whatever its content has. */
  size: number | undefined;
  /** `size` may make it smaller. */
  shrink: boolean;
  at: ImageLocations;
}

/** The desired layout, resolved. */
export interface ResolvedManifest {
  /** Absolute path of the manifest file. */
  file: string;
  /** The manifest's folder; relative paths are taken from here. */
  dir: string;
  /** Images in manifest order. */
  images: ResolvedImage[];
  byId: ReadonlyMap<string, ResolvedImage>;
  /** Old files to delete after the new layout is built and verified (absolute), with where each is named. */
  retire: { path: string; at: SourceLocation }[];
}

/** A data file path is taken from the manifest's folder, like every path. */
function withAbsoluteDataFile(options: Options, dir: string): Options {
  return options.data_file === undefined ? options : { ...options, data_file: resolvePath(dir, options.data_file) };
}

const SUFFIX = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 } as const;

/** `20G` -> 21474836480; a number is already bytes. Rounded down to whole bytes. */
export function sizeInBytes(size: number | string): number {
  if (typeof size === 'number') return size;
  const unit = size.at(-1) as keyof typeof SUFFIX;
  return Math.floor(Number(size.slice(0, -1)) * SUFFIX[unit]);
}

/**
 * The {@link ImageLocations} of one image, each looked up on first read, then kept. Locations are
 * needed only for diagnostics, and finding one scans the manifest's mappings: doing it for every
 * field of 10,000 images would be quadratic. One object per image, its getters on the prototype.
 */
class LazyImageLocations implements ImageLocations {
  readonly #found = new Map<string, SourceLocation>();
  readonly #source: ManifestSource;
  readonly #id: string;
  readonly #image: ManifestImage;

  constructor(source: ManifestSource, id: string, image: ManifestImage) {
    this.#source = source;
    this.#id = id;
    this.#image = image;
  }

  /** The location of `field` of the image (its key when `part` is 'key'), found once. */
  #at(name: string, field: readonly string[], part?: 'key'): SourceLocation {
    let found = this.#found.get(name);
    if (!found) {
      found = locate(this.#source, ['images', this.#id, ...field], part);
      this.#found.set(name, found);
    }
    return found;
  }

  get id() {
    return this.#at('id', [], 'key');
  }
  get path() {
    return this.#at('path', ['path']);
  }
  get format() {
    return this.#image.format ? this.#at('format', ['format']) : this.id;
  }
  get from() {
    return this.#at('from', ['from']);
  }
  get fromPath() {
    return this.#at('fromPath', ['from', 'path']);
  }
  get fromSnapshot() {
    return this.#at('fromSnapshot', ['from', 'snapshot']);
  }
  get backing() {
    return this.#at('backing', ['backing']);
  }
  get size() {
    return this.#at('size', ['size']);
  }
  option(name: string): SourceLocation {
    return this.#image.options && name in this.#image.options
      ? this.#at(`option ${name}`, ['options', name], 'key')
      : locate(this.#source, ['defaults', 'options', name], 'key');
  }
}

/** Resolves a schema-valid manifest. Pure apart from reading `source` positions. */
export function resolveManifest(source: ManifestSource, manifest: Manifest): ResolvedManifest {
  const dir = dirname(source.file);
  const defaults = manifest.defaults ?? {};
  const images = Object.entries(manifest.images).map(([id, image], index): ResolvedImage => {
    const format = image.format ?? defaults.format ?? 'qcow2';
    // Each image takes the default options its format accepts; its own options override them.
    const inherited = Object.fromEntries(
      Object.entries(defaults.options ?? {}).filter(([name]) => optionsByFormat[format].has(name as keyof Options)),
    );
    const from = image.from;
    const backing = image.backing;
    return {
      id,
      index,
      path: resolvePath(dir, image.path),
      declaredPath: image.path,
      pathIsAbsolute: isAbsolute(image.path),
      format,
      options: withAbsoluteDataFile({ ...inherited, ...image.options }, dir),
      source: from ? { path: resolvePath(dir, from.path), format: from.format, snapshot: from.snapshot } : null,
      backing:
        backing === undefined || backing === null
          ? null
          : typeof backing === 'string'
            ? { kind: 'image', id: backing }
            : {
                kind: 'file',
                path: resolvePath(dir, backing.path),
                format: backing.format,
                absolute: isAbsolute(backing.path),
              },
      size: image.size === undefined ? undefined : sizeInBytes(image.size),
      shrink: image.shrink === true,
      at: new LazyImageLocations(source, id, image),
    };
  });
  const retire = (manifest.retire ?? []).map((path, index) => {
    // Looked up on first read, like an image's locations: only a diagnostic needs it.
    let at: SourceLocation | undefined;
    return {
      path: resolvePath(dir, path),
      get at() {
        at ??= locate(source, ['retire', index]);
        return at;
      },
    };
  });
  return { file: source.file, dir, images, byId: new Map(images.map((i) => [i.id, i])), retire };
}
