// Every bundled manifest (examples/ and plans/) must validate, point editors at a schema that
// exists, and the README's demo must run and verify itself.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { checkManifest } from '../src/manifest/check-manifest.js';
import { parseManifestText } from '../src/manifest/load-manifest.js';
import { resolveManifest } from '../src/manifest/resolve-manifest.js';
import { validateSchema } from '../src/manifest/validate-schema.js';
import { tempFolder } from './helpers/qemu.js';

const root = resolve(import.meta.dirname, '..');

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'work' ? [] : yamlFiles(path);
    return entry.name.endsWith('.yaml') ? [path] : [];
  });
}

const manifests = [...yamlFiles(join(root, 'examples')), ...yamlFiles(join(root, 'plans'))];

describe('bundled manifests', () => {
  it('exist for every ready-made reshape this release supports', () => {
    expect(manifests.map((m) => m.slice(root.length + 1)).sort()).toEqual([
      'examples/copies-to-overlays/manifest.yaml',
      'plans/convert-keeping-cow.yaml',
      'plans/copies-to-overlays.yaml',
      'plans/downgrade-compat.yaml',
      'plans/linearize-snapshots.yaml',
      'plans/qcow2-with-raw-data-file.yaml',
      'plans/repoint-renamed-base.yaml',
    ]);
  });

  it.each(manifests)('%s validates (schema and semantics) and names a schema that exists', (file) => {
    const text = readFileSync(file, 'utf8');
    const schemaLine = /^# yaml-language-server: \$schema=(\S+)$/m.exec(text);
    expect(schemaLine, 'first line names the schema').not.toBeNull();
    expect(existsSync(resolve(dirname(file), schemaLine![1]!))).toBe(true);
    const parsed = parseManifestText(file, text);
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.diagnostics));
    const validated = validateSchema(parsed.source);
    if (!validated.ok) throw new Error(JSON.stringify(validated.diagnostics));
    // The input images are the user's; here only the manifest's own consistency is checked.
    const problems = checkManifest(resolveManifest(parsed.source, validated.manifest), {
      fileExists: () => true,
    });
    expect(problems).toEqual([]);
  });

  it("the README's demo runs and verifies its own result", async () => {
    const { dir, cleanup } = await tempFolder();
    try {
      const result = await execa('bash', [join(root, 'examples/copies-to-overlays/run.sh')], {
        env: { DEMO_DIR: join(dir, 'demo') },
        reject: false,
      });
      expect(result.exitCode, String(result.stderr)).toBe(0);
      expect(result.stdout).toContain('out/web.qcow2: identical to in/web.raw');
      expect(result.stdout).toContain('out/db.qcow2: identical to in/db.raw');
      expect(result.stdout).toContain('inputs unchanged (sha256)');
      expect(result.stdout).toContain('No changes: all 3 images match the manifest.');
    } finally {
      await cleanup();
    }
  });
});
