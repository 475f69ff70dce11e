// What each image format can do, as far as the planner needs to know.
import type { Options, OutputFormat } from '../manifest/manifest.generated.js';

/** Option names (manifest keys) each output format accepts with `qemu-img create/convert -o`. */
export const optionsByFormat: Readonly<Record<OutputFormat, ReadonlySet<keyof Options>>> = {
  qcow2: new Set([
    'cluster_size',
    'compat',
    'lazy_refcounts',
    'refcount_bits',
    'extended_l2',
    'compression_type',
    'preallocation',
    'data_file',
    'data_file_raw',
  ]),
  raw: new Set(['preallocation']),
  qed: new Set(['cluster_size']),
  vmdk: new Set(['subformat']),
  vdi: new Set(['preallocation']),
  vhdx: new Set(['subformat']),
  vpc: new Set(['subformat']),
};

/** Formats whose images can have a backing file that chainform can create and rebase. */
export const formatsWithBacking: ReadonlySet<OutputFormat> = new Set(['qcow2', 'qed']);

/** qemu-img spells compat levels two ways; this is the canonical one. */
export function canonicalCompat(compat: string): '0.10' | '1.1' {
  return compat === '0.10' || compat === 'v2' ? '0.10' : '1.1';
}

/** qcow2's default cluster size, which `qemu-img create` uses when none is given. */
export const QCOW2_DEFAULT_CLUSTER_SIZE = 65536;

/** The smallest qcow2 cluster extended L2 entries allow (qemu-img refuses smaller ones). */
export const EXTENDED_L2_MIN_CLUSTER_SIZE = 16384;

/** Whether a qcow2 image made with `options` has zero clusters: compat 1.1 has, 0.10 has not. */
export function hasZeroClusters(options: Options): boolean {
  return options.compat === undefined || canonicalCompat(options.compat) === '1.1';
}

/**
 * The options a qcow2 image asks for that only compat 1.1 (v3) can have, each as `name: value`:
 * qemu-img create and amend refuse them on a compat 0.10 image.
 */
export function compat11Features(options: Options): { name: keyof Options; text: string }[] {
  const used: [keyof Options, boolean][] = [
    ['lazy_refcounts', options.lazy_refcounts === true],
    ['extended_l2', options.extended_l2 === true],
    ['refcount_bits', options.refcount_bits !== undefined && options.refcount_bits !== 16],
    ['compression_type', options.compression_type === 'zstd'],
    ['data_file', options.data_file !== undefined],
  ];
  return used.filter(([, on]) => on).map(([name]) => ({ name, text: `${name}: ${String(options[name])}` }));
}

/** Preallocation modes each format accepts (qemu-img 7.2). */
export const preallocationByFormat: Readonly<Partial<Record<OutputFormat, readonly string[]>>> = {
  qcow2: ['off', 'metadata', 'falloc', 'full'],
  raw: ['off', 'falloc', 'full'],
  vdi: ['off', 'metadata'],
};

/** Sub-formats each format accepts. */
export const subformatsByFormat: Readonly<Partial<Record<OutputFormat, readonly string[]>>> = {
  vmdk: ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'streamOptimized'],
  vhdx: ['dynamic', 'fixed'],
  vpc: ['dynamic', 'fixed'],
};

/** Cluster sizes each format accepts: powers of two in a range. */
export const clusterSizeRange: Readonly<Partial<Record<OutputFormat, readonly [number, number]>>> = {
  qcow2: [512, 2 * 1024 * 1024],
  qed: [4096, 64 * 1024 * 1024],
};
