// Pure: turns an imported layout into a manifest document, either as it is today (every layer an
// image reshaped in place, so `plan` on it is empty) or linearised (every internal snapshot its
// own external link under an export folder).
import { basename, dirname, isAbsolute, relative, resolve } from 'node:path';
import { Document, isMap, type Scalar } from 'yaml';
import type { Image, Manifest, Options } from '../manifest/manifest.generated.js';
import type { ImageInfo } from '../qemu/image-info.js';
import type { ImportedLayer, ImportedLayout } from './inspect-chains.js';

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Hands out manifest ids from file names: valid, readable and unique. */
class IdAllocator {
  private readonly used = new Set<string>();

  allocate(wanted: string): string {
    let base = wanted.replace(/[^A-Za-z0-9_.-]+/g, '-').slice(0, 100);
    if (!ID_PATTERN.test(base)) base = `img-${base}`;
    let id = base;
    for (let n = 2; this.used.has(id); n++) id = `${base}-${n}`;
    this.used.add(id);
    return id;
  }
}

function stem(path: string): string {
  const name = basename(path);
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(0, dot) : name;
}

/** A path as the manifest writes it: relative to its folder, unless it must stay absolute. */
function manifestPath(manifestDir: string, path: string, absolute: boolean): string {
  if (absolute) return path;
  const rel = relative(manifestDir, path);
  return rel === '' || isAbsolute(rel) ? path : rel;
}

/** The options of an existing image worth pinning: those that differ from qemu's defaults, plus the basics. */
function observedOptions(info: ImageInfo): Options | undefined {
  if (info.format === 'qed' && info.clusterSize) return { cluster_size: info.clusterSize };
  if (info.format !== 'qcow2') return undefined;
  const q = info.qcow2;
  const options: Options = {};
  if (info.clusterSize) options.cluster_size = info.clusterSize;
  if (q.compat === '0.10' || q.compat === '1.1') options.compat = q.compat;
  if (q.lazyRefcounts) options.lazy_refcounts = true;
  if (q.extendedL2) options.extended_l2 = true;
  if (q.refcountBits && q.refcountBits !== 16) options.refcount_bits = q.refcountBits as Options['refcount_bits'];
  if (q.compressionType && q.compressionType !== 'zlib')
    options.compression_type = q.compressionType as Options['compression_type'];
  return options;
}

/**
 * An image's external data file as the manifest names it (relative to the manifest unless the
 * image stores it absolutely, as chainform does), and whether it is raw: an image kept in place
 * keeps its data file either way, but the manifest should say what the layout is.
 */
function dataFileOptions(path: string, info: ImageInfo, context: ManifestContext): Options {
  const name = info.format === 'qcow2' ? info.qcow2.dataFile : undefined;
  if (name === undefined) return {};
  const file = resolve(dirname(path), name);
  return {
    data_file: manifestPath(context.manifestDir, file, isAbsolute(name)),
    ...(info.qcow2.dataFileRaw ? { data_file_raw: true } : {}),
  };
}

/** Snapshots oldest first (by date, then id). */
function snapshotsInOrder(info: ImageInfo): ImageInfo['snapshots'] {
  return [...info.snapshots].sort(
    (a, b) =>
      a.dateSec - b.dateSec || a.dateNsec - b.dateNsec || Number(a.id) - Number(b.id) || a.id.localeCompare(b.id),
  );
}

function describeSnapshots(info: ImageInfo): string | undefined {
  const snapshots = snapshotsInOrder(info);
  if (snapshots.length === 0) return undefined;
  const listed = snapshots.map((s) => `${s.name} (id ${s.id}, ${new Date(s.dateSec * 1000).toISOString()})`);
  return ` internal snapshots: ${listed.join(', ')}`;
}

function toDocument(manifest: Manifest, keyComments: ReadonlyMap<string, string>, header: string): Document {
  const doc = new Document(manifest);
  doc.commentBefore = header;
  const images = doc.get('images', true);
  if (isMap(images)) {
    for (const pair of images.items) {
      const key = doc.createNode(pair.key) as Scalar;
      const comment = keyComments.get(String(key.value));
      if (comment) key.commentBefore = comment;
      pair.key = key;
    }
  }
  return doc;
}

