// Regenerates what is derived from schemas/, so nothing is written twice:
// - src/manifest/manifest.generated.ts: the manifest's TypeScript types;
// - src/manifest/manifest-validator.generated.ts and src/planner/saved-plan-validator.generated.ts:
//   ajv's validation code for each schema, compiled here once instead of at every start of the CLI
//   (compiling the manifest schema and loading ajv's compiler took a tenth of a second per command).
// `--check` exits 1 when a committed file is stale (CI and a unit test use it).
import { readFile, writeFile } from 'node:fs/promises';
import { Ajv2020 } from 'ajv/dist/2020.js';
import standaloneCode from 'ajv/dist/standalone/index.js';
import { compile } from 'json-schema-to-typescript';

const COMMAND = '`npm run gen:schemas`';
const schemaOf = async (name) => JSON.parse(await readFile(new URL(`../schemas/${name}`, import.meta.url), 'utf8'));

/** The manifest's TypeScript types. */
export async function generateManifestTypes() {
  return compile(await schemaOf('manifest.schema.json'), 'Manifest', {
    bannerComment: `/* Generated from schemas/manifest.schema.json by ${COMMAND}. Do not edit. */`,
    additionalProperties: false,
    unreachableDefinitions: false,
    style: { singleQuote: true },
  });
}

/**
 * ajv's standalone validator for `schemaName`, as an ES module exporting `validate`. ajv writes
 * its runtime helpers (ajv/dist/runtime/*) as `require("...").default` even in ES module output;
 * they become static imports here, so that esbuild puts them in the command's bundle (a require
 * made at run time would resolve and compile them from node_modules on every start). A helper
 * module is CommonJS with `exports.default`: Node's import gives its `module.exports`, while a
 * bundler may give `default` itself, so the helper is taken from `.default` when there is one.
 * The output is TypeScript only by name (`@ts-nocheck`), so that tsc copies it into dist/.
 */
export async function generateValidator(schemaName, ajvOptions) {
  const ajv = new Ajv2020({ ...ajvOptions, strict: true, allowUnionTypes: true, code: { source: true, esm: true } });
  const code = standaloneCode(ajv, ajv.compile(await schemaOf(schemaName)));
  const required = [...code.matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1]);
  const unexpected = required.filter((module) => !module.startsWith('ajv/dist/runtime/'));
  if (unexpected.length > 0) throw new Error(`${schemaName}: ajv's code requires ${unexpected.join(', ')}`);
  const helpers = [...new Set(required)].map((module, i) => ({ module, name: `ajvRuntime${i}` }));
  let body = code.replace(/^"use strict";/, '');
  for (const { module, name } of helpers) body = body.replaceAll(`require("${module}").default`, name);
  // Any other form of require would fail only when the validator runs, under ES modules.
  if (/\brequire\(/.test(body)) throw new Error(`${schemaName}: ajv's code uses require() in a form not handled here`);
  return [
    `// Generated from schemas/${schemaName} by ${COMMAND} (ajv standalone code). Do not edit.`,
    '// @ts-nocheck',
    ...helpers.flatMap(({ module, name }) => [
      `import ${name}Module from '${module}.js';`,
      `const ${name} = ${name}Module.default ?? ${name}Module;`,
    ]),
    body,
    '',
  ].join('\n');
}

/** Every derived file: path relative to the repository, and a function making its text. */
export const DERIVED = {
  'src/manifest/manifest.generated.ts': generateManifestTypes,
  // verbose: errors carry their parent schema, which the "allowed keys here" hint reads.
  'src/manifest/manifest-validator.generated.ts': () =>
    generateValidator('manifest.schema.json', { allErrors: true, verbose: true }),
  'src/planner/saved-plan-validator.generated.ts': () => generateValidator('saved-plan.schema.json', {}),
};

if (import.meta.url === `file://${process.argv[1]}`) {
  let stale = false;
  for (const [path, generate] of Object.entries(DERIVED)) {
    const url = new URL(`../${path}`, import.meta.url);
    const generated = await generate();
    if (!process.argv.includes('--check')) {
      await writeFile(url, generated);
    } else if ((await readFile(url, 'utf8').catch(() => '')) !== generated) {
      console.error(`${path} is stale: run ${COMMAND}.`);
      stale = true;
    }
  }
  if (stale) process.exit(1);
}
