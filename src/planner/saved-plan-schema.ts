// The saved-plan JSON Schema (schemas/saved-plan.schema.json), compiled by ajv at build time
// (scripts/gen-from-schemas.mjs), and the check a file read back must pass before anything in it
// is trusted or run.
import type { ValidateFunction } from 'ajv/dist/2020.js';
import { packageFile } from '../package-files.js';
import { validate as generatedValidator } from './saved-plan-validator.generated.js';

/** Absolute path of schemas/saved-plan.schema.json. */
export const savedPlanSchemaPath = packageFile('schemas/saved-plan.schema.json');

const validate = generatedValidator as ValidateFunction;

/** Why `data` is not a saved plan (the first schema error), or undefined when it is one. */
export function savedPlanProblem(data: unknown): string | undefined {
  if (validate(data)) return undefined;
  const first = validate.errors?.[0];
  return first ? `${first.instancePath || 'the file'} ${first.message ?? 'is invalid'}` : 'it is invalid';
}
