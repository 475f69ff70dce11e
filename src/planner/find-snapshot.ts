// Which internal snapshot a manifest's `from.snapshot` names. Pure: shared by `plan` and
// `validate`, which both read the snapshot list with qemu-img info.
import { type Diagnostic, error } from '../diagnostics/diagnostic.js';
import type { ResolvedImage } from '../manifest/resolve-manifest.js';
import { resizeCommand, snapshotSelector } from '../qemu/commands.js';
import type { ImageInfo } from '../qemu/image-info.js';
import { selectSnapshot } from '../qemu/select-snapshot.js';

/** The snapshot found, with the `-l` selector qemu needs; or why there is none. */
export type SnapshotChoice = { ok: true; id: string; selector: string } | { ok: false; diagnostic: Diagnostic };

/** By name, or else by id (see selectSnapshot); the error for none or several lists what exists. */
export function findSnapshot(image: ResolvedImage, snapshots: ImageInfo['snapshots']): SnapshotChoice {
  const wanted = image.source?.snapshot ?? '';
  const selected = selectSnapshot(snapshots, wanted);
  if (selected.kind === 'found') {
    return { ok: true, id: selected.id, selector: snapshotSelector({ by: selected.by, value: wanted }) };
  }
  const existing = snapshots.map((s) => `${s.name || '(no name)'} (id ${s.id})`).join(', ');
  const ambiguous = selected.kind === 'ambiguous';
  return {
    ok: false,
    diagnostic: error(
      ambiguous ? 'snapshot-ambiguous' : 'snapshot-missing',
      ambiguous
        ? `"${wanted}" names more than one internal snapshot of ${image.source?.path}`
        : `${image.source?.path} has no internal snapshot "${wanted}"`,
      { location: image.at.fromSnapshot, hint: existing ? `it has: ${existing}` : 'it has no internal snapshots' },
    ),
  };
}

/**
 * The error for a snapshot taken when the disk was larger than the image is now (it was shrunk
 * since). qemu-img reads a snapshot at the image's current size (convert -l, qemu-nbd -l), so
 * every copy of it would silently lose what lay past that size. `recordedSize` is the size the
 * snapshot table gives; undefined (old images) leaves nothing to check.
 */
export function snapshotPastImageEnd(
  image: ResolvedImage,
  snapshot: { id: string },
  recordedSize: number | undefined,
  imageSize: number,
): Diagnostic | undefined {
  const path = image.source?.path;
  if (path === undefined || recordedSize === undefined || recordedSize <= imageSize) return undefined;
  return error(
    'snapshot-past-image-end',
    `snapshot "${image.source?.snapshot}" (id ${snapshot.id}) of ${path} was taken when the disk was ${recordedSize} bytes, but the image is now ${imageSize} bytes: qemu-img reads a snapshot at the image's current size, so a copy would lose its last ${recordedSize - imageSize} bytes`,
    {
      location: image.at.fromSnapshot,
      hint: `grow the image back first (${resizeCommand({ image: path, format: 'qcow2', size: recordedSize, shrink: false }).join(' ')}; it changes the file, so work on a copy if it must stay as it is), or leave this snapshot out`,
    },
  );
}
