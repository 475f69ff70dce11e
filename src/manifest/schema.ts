// The manifest JSON Schema, loaded once from schemas/ (the single source of truth for its shape).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Absolute path of schemas/manifest.schema.json, from both src/ (tests) and dist/ (built). */
export const manifestSchemaPath = fileURLToPath(new URL('../../schemas/manifest.schema.json', import.meta.url));

/** The parsed manifest schema. */
export const manifestSchema: Record<string, unknown> = JSON.parse(readFileSync(manifestSchemaPath, 'utf8'));
