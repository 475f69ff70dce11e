// The saved-plan JSON Schema (schemas/saved-plan.schema.json), compiled once, and the check a
// file read back must pass before anything in it is trusted or run.
import { readFileSync } from 'node:fs';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { packageFile } from '../package-files.js';

/** Absolute path of schemas/saved-plan.schema.json. */
export const savedPlanSchemaPath = packageFile('schemas/saved-plan.schema.json');

/** The compiled schema, made on first use: most commands never read a saved plan. */
let compiled: ValidateFunction | undefined;

/** Why `data` is not a saved plan (the first schema error), or undefined when it is one. */
export function savedPlanProblem(data: unknown): string | undefined {
  compiled ??= new Ajv2020({ strict: true, allowUnionTypes: true }).compile(
    JSON.parse(readFileSync(savedPlanSchemaPath, 'utf8')) as Record<string, unknown>,
  );
  const validate = compiled;
  if (validate(data)) return undefined;
  const first = validate.errors?.[0];
  return first ? `${first.instancePath || 'the file'} ${first.message ?? 'is invalid'}` : 'it is invalid';
}
