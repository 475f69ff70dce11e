// The manifest schema serves editors: it has an $id, every field has a description and examples
// (its own, or those of the definition it refers to), and every example and ready-made manifest
// starts with a yaml-language-server line whose schema path resolves.
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { manifestSchema } from '../../src/manifest/schema.js';

type Node = Record<string, unknown>;
const ROOT = new URL('../../', import.meta.url).pathname;

/** `path: missing keyword` for every property without a description or examples. */
function undocumented(schema: Node): string[] {
  const defs = (schema.$defs ?? {}) as Record<string, Node>;
  const target = (node: Node): Node => {
    const ref = node.$ref;
    return typeof ref === 'string' ? (defs[ref.replace('#/$defs/', '')] ?? node) : node;
  };
  const gaps: string[] = [];
  const walk = (node: Node, path: string) => {
    for (const [key, value] of Object.entries((node.properties ?? {}) as Record<string, Node>)) {
      for (const keyword of ['description', 'examples']) {
        if (!(keyword in value) && !(keyword in target(value))) gaps.push(`${path}.${key}: ${keyword}`);
      }
      walk(value, `${path}.${key}`);
    }
  };
  walk(schema, '');
  for (const [name, def] of Object.entries(defs)) walk(def, `$defs.${name}`);
  return gaps;
}

describe('schema for editors', () => {
  it('has an $id, and a description and examples on every field', () => {
    expect(manifestSchema.$id).toMatch(/^https:\/\//);
    expect(undocumented(manifestSchema)).toEqual([]);
  });

  it('every example and plan file names a schema that resolves', async () => {
    const files = [
      ...(await readdir(join(ROOT, 'plans'))).filter((f) => f.endsWith('.yaml')).map((f) => join(ROOT, 'plans', f)),
      ...(await readdir(join(ROOT, 'examples'), { recursive: true }))
        .filter((f) => f.endsWith('.yaml') && !f.includes('work/'))
        .map((f) => join(ROOT, 'examples', f)),
    ];
    expect(files.length).toBeGreaterThanOrEqual(7);
    for (const file of files) {
      const first = (await readFile(file, 'utf8')).split('\n')[0] ?? '';
      const match = /^# yaml-language-server: \$schema=(\S+)$/.exec(first);
      expect(match, file).not.toBeNull();
      const schemaPath = resolve(dirname(file), match?.[1] ?? '');
      expect(existsSync(schemaPath), `${file}: ${schemaPath}`).toBe(true);
      expect(schemaPath).toBe(join(ROOT, 'schemas/manifest.schema.json'));
    }
  });
});
