import { readFile } from 'node:fs/promises';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs build script without type declarations.
import { DERIVED } from '../../scripts/gen-from-schemas.mjs';
import { manifestSchema } from '../../src/manifest/schema.js';

describe('files derived from the schemas', () => {
  for (const [path, generate] of Object.entries(DERIVED as Record<string, () => Promise<string>>)) {
    it(`${path} is exactly what the schema generates (run \`npm run gen:schemas\` after editing a schema)`, async () => {
      const committed = await readFile(new URL(`../../${path}`, import.meta.url), 'utf8');
      expect(committed).toBe(await generate());
    });
  }
});

describe('manifest schema', () => {
  it('is a valid JSON Schema 2020-12 document (chainform skips this check at start-up)', () => {
    const ajv = new Ajv2020({ strict: true, allowUnionTypes: true });
    expect(ajv.validateSchema(manifestSchema), JSON.stringify(ajv.errors)).toBe(true);
    // A broken schema is caught: the check can fail.
    expect(ajv.validateSchema({ ...manifestSchema, type: 'no-such-type' })).toBe(false);
  });
});
