import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs build script without type declarations.
import { generateManifestTypes } from '../../scripts/gen-types.mjs';

describe('manifest types', () => {
  it('are exactly what the schema generates (run `npm run gen:types` after editing the schema)', async () => {
    const committed = await readFile(new URL('../../src/manifest/manifest.generated.ts', import.meta.url), 'utf8');
    expect(committed).toBe(await generateManifestTypes());
  });
});
