// One qemu-img process per chain, not one per image. chainform first follows each chain through
// the qcow2 headers itself (image-file.ts): when every link is a plain file name with a recorded
// format, nothing in the chain can make qemu connect anywhere or guess a format, and one
// `qemu-img info --backing-chain` of the chain's top describes every layer. It runs without `-U`,
// so it also proves that no layer is held open for writing. Chains the headers cannot vouch for
// (another format, no recorded backing format, a protocol name, an unreadable header), and
// chains whose probe fails (e.g. a layer in use), are read layer by layer as before
// (read-chain.ts), which names the exact layer at fault.
import { dirname, resolve } from 'node:path';
import { chainInfoCommand } from '../qemu/commands.js';
import { looksLikeProtocol } from '../qemu/filenames.js';
import { type ImageInfo, parseImageInfo } from '../qemu/image-info.js';
import type { CommandRunner } from '../qemu/runner.js';
import type { ImageFile } from './image-file.js';

/** A file opened with a given format: the same path read as raw and as qcow2 are two layers. */
interface Link {
  path: string;
  format: string;
}

/** What the chain probes learned. */
export interface ChainProbes {
  /** The layer a successful probe described, if one did. */
  layer(path: string, format: string): ImageInfo | undefined;
  /** True when a probe opened `path` with QEMU's shared read lock: nothing held it for writing. */
  unlocked(path: string): boolean;
}

/** Longer chains are left to read-chain.ts, which reports them. */
const MAX_DEPTH = 256;

const key = (link: Link) => `${link.format}\0${link.path}`;

/**
 * The links of the chain under `top`, top first, as the headers name them; undefined when only
 * qemu-img can tell what the chain is.
 */
function linksFromHeaders(top: Link, fileOf: (path: string) => ImageFile): Link[] | undefined {
  const links: Link[] = [];
  let current: Link | undefined = top;
  while (current) {
    if (links.length === MAX_DEPTH) return undefined;
    let file: ImageFile;
    try {
      file = fileOf(current.path);
    } catch {
      return undefined; // e.g. a folder without search permission: read-chain.ts reports it
    }
    if (!file.fingerprint || file.kind !== 'file') return undefined;
    links.push(current);
    if (current.format === 'raw') return links;
    if (current.format !== 'qcow2' || !file.qcow2) return undefined;
    const { backingName, backingFormat, dataFileName } = file.qcow2;
    if (dataFileName !== undefined && looksLikeProtocol(dataFileName)) return undefined;
    if (backingName === undefined) return links;
    if (looksLikeProtocol(backingName) || backingFormat === undefined) return undefined;
    current = { path: resolve(dirname(current.path), backingName), format: backingFormat };
  }
  return links;
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
    return layer.format === link.format && resolve(layer.filename) === link.path;
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
  const chains = new Map<string, Link[]>();
  const below = new Set<string>();
  for (const root of roots) {
    if (chains.has(key(root))) continue;
    const links = linksFromHeaders(root, fileOf);
    if (!links) continue;
    chains.set(key(root), links);
    for (const link of links.slice(1)) below.add(key(link));
  }
  const layers = new Map<string, ImageInfo>();
  const unlocked = new Set<string>();
  await Promise.all(
    [...chains].map(async ([rootKey, links]) => {
      if (below.has(rootKey)) return;
      const top = links[0] as Link;
      const result = await runner.run(chainInfoCommand(top.path, top.format));
      const described = result.exitCode === 0 ? matchingLayers(result.stdout, links) : undefined;
      if (!described) return;
      described.forEach((layer, i) => {
        const link = links[i] as Link;
        layers.set(key(link), layer);
        unlocked.add(link.path);
      });
    }),
  );
  return {
    layer: (path, format) => layers.get(key({ path, format })),
    unlocked: (path) => unlocked.has(path),
  };
}
