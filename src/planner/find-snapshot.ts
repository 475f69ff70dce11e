// Which internal snapshot a manifest's `from.snapshot` names. Pure: shared by `plan` and
// `validate`, which both read the snapshot list with qemu-img info.
import { type Diagnostic, error } from '../diagnostics/diagnostic.js';
import type { ResolvedImage } from '../manifest/resolve-manifest.js';
import { snapshotSelector } from '../qemu/commands.js';
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