/** Where the schema is, for the editor hint on the first line. */
export interface ManifestContext {
  /** Folder the manifest will live in; paths are written relative to it. */
  manifestDir: string;
  /** Absolute path of schemas/manifest.schema.json. */
  schemaPath: string;
  /** What to say about the origin, e.g. the date and command. */
  origin: string;
}

function header(context: ManifestContext, what: string): string {
  const schema = relative(context.manifestDir, context.schemaPath) || context.schemaPath;
  return ` yaml-language-server: $schema=${schema}\n ${what}\n ${context.origin}`;
}

/** The layout as it is: every layer an image kept in place, with its format, options and backing. */
export function layoutManifest(layout: ImportedLayout, context: ManifestContext): Document {
  const ids = new IdAllocator();
  const idOf = new Map<string, string>();
  for (const layer of layout.layers) idOf.set(layer.path, ids.allocate(stem(layer.path)));
  const images: Record<string, Image> = {};
  const comments = new Map<string, string>();
  for (const layer of layout.layers) {
    const id = idOf.get(layer.path) as string;
    const options = { ...observedOptions(layer.info), ...dataFileOptions(layer.path, layer.info, context) };
    images[id] = {
      path: manifestPath(context.manifestDir, layer.path, layer.referencedAbsolute),
      format: layer.info.format as Image['format'],
      ...(layer.backing ? { backing: idOf.get(layer.backing) as string } : {}),
      ...(options && Object.keys(options).length ? { options } : {}),
    };
    const snapshots = describeSnapshots(layer.info);
    if (snapshots) comments.set(id, snapshots);
  }
  return toDocument(
    { version: 1, images },
    comments,
    header(
      context,
      'The layout as it is: every image is kept in place (no `from`), so `chainform plan` on it is empty.',
    ),
  );
}

/**
 * Every internal snapshot as its own external link: per image its snapshots oldest first, then
 * its active layer, each link backed by the one before; an image's first link sits on the last
 * link (the active layer) of its backing image.
 */
export function linearManifest(layout: ImportedLayout, context: ManifestContext, outDir: string): Document {
  const ids = new IdAllocator();
  const lastLink = new Map<string, string>();
  const images: Record<string, Image> = {};
  const comments = new Map<string, string>();
  const addLink = (
    layer: ImportedLayer,
    snapshot: ImageInfo['snapshots'][number] | undefined,
    below: string | undefined,
  ) => {
    const id = ids.allocate(snapshot ? `${stem(layer.path)}_${snapshot.name || `id${snapshot.id}`}` : stem(layer.path));
    // By name when that is unambiguous, else by id (see findSnapshot in the planner).
    const byId =
      snapshot !== undefined &&
      (snapshot.name === '' ||
        layer.info.snapshots.some((s) => s !== snapshot && (s.name === snapshot.name || s.id === snapshot.name)));
    const options = layer.info.clusterSize ? { cluster_size: layer.info.clusterSize } : undefined;
    images[id] = {
      path: manifestPath(context.manifestDir, `${outDir}/${id}.qcow2`, false),
      format: 'qcow2',
      from: {
        path: manifestPath(context.manifestDir, layer.path, false),
        format: layer.info.format as NonNullable<Image['from']>['format'],
        ...(snapshot ? { snapshot: byId ? snapshot.id : snapshot.name } : {}),
      },
      ...(below ? { backing: below } : {}),
      ...(options && (options.cluster_size & (options.cluster_size - 1)) === 0 && options.cluster_size >= 512
        ? { options }
        : {}),
    };
    comments.set(
      id,
      snapshot
        ? ` ${basename(layer.path)} as of snapshot ${snapshot.name} (id ${snapshot.id})`
        : ` ${basename(layer.path)} as it is now`,
    );
    return id;
  };
  for (const layer of layout.layers) {
    let below = layer.backing ? lastLink.get(layer.backing) : undefined;
    for (const snapshot of snapshotsInOrder(layer.info)) below = addLink(layer, snapshot, below);
    lastLink.set(layer.path, addLink(layer, undefined, below));
  }
  return toDocument(
    { version: 1, images },
    comments,
    header(
      context,
      `Every internal snapshot as its own external link under ${outDir}; each link stores only what differs from the one below.`,
    ),
  );
}
