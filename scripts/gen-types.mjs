// Regenerates src/manifest/manifest.generated.ts from schemas/manifest.schema.json,
// so the TypeScript types are derived from the schema and never written twice.
// `--check` exits 1 when the committed file is stale (CI and a unit test use it).
import { readFile, writeFile } from 'node:fs/promises';
import { compile } from 'json-schema-to-typescript';

const schemaUrl = new URL('../schemas/manifest.schema.json', import.meta.url);
const outUrl = new URL('../src/manifest/manifest.generated.ts', import.meta.url);

export async function generateManifestTypes() {
  const schema = JSON.parse(await readFile(schemaUrl, 'utf8'));
  return compile(schema, 'Manifest', {
    bannerComment: '/* Generated from schemas/manifest.schema.json by `npm run gen:types`. Do not edit. */',
    additionalProperties: false,
    unreachableDefinitions: false,
    style: { singleQuote: true },
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const generated = await generateManifestTypes();
  if (process.argv.includes('--check')) {
    const current = await readFile(outUrl, 'utf8').catch(() => '');
    if (current !== generated) {
      console.error('src/manifest/manifest.generated.ts is stale: run `npm run gen:types`.');
      process.exit(1);
    }
  } else {
    await writeFile(outUrl, generated);
  }
}
