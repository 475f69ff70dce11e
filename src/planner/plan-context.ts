// What the planner stages share: the context of one planning run, and the content plan of an image.
import type { Diagnostic } from '../diagnostics/diagnostic.js';
import {
  backingFiles,
  type ChainLayer,
  chainFiles,
  type InspectedFile,
  type InspectedLayout,
} from '../inspect/inspect-layout.js';
import type { ResolvedManifest } from '../manifest/resolve-manifest.js';
import { fileIdentity } from '../state/fingerprint.js';
import { type ContentIdentity, contentKey } from './content-identity.js';
import type { ImagePlan } from './plan-types.js';
import type { ContentFile } from './recipes.js';

/** What a planned image will be once its steps ran: what later images back onto. */
export interface FinalImage {
  key: string;
  path: string;
  format: string;
  pathIsAbsolute: boolean;
  /** Its files once the plan has run, top first: the image, its data file if any, its backing chain. */
  chain: string[];
  /** Its external data file once the plan has run, when it has one (declared, or kept in place). */
  dataFile?: string;
  chainBytes: number;
  virtualSize: number;
  producedBy: string | undefined;
}

export interface PlanContext {
  manifest: ResolvedManifest;
  layout: InspectedLayout;
  identity: ContentIdentity;
  final: Map<string, FinalImage>;
  diagnostics: Diagnostic[];
}

/**
 * A key per file: its device and inode where inspection saw it, else its path. Two names of one
 * file (a symlink, a hard link) get the same key, as the ledger's fingerprints see them.
 */
export function fileKeys(layout: InspectedLayout): (path: string) => string {
  const identities = new Map<string, string>();
  for (const file of layout.files.values()) {
    if (file.fingerprint) identities.set(file.path, fileIdentity(file.fingerprint));
    for (const layer of file.chain ?? []) {
      if (layer.fingerprint) identities.set(layer.path, fileIdentity(layer.fingerprint));
      if (layer.dataFilePath && layer.dataFileFingerprint)
        identities.set(layer.dataFilePath, fileIdentity(layer.dataFileFingerprint));
    }
  }
  return (path) => identities.get(path) ?? path;
}

/**
 * Whether a path names the data file of `layer`: its own path, or another name of that file (a
 * symlink, a hard link) as inspection saw them.
 */
export function namesDataFileOf(layer: ChainLayer, layout: InspectedLayout): (path: string) => boolean {
  return (path) => {
    if (path === layer.dataFilePath) return true;
    const named = layout.files.get(path)?.fingerprint;
    const own = layer.dataFileFingerprint;
    return !!named && !!own && fileIdentity(named) === fileIdentity(own);
  };
}

export function keyOfLayer(layer: ChainLayer | undefined): string | undefined {
  return layer?.fingerprint ? contentKey(fileIdentity(layer.fingerprint), layer.format) : undefined;
}

export function layerPaths(chain: readonly ChainLayer[]): string[] {
  return chain.map((layer) => layer.path);
}

export function contentOf(file: InspectedFile, chain: ChainLayer[]): ContentFile {
  const top = chain[0] as ChainLayer;
  return {
    path: file.path,
    format: file.format,
    chain: chainFiles(chain),
    backingFiles: backingFiles(chain),
    virtualSize: top.virtualSize,
    topBytes: top.actualSize,
    chainBytes: chain.reduce((sum, layer) => sum + layer.actualSize, 0),
  };
}

/** Where the image's content comes from, and whether the file at its path already has it. */
export type ContentPlan = {
  kind: 'in-place' | 'build';
  content: ContentFile;
  chain: ChainLayer[];
  key: string;
  action: ImagePlan['action'];
  /**
   * Set on an output the ledger shows is up to date: its own content key (to be declared equal
   * to the source's), and the plan to rebuild it from its source should it turn out stale.
   */
  ledger?: { outputKey: string; rebuild: ContentPlan };
};
