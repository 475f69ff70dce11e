// A saved plan (`plan --out plan.json`): the plan plus what it was made from, so that
// `apply plan.json` runs exactly what was reviewed, or refuses when anything it was made from
// changed since (the manifest's bytes, or any file it inspected, by fingerprint). Pure: the
// caller reads the disk; this only compares.
import { type Fingerprint, sameFingerprint } from '../state/fingerprint.js';
import type { Plan } from './plan-types.js';

/** The saved-plan file (its JSON Schema is schemas/saved-plan.schema.json). */
export interface SavedPlan {
  kind: 'chainform-saved-plan';
  /** Bumped on any incompatible change of this file's shape. */
  formatVersion: 1;
  createdAt: string;
  chainformVersion: string;
  manifest: { path: string; sha256: string };
  /** Every file the plan was made from, by absolute path; null: it did not exist. */
  files: Record<string, Fingerprint | null>;
  plan: Plan;
}

/** What is on disk now, as the caller read it. */
export interface CurrentState {
  manifestSha256: string | null;
  files: Record<string, Fingerprint | null>;
}

function describeChange(before: Fingerprint | null, now: Fingerprint | null): string {
  if (before && !now) return 'is gone';
  if (!before && now) return 'exists now';
  if (before?.dev !== now?.dev || before?.ino !== now?.ino) return 'is another file now (device or inode changed)';
  if (before?.size !== now?.size) return `changed size (${before?.size} -> ${now?.size} bytes)`;
  return 'was modified (its modification time changed)';
}

/** Why the saved plan is stale, one reason per line; empty when it still applies. */
export function stalenessOf(saved: SavedPlan, current: CurrentState): string[] {
  const reasons: string[] = [];
  if (current.manifestSha256 === null) reasons.push(`the manifest ${saved.manifest.path} is gone`);
  else if (current.manifestSha256 !== saved.manifest.sha256)
    reasons.push(`the manifest ${saved.manifest.path} changed`);
  for (const [path, before] of Object.entries(saved.files)) {
    const now = current.files[path] ?? null;
    if (before === null ? now === null : sameFingerprint(before, now)) continue;
    reasons.push(`${path} ${describeChange(before, now)}`);
  }
  return reasons;
}
