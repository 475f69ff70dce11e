import { readFile } from 'node:fs/promises';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs build script without type declarations.
import { generateManifestTypes } from '../../scripts/gen-types.mjs';
import { manifestSchema } from '../../src/manifest/schema.js';

describe('manifest types', () => {
  it('are exactly what the schema generates (run `npm run gen:types` after editing the schema)', async () => {
    const committed = await readFile(new URL('../../src/manifest/manifest.generated.ts', import.meta.url), 'utf8');
    expect(committed).toBe(await generateManifestTypes());
  });
});

describe('manifest schema', () => {
  it('is a valid JSON Schema 2020-12 document (chainform skips this check at start-up)', () => {
    const ajv = new Ajv2020({ strict: true, allowUnionTypes: true });
    expect(ajv.validateSchema(manifestSchema), JSON.stringify(ajv.errors)).toBe(true);
    // A broken schema is caught: the check can fail.
    expect(ajv.validateSchema({ ...manifestSchema, type: 'no-such-type' })).toBe(false);
  });
});
