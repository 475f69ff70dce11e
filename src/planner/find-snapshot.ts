// Which internal snapshot a manifest's `from.snapshot` names. Pure: shared by `plan` and
// `validate`, which both read the snapshot list with qemu-img info.
import { type Diagnostic, error } from '../diagnostics/diagnostic.js';
import type { ResolvedImage } from '../manifest/resolve-manifest.js';
import { snapshotSelector } from '../qemu/commands.js';
import type { ImageInfo } from '../qemu/image-info.js';

/** The snapshot found, with the `-l` selector qemu needs; or why there is none. */
export type SnapshotChoice = { ok: true; id: string; selector: string } | { ok: false; diagnostic: Diagnostic };

/**
 * By name, or else by id. A value that is one snapshot's name and another's id is ambiguous, as
 * are duplicate names: the error lists what exists.
 */
export function findSnapshot(image: ResolvedImage, snapshots: ImageInfo['snapshots']): SnapshotChoice {
  const wanted = image.source?.snapshot ?? '';
  const byName = snapshots.filter((s) => s.name === wanted);
  const byId = snapshots.filter((s) => s.id === wanted);
  const named = byName[0];
  const numbered = byId[0];
  if (byName.length === 1 && named && (!numbered || numbered === named)) {
    return { ok: true, id: named.id, selector: snapshotSelector({ by: 'name', value: wanted }) };
  }
  if (byName.length === 0 && numbered) {
    return { ok: true, id: numbered.id, selector: snapshotSelector({ by: 'id', value: wanted }) };
  }
  const existing = snapshots.map((s) => `${s.name || '(no name)'} (id ${s.id})`).join(', ');
  const ambiguous = byName.length > 1 || (named !== undefined && numbered !== undefined);
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
