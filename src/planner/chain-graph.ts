// The chains as a graph, for `chainform graph`: the current layout (every file of the manifest's
// images and sources, each linked to its backing, with its size on disk) or the desired one (the
// manifest's images linked to their declared backings, with what the plan expects to write).
// Pure: built from the manifest, the inspected layout and the plan.
import type { InspectedLayout } from '../inspect/inspect-layout.js';
import type { ResolvedManifest } from '../manifest/resolve-manifest.js';
import type { Plan } from './plan-types.js';

/** One image file. */
export interface GraphNode {
  /** Stable key: the absolute path. */
  path: string;
  /** The manifest id, when the node is an image of the manifest. */
  id?: string;
  format: string;
  /** Bytes on disk (current), or bytes the plan expects to write (desired). */
  bytes?: number;
  /** True when `bytes` is an estimate (desired images that steps will write). */
  estimated?: boolean;
}

/** A graph of images and "is backed by" edges (from overlay to backing). */
export interface ChainGraph {
  nodes: GraphNode[];
  edges: { from: string; to: string }[];
}

/** What is on disk now: every layer of every inspected image and source chain. */
export function currentGraph(manifest: ResolvedManifest, layout: InspectedLayout): ChainGraph {
  const nodes = new Map<string, GraphNode>();
  const edges = new Map<string, { from: string; to: string }>();
  const idOf = new Map(manifest.images.map((image) => [image.path, image.id]));
  const roots = manifest.images.flatMap((image) => [image.path, ...(image.source ? [image.source.path] : [])]);
  for (const root of roots) {
    const chain = layout.files.get(root)?.chain ?? [];
    chain.forEach((layer, i) => {
      const path = layer.path;
      const id = idOf.get(path);
      nodes.set(path, { path, format: layer.format, bytes: layer.actualSize, ...(id ? { id } : {}) });
      const below = chain[i + 1];
      if (below) edges.set(`${path}\0${below.path}`, { from: path, to: below.path });
    });
  }
  return { nodes: [...nodes.values()], edges: [...edges.values()] };
}

/** What the manifest asks for, sized by the plan (unchanged images by their size on disk). */
export function desiredGraph(manifest: ResolvedManifest, layout: InspectedLayout, plan: Plan): ChainGraph {
  const nodes: GraphNode[] = [];
  const edges: { from: string; to: string }[] = [];
  const written = new Map<string, number>();
  for (const step of plan.steps) written.set(step.image, (written.get(step.image) ?? 0) + step.expectedWriteBytes);
  const external = new Map<string, GraphNode>();
  for (const image of manifest.images) {
    const changes = written.get(image.id);
    const onDisk = layout.files.get(image.path)?.chain?.[0]?.actualSize;
    nodes.push({
      path: image.path,
      id: image.id,
      format: image.format,
      ...(changes !== undefined ? { bytes: changes, estimated: true } : onDisk !== undefined ? { bytes: onDisk } : {}),
    });
    const backing = image.backing;
    if (backing?.kind === 'image') {
      const target = manifest.byId.get(backing.id);
      if (target) edges.push({ from: image.path, to: target.path });
    } else if (backing?.kind === 'file') {
      const size = layout.files.get(backing.path)?.chain?.[0]?.actualSize;
      external.set(backing.path, {
        path: backing.path,
        format: backing.format,
        ...(size !== undefined ? { bytes: size } : {}),
      });
      edges.push({ from: image.path, to: backing.path });
    }
  }
  return { nodes: [...nodes, ...external.values()], edges };
}
