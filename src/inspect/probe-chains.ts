// One qemu-img process per chain, not one per image. chainform first follows each chain through
// the qcow2 headers itself (image-file.ts): when every link is a plain file name with a recorded
// format, nothing in the chain can make qemu connect anywhere or guess a format, and one
// `qemu-img info --backing-chain` of the chain's top describes every layer. It runs without `-U`,
// so it also proves that no layer is held open for writing. Chains the headers cannot vouch for
// (another format, no recorded backing format, a protocol name, a relative data-file name, an
// unreadable header), and
// chains whose probe fails (e.g. a layer in use), are read layer by layer as before
// (read-chain.ts), which names the exact layer at fault. A chain a probe described whole and
// undamaged needs no second reading: inspection takes its layers as they are (`chain`).
import { dirname, isAbsolute } from 'node:path';
import { chainInfoCommand } from '../qemu/commands.js';
import { backingFolderElsewhere, looksLikeProtocol } from '../qemu/filenames.js';
import { type ImageInfo, parseImageInfo } from '../qemu/image-info.js';
import type { CommandRunner } from '../qemu/runner.js';
import { resolvePath } from '../util/paths.js';
import type { ImageFile } from './image-file.js';
// Chains longer than read-chain.ts follows are left to it, which reports them.
import { layerDamage, MAX_DEPTH } from './read-chain.js';

/** A file opened with a given format: the same path read as raw and as qcow2 are two layers. */
interface Link {
  path: string;
  format: string;
}

/** What the chain probes learned. */
export interface ChainProbes {
  /** The layer a successful probe described, if one did. */
  layer(path: string, format: string): ImageInfo | undefined;
  /**
   * Every layer of the chain under `path`, top first, when a probe described them all and none
   * is damaged (read-chain.ts's layerDamage): then reading the chain again would find nothing to
   * report. Undefined otherwise.
   */
  chain(path: string, format: string): ImageInfo[] | undefined;
  /** True when a probe opened `path` with QEMU's shared read lock: nothing held it for writing. */
  unlocked(path: string): boolean;
}

const key = (link: Link) => `${link.format}\0${link.path}`;

/** Why the headers cannot vouch for a chain: only qemu-img can tell what it is. */
const UNKNOWN = 'unknown';
/** The walk went deeper than MAX_DEPTH from the root it started at (maybe not from another). */
const TOO_DEEP = 'too deep';

/**
 * A function giving the links of the chain under a link, top first, as the headers name them.
 * Each link's chain is worked out once: the 10,000 images of 1,000 chains of ten share the walk
 * of each chain's lower links instead of walking them again from every image.
 */
function chainWalker(fileOf: (path: string) => ImageFile): (top: Link) => Link[] | typeof UNKNOWN | typeof TOO_DEEP {
  const chains = new Map<string, Link[] | typeof UNKNOWN>();
  const linksUnder = (link: Link, depth: number): Link[] | typeof UNKNOWN | typeof TOO_DEEP => {
    const known = chains.get(key(link));
    // A chain found from a lower root may be too long for a root above it: reuse counts depth.
    if (known && (known === UNKNOWN || depth + known.length <= MAX_DEPTH)) return known;
    if (known || depth === MAX_DEPTH) return TOO_DEEP;
    const links = walk(link, depth);
    if (links !== TOO_DEEP) chains.set(key(link), links);
    return links;
  };
  const walk = (link: Link, depth: number): Link[] | typeof UNKNOWN | typeof TOO_DEEP => {
    let file: ImageFile;
    try {
      file = fileOf(link.path);
    } catch {
      return UNKNOWN; // e.g. a folder without search permission: read-chain.ts reports it
    }
    if (!file.fingerprint || file.kind !== 'file') return UNKNOWN;
    if (link.format === 'raw') return [link];
    if (link.format !== 'qcow2' || !file.qcow2) return UNKNOWN;
    const { backingName, backingFormat, dataFileName } = file.qcow2;
    // A relative data-file name is opened from the working directory (read-chain.ts says which);
    // a name qemu could take for a protocol is never absolute, so it is one of them.
    if (dataFileName !== undefined && !isAbsolute(dataFileName)) return UNKNOWN;
    if (dataFileName !== undefined && backingFolderElsewhere('/', dataFileName) !== undefined) return UNKNOWN;
    if (backingName === undefined) return [link];
    if (looksLikeProtocol(backingName) || backingFormat === undefined) return UNKNOWN;
    // read-chain.ts says where qemu would look instead.
    if (backingFolderElsewhere(dirname(link.path), backingName) !== undefined) return UNKNOWN;
    const below = linksUnder({ path: resolvePath(dirname(link.path), backingName), format: backingFormat }, depth + 1);
    return typeof below === 'string' ? below : [link, ...below];
  };
  return (top) => linksUnder(top, 0);
}

/** The layers of a probe's answer, when they are exactly the links the headers named. */
function matchingLayers(stdout: string, links: readonly Link[]): ImageInfo[] | undefined {
  let layers: ImageInfo[];
  try {
    layers = parseImageInfo(stdout);
  } catch {
    return undefined;
  }
  if (layers.length !== links.length) return undefined;
  const agree = layers.every((layer, i) => {
    const link = links[i] as Link;
    return layer.format === link.format && (layer.filename === link.path || resolvePath(layer.filename) === link.path);
  });
  return agree ? layers : undefined;
}

/**
 * Probes the chains under `roots` with one qemu-img process per chain top: a root that lies
 * inside another root's chain is answered by that chain's probe.
 */
export async function probeChains(
  roots: readonly Link[],
  fileOf: (path: string) => ImageFile,
  runner: CommandRunner,
): Promise<ChainProbes> {
  const linksUnder = chainWalker(fileOf);
  const chains = new Map<string, Link[]>();
  const below = new Set<string>();
  for (const root of roots) {
    if (chains.has(key(root))) continue;
    const links = linksUnder(root);
    if (typeof links === 'string') continue;
    chains.set(key(root), links);
    for (const link of links.slice(1)) below.add(key(link));
  }
  const layers = new Map<string, ImageInfo>();
  /** Per link, the probe answer its healthy chain is a tail of, and where in it the link is. */
  const healthyChains = new Map<string, { described: ImageInfo[]; at: number }>();
  const unlocked = new Set<string>();
  await Promise.all(
    [...chains].map(async ([rootKey, links]) => {
      if (below.has(rootKey)) return;
      const top = links[0] as Link;
      const result = await runner.run(chainInfoCommand(top.path, top.format));
      const described = result.exitCode === 0 ? matchingLayers(result.stdout, links) : undefined;
      if (!described) return;
      // The chains under the links below the lowest damaged layer are healthy.
      let healthyFrom = described.length;
      while (healthyFrom > 0) {
        const link = links[healthyFrom - 1] as Link;
        if (layerDamage(link.path, described[healthyFrom - 1] as ImageInfo, fileOf(link.path))) break;
        healthyFrom--;
      }
      described.forEach((layer, i) => {
        const link = links[i] as Link;
        layers.set(key(link), layer);
        if (i >= healthyFrom) healthyChains.set(key(link), { described, at: i });
        unlocked.add(link.path);
      });
    }),
  );
  return {
    layer: (path, format) => layers.get(key({ path, format })),
    chain: (path, format) => {
      const healthy = healthyChains.get(key({ path, format }));
      return healthy?.described.slice(healthy.at);
    },
    unlocked: (path) => unlocked.has(path),
  };
}
