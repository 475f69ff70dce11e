// Deletes the files a manifest retires, last of all: after every step succeeded and the layout
// was verified. Right before deleting, the chains of all the manifest's images are read again;
// a retired file that any of them still reads (as a layer or a data file, by name or by inode),
// or that a running VM holds open, is kept and reported instead.
import { open, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Diagnostic } from '../diagnostics/diagnostic.js';
import { writeLockConflict } from '../inspect/inspect-layout.js';
import { readChain } from '../inspect/read-chain.js';
import type { ResolvedManifest } from '../manifest/resolve-manifest.js';
import type { CommandRunner } from '../qemu/runner.js';
import { fileIdentity, fingerprintOf } from '../state/fingerprint.js';

/** What retiring did. */
export interface RetireOutcome {
  retired: string[];
  /** Files left in place, and why. */
  kept: { path: string; reason: string }[];
}

/** Paths and inode identities of every file the manifest's images read, or why they are unknown. */
async function filesInUse(
  manifest: ResolvedManifest,
  runner: CommandRunner,
): Promise<{ paths: Map<string, string>; identities: Map<string, string> } | { error: string }> {
  const paths = new Map<string, string>();
  const identities = new Map<string, string>();
  for (const image of manifest.images) {
    const diagnostics: Diagnostic[] = [];
    const layers = await readChain(image.path, image.format, runner, diagnostics);
    if (!layers) return { error: `the chain of "${image.id}" cannot be read: ${diagnostics[0]?.message ?? 'unknown'}` };
    const files = [
      image.path,
      ...layers.slice(1).map((layer) => layer.filename),
      ...layers.flatMap((layer) => (layer.qcow2.dataFile ? [layer.qcow2.dataFile] : [])),
    ];
    for (const file of files) {
      paths.set(file, image.id);
      const print = await fingerprintOf(file);
      if (print) identities.set(fileIdentity(print), image.id);
    }
  }
  return { paths, identities };
}

/** Deletes `retire` (absolute paths) unless something still uses a file. */
export async function retireFiles(
  manifest: ResolvedManifest,
  retire: readonly string[],
  runner: CommandRunner,
): Promise<RetireOutcome> {
  const outcome: RetireOutcome = { retired: [], kept: [] };
  if (retire.length === 0) return outcome;
  const inUse = await filesInUse(manifest, runner);
  for (const path of retire) {
    if ('error' in inUse) {
      outcome.kept.push({ path, reason: inUse.error });
      continue;
    }
    const print = await fingerprintOf(path);
    if (!print) continue; // already gone
    const user = inUse.paths.get(path) ?? inUse.identities.get(fileIdentity(print));
    if (user) {
      outcome.kept.push({ path, reason: `image "${user}" still reads it` });
      continue;
    }
    const holder = await writeLockConflict(path, 'raw', runner);
    if (holder) {
      outcome.kept.push({ path, reason: `a process holds it open: ${holder}` });
      continue;
    }
    await rm(path);
    const folder = await open(dirname(path), 'r');
    await folder.sync().finally(() => folder.close());
    outcome.retired.push(path);
  }
  return outcome;
}
