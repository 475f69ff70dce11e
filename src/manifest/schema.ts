// The manifest JSON Schema, loaded once from schemas/ (the single source of truth for its shape).
import { readFileSync } from 'node:fs';
import { packageFile } from '../package-files.js';

/** Absolute path of schemas/manifest.schema.json. */
export const manifestSchemaPath = packageFile('schemas/manifest.schema.json');

/** The parsed manifest schema. */
export const manifestSchema: Record<string, unknown> = JSON.parse(readFileSync(manifestSchemaPath, 'utf8'));
