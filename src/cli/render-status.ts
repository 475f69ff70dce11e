// `chainform status`: one line per image (in sync, or how it drifts), then a verdict line.
import type { Drift, DriftState } from '../planner/drift.js';
import { plural, shownPath } from './format.js';
import type { Styler } from './style.js';

const LABEL: Record<DriftState, string> = {
  'in-sync': 'in sync',
  missing: 'missing',
  rebuild: 'to be rebuilt (its source, or an image it is built on, changed)',
  modified: 'modified since chainform built it, or not built by it',
  'in-use': 'in use by another process',
  'wrong-backing': 'wrong backing',
  'wrong-options': 'wrong format or options',
  'wrong-shape': 'wrong shape (standalone or not)',
};

/** Renders drift; `manifest` is named in the hint as the user typed it. */
export function renderStatus(drift: Drift, style: Styler, cwd: string, manifest: string): string {
  const show = (path: string) => shownPath(cwd, path);
  const width = Math.max(...drift.images.map((i) => i.id.length));
  const lines = drift.images.map((image) => {
    const label = LABEL[image.state];
    const state = image.state === 'in-sync' ? style.paint('green', label) : style.paint('yellow', label);
    const why = image.reasons.length ? style.paint('dim', `  (${image.reasons.join('; ')})`) : '';
    return `${image.id.padEnd(width)}  ${show(image.path)}: ${state}${why}`;
  });
  for (const path of drift.retire) lines.push(`${style.paint('red', 'still to retire')}: ${show(path)}`);
  const drifting = drift.images.filter((i) => i.state !== 'in-sync').length;
  const unknown = drift.notChecked?.length ?? 0;
  // An output changed by hand or in use stops the plan: apply would refuse, not run steps.
  const blocked = unknown > 0 || drift.images.some((i) => i.state === 'modified' || i.state === 'in-use');
  const next = blocked
    ? `\`chainform plan ${manifest}\` says what stops it and how to go on.`
    : `\`chainform plan ${manifest}\` shows the steps; \`chainform apply ${manifest}\` runs them.`;
  lines.push('');
  lines.push(
    drift.inSync
      ? style.paint(
          'green',
          `In sync: ${plural(drift.images.length, 'image')} ${drift.images.length === 1 ? 'matches' : 'match'} ${manifest}.`,
        )
      : `Drift: ${drifting} of ${plural(drift.images.length + unknown, 'image')} ${drifting === 1 ? 'differs' : 'differ'}${unknown ? ` (${unknown} not checked: planning stops at the drift above)` : ''}${drift.retire.length ? `, ${plural(drift.retire.length, 'file')} to retire` : ''}. ${next}`,
  );
  return lines.join('\n');
}
