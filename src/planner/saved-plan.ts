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

/** What a step does, as far as running it goes: its commands, helpers, files and order. */
function stepSignature(step: Plan['steps'][number]): string {
  return JSON.stringify([
    step.kind,
    step.path,
    step.dependsOn,
    step.finishAfter ?? null,
    step.temporaryPath ?? null,
    step.renameOnto ?? null,
    step.extraTemporaries ?? [],
    (step.helpers ?? []).map((h) => h.argv),
    step.commands.map((c) => [c.argv, c.check === true]),
    (step.otherwise ?? []).map((c) => c.argv),
  ]);
}

/** How the saved plan differs from the one made now (steps and retired files); empty: the same. */
export function planDifferences(saved: Plan, now: Plan): string[] {
  const reasons: string[] = [];
  const savedSteps = new Map(saved.steps.map((s) => [s.id, stepSignature(s)]));
  const nowSteps = new Map(now.steps.map((s) => [s.id, stepSignature(s)]));
  for (const [id, signature] of savedSteps) {
    if (!nowSteps.has(id)) reasons.push(`step ${id} is no longer needed`);
    else if (nowSteps.get(id) !== signature) reasons.push(`step ${id} would run differently now`);
  }
  for (const id of nowSteps.keys()) if (!savedSteps.has(id)) reasons.push(`a new step ${id} is needed`);
  const order = (plan: Plan) => plan.steps.map((s) => s.id).join(' ');
  if (reasons.length === 0 && order(saved) !== order(now)) reasons.push('the steps would run in another order');
  if (JSON.stringify([...saved.retire].sort()) !== JSON.stringify([...now.retire].sort())) {
    reasons.push('the files to retire differ');
  }
  return reasons;
}
