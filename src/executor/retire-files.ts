// Deletes the files a manifest retires, last of all: after every step succeeded and the layout
// was verified. Right before deleting, the chains of the manifest's images and of the sources it
// keeps are read again; a retired file that any of them still reads (as a layer or a data file,
// by name or by inode), or that any process has open, is kept and reported instead.
import { lstat, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Diagnostic } from '../diagnostics/diagnostic.js';
import { readChain } from '../inspect/read-chain.js';
import type { ResolvedManifest } from '../manifest/resolve-manifest.js';
import type { CommandRunner } from '../qemu/runner.js';
import { type Fingerprint, fileIdentity, fingerprintOf } from '../state/fingerprint.js';

/** What retiring did. */
export interface RetireOutcome {
  retired: string[];
  /** Files left in place, and why. */
  kept: { path: string; reason: string }[];
}

/** A chain that must keep working: an image of the manifest, or a source that stays. */
interface Root {
  path: string;
  format: string;
  /** Who reads it, in words. */
  reader: string;
}

/** The images of the manifest, and every source that is not retired itself (a user's input). */
function rootsOf(manifest: ResolvedManifest): Root[] {
  const retired = new Set(manifest.retire.map((r) => r.path));
  return manifest.images.flatMap((image) => [
    { path: image.path, format: image.format, reader: `image "${image.id}"` },
    ...(image.source && !retired.has(image.source.path)
      ? [{ path: image.source.path, format: image.source.format, reader: `the source of "${image.id}"` }]
      : []),
  ]);
}

/** Paths and inode identities of every file those chains read, or why they are unknown. */
async function filesInUse(
  manifest: ResolvedManifest,
  runner: CommandRunner,
): Promise<{ paths: Map<string, string>; identities: Map<string, string> } | { error: string }> {
  const paths = new Map<string, string>();
  const identities = new Map<string, string>();
  for (const root of rootsOf(manifest)) {
    const diagnostics: Diagnostic[] = [];
    const layers = await readChain(root.path, root.format, runner, diagnostics);
    if (!layers)
      return { error: `the chain of ${root.reader} cannot be read: ${diagnostics[0]?.message ?? 'unknown'}` };
    const files = [
      root.path,
      ...layers.slice(1).map((layer) => layer.filename),
      ...layers.flatMap((layer) =>
        layer.qcow2.dataFile ? [resolve(dirname(layer.filename), layer.qcow2.dataFile)] : [],
      ),
    ];
    for (const file of files) {
      paths.set(file, root.reader);
      const print = await fingerprintOf(file);
      if (print) identities.set(fileIdentity(print), root.reader);
    }
  }
  return { paths, identities };
}

/**
 * A process that has the file open (read-only too: a VM, a qemu-nbd export, a copy running), by
 * its open descriptors in /proc; QEMU's image locks only reveal writers.
 */
async function openedBy(print: Fingerprint): Promise<string | undefined> {
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const target = await stat(`/proc/${pid}/fd/${fd}`, { bigint: true }).catch(() => undefined);
      if (target && String(target.dev) === print.dev && String(target.ino) === print.ino) {
        const command = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0')[0];
        return `process ${pid} (${command || 'unknown'}) has it open`;
      }
    }
  }
  return undefined;
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
    const info = await lstat(path);
    if (!info.isFile()) {
      outcome.kept.push({ path, reason: 'it is not a regular file (only image files are retired)' });
      continue;
    }
    const user = inUse.paths.get(path) ?? inUse.identities.get(fileIdentity(print));
    if (user) {
      outcome.kept.push({ path, reason: `${user} still reads it` });
      continue;
    }
    const holder = await openedBy(print);
    if (holder) {
      outcome.kept.push({ path, reason: holder });
      continue;
    }
    try {
      await rm(path);
      const folder = await open(dirname(path), 'r');
      await folder.sync().finally(() => folder.close());
      outcome.retired.push(path);
    } catch (e) {
      outcome.kept.push({ path, reason: `it cannot be deleted: ${(e as Error).message}` });
    }
  }
  return outcome;
}
