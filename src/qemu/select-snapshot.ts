// Which internal snapshot a name-or-id selects, by the rule chainform uses everywhere: a name,
// else an id. Shared by the planner (which explains a failed choice) and inspection (which reads
// the chosen snapshot's tables).
import type { ImageInfo } from './image-info.js';

/** The snapshot a value selects: found (by name or by id), missing, or ambiguous. */
export type SnapshotSelection =
  | { kind: 'found'; id: string; by: 'name' | 'id' }
  | { kind: 'missing' }
  | { kind: 'ambiguous' };

/**
 * By name, or else by id. A value that is one snapshot's name and another's id is ambiguous, as
 * are duplicate names.
 */
export function selectSnapshot(snapshots: ImageInfo['snapshots'], wanted: string): SnapshotSelection {
  const byName = snapshots.filter((s) => s.name === wanted);
  const byId = snapshots.filter((s) => s.id === wanted);
  const named = byName[0];
  const numbered = byId[0];
  if (byName.length === 1 && named && (!numbered || numbered === named))
    return { kind: 'found', id: named.id, by: 'name' };
  if (byName.length === 0 && numbered) return { kind: 'found', id: numbered.id, by: 'id' };
  return byName.length > 1 || (named !== undefined && numbered !== undefined)
    ? { kind: 'ambiguous' }
    : { kind: 'missing' };
}
