/* Generated from schemas/manifest.schema.json by `npm run gen:schemas`. Do not edit. */

/**
 * An image format qemu-img can write.
 */
export type OutputFormat = 'qcow2' | 'raw' | 'qed' | 'vmdk' | 'vdi' | 'vhdx' | 'vpc';
/**
 * A file path; a relative one is taken from the manifest's folder. No NUL characters.
 */
export type FilePath = string;

/**
 * A chainform manifest: the layout of disk images (files, formats, contents and backing links) that `chainform apply` must reach.
 */
export interface Manifest {
  /**
   * Optional URL or path of this schema, for editors.
   */
  $schema?: string;
  /**
   * Manifest format version. Only 1 exists.
   */
  version: 1;
  /**
   * Settings every image inherits unless it sets its own.
   */
  defaults?: {
    format?: OutputFormat;
    options?: Options;
  };
  /**
   * The images to reach, keyed by id. An id is what `backing:` refers to.
   */
  images: {
    [k: string]: Image;
  };
  /**
   * Old files to delete once the new layout is built and verified (every output compared with its source, every qcow2 checked). Nothing else is ever deleted. A file still read by an image of the manifest is refused.
   */
  retire?: FilePath[];
}
/**
 * qemu-img creation options (`-o`) the image must have. Which ones apply depends on the format.
 */
export interface Options {
  /**
   * Cluster size in bytes (qcow2: a power of two from 512 to 2 MiB; qed: 4 KiB to 64 MiB).
   */
  cluster_size?: number;
  /**
   * qcow2 compatibility level: 0.10 for QEMU older than 1.1, 1.1 for zero clusters and lazy refcounts.
   */
  compat?: '0.10' | '1.1' | 'v2' | 'v3';
  /**
   * qcow2: postpone refcount updates (needs compat 1.1).
   */
  lazy_refcounts?: boolean;
  /**
   * qcow2: width of a refcount entry, a power of two from 1 to 64.
   */
  refcount_bits?: 1 | 2 | 4 | 8 | 16 | 32 | 64;
  /**
   * qcow2: subcluster allocation (needs compat 1.1).
   */
  extended_l2?: boolean;
  /**
   * qcow2: compression algorithm for compressed clusters.
   */
  compression_type?: 'zlib' | 'zstd';
  /**
   * Preallocation mode of a new image.
   */
  preallocation?: 'off' | 'metadata' | 'falloc' | 'full';
  /**
   * vmdk, vhdx or vpc sub-format, e.g. monolithicSparse, streamOptimized, dynamic, fixed.
   */
  subformat?: string;
  /**
   * qcow2: keep the guest data in this external file (created with the image). Relative paths are taken from the manifest's folder; the image stores it as an absolute path, because qemu resolves a relative data-file name against the working directory of whoever opens the image.
   */
  data_file?: string;
  /**
   * qcow2 with data_file: keep the data file a valid raw image of the guest disk. Cannot be combined with a backing file.
   */
  data_file_raw?: boolean;
}
/**
 * One image of the layout: where it lives, what it stores, what it shows the guest, and what it is backed by.
 */
export interface Image {
  /**
   * Where the image must end up. Relative paths are taken from the manifest's folder.
   */
  path: string;
  /**
   * An image format qemu-img can write.
   */
  format?: 'qcow2' | 'raw' | 'qed' | 'vmdk' | 'vdi' | 'vhdx' | 'vpc';
  from?: Source;
  /**
   * What the image is backed by: the id of another image of this manifest, an existing image the manifest does not manage, or null (omitted) for a standalone image.
   */
  backing?: string | ExternalBacking | null;
  options?: Options;
  /**
   * The virtual size the image must have. Larger than today: it grows (`qemu-img resize`). Smaller: refused unless `shrink: true`.
   */
  size?: number | string;
  /**
   * Allow `size` to make the image smaller. Shrinking drops the data past the new end: only for images whose guest no longer uses it.
   */
  shrink?: boolean;
}
/**
 * The guest-visible content the image must present, read through the source's backing chain. Omitted: keep what the file at `path` presents today (reshape in place).
 */
export interface Source {
  /**
   * An existing image file whose content (through its backing chain) the image must present.
   */
  path: string;
  /**
   * The source's format, always declared: chainform never lets qemu-img guess one, since a guest can write any header into a raw disk. `qemu-img info` shows the format of a file you trust; `chainform import` writes it for you.
   */
  format: 'qcow2' | 'raw' | 'qed' | 'vmdk' | 'vdi' | 'vhdx' | 'vpc' | 'parallels' | 'dmg' | 'cloop' | 'bochs' | 'luks';
  /**
   * An internal snapshot of the source file (name or id) whose content the image must present.
   */
  snapshot?: string;
}
/**
 * An existing image, not managed by this manifest, to use as the backing file.
 */
export interface ExternalBacking {
  /**
   * The backing file. Stored in the image relative to the image's own folder, unless given as an absolute path.
   */
  path: string;
  /**
   * The backing file's format, always stored explicitly in the image.
   */
  format: 'qcow2' | 'raw' | 'qed' | 'vmdk' | 'vdi' | 'vhdx' | 'vpc' | 'parallels' | 'dmg' | 'cloop' | 'bochs' | 'luks';
}
