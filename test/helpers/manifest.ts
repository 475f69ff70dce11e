// Builds manifests from YAML text in memory, for unit tests of the pure stages.

import type { Diagnostic } from '../../src/diagnostics/diagnostic.js';
import { checkManifest } from '../../src/manifest/check-manifest.js';
import { parseManifestText } from '../../src/manifest/load-manifest.js';
import { type ResolvedManifest, resolveManifest } from '../../src/manifest/resolve-manifest.js';
import { validateSchema } from '../../src/manifest/validate-schema.js';

export const MANIFEST_FILE = '/work/m/manifest.yaml';

/** Diagnostics of parse + schema for a YAML text ([] when it passes). */
export function schemaDiagnostics(text: string): Diagnostic[] {
  const parsed = parseManifestText(MANIFEST_FILE, text);
  if (!parsed.ok) return parsed.diagnostics;
  const validated = validateSchema(parsed.source);
  return validated.ok ? [] : validated.diagnostics;
}

/** A resolved manifest from YAML text that must pass the schema. */
export function resolved(text: string): ResolvedManifest {
  const parsed = parseManifestText(MANIFEST_FILE, text);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.diagnostics));
  const validated = validateSchema(parsed.source);
  if (!validated.ok) throw new Error(JSON.stringify(validated.diagnostics));
  return resolveManifest(parsed.source, validated.manifest);
}

/** Semantic diagnostics, with every file existing unless listed in `missing`. */
export function semanticDiagnostics(text: string, missing: string[] = []): Diagnostic[] {
  return checkManifest(resolved(text), { fileExists: (p) => !missing.includes(p) });
}

/** `code@line:column` for compact assertions. */
export function brief(d: Diagnostic): string {
  return `${d.code}@${d.location?.line}:${d.location?.column}`;
}
