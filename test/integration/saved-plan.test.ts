// Saved plans: `plan --out` writes a file that matches schemas/saved-plan.schema.json; `show`
// prints it; `apply plan.json` runs exactly it, and refuses it when the manifest or any file it
// was made from changed since, saying what changed and writing nothing.
import { readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { savedPlanSchemaPath } from '../../src/planner/saved-plan-schema.js';
import { chainform, compareImages } from '../helpers/qemu.js';
import { templateAndCopy } from '../helpers/template-copy.js';
import { useWorkspace } from '../helpers/workspace.js';

describe('saved plans', () => {
  const ws = useWorkspace(async (dir) => {
    const { template, copy } = await templateAndCopy(dir, 'out');
    return [template, copy];
  });

  it('saves a plan that matches its schema, shows it, and applies exactly it', async () => {
    const { dir } = ws;
    const planned = await chainform(dir, 'plan', 'm.yaml', '--out', 'plan.json');
    expect(planned.exitCode, planned.stderr).toBe(0);
    const saved = JSON.parse(await readFile(join(dir, 'plan.json'), 'utf8'));
    const schema = JSON.parse(await readFile(savedPlanSchemaPath, 'utf8'));
    const validate = new Ajv2020({ strict: true, allowUnionTypes: true }).compile(schema);
    expect(validate(saved), JSON.stringify(validate.errors)).toBe(true);
    expect(Object.keys(saved.files)).toEqual(
      expect.arrayContaining([join(dir, 'template.raw'), join(dir, 'full.raw')]),
    );

    const shown = await chainform(dir, 'show', 'plan.json');
    expect(shown.stdout).toContain(`Saved plan for ${join(dir, 'm.yaml')}`);
    expect(shown.stdout).toContain('vm:diff');
    expect(shown.stdout).toContain('It still applies');
    expect(shown.exitCode).toBe(0);

    const applied = await chainform(dir, 'apply', 'plan.json', '--yes');
    expect(applied.exitCode, applied.stderr).toBe(0);
    expect(applied.stdout).toContain('Apply complete: 2 steps done');
    expect(await compareImages(join(dir, 'out/vm.qcow2'), 'qcow2', join(dir, 'full.raw'), 'raw')).toBe(0);
  });

  it('refuses a stale plan, saying what changed, and writes nothing', async () => {
    const { dir } = ws;
    expect((await chainform(dir, 'plan', 'm.yaml', '--out', 'plan.json')).exitCode).toBe(0);
    // An input touched since the plan was made: same bytes, but nobody can tell without reading.
    const later = new Date(Date.now() + 5_000);
    await utimes(join(dir, 'full.raw'), later, later);
    const stale = await chainform(dir, 'apply', 'plan.json', '--yes');
    expect(stale.exitCode).toBe(1);
    expect(stale.stderr).toContain('error: the saved plan plan.json is stale; nothing was changed:');
    expect(stale.stderr).toContain(`  - ${join(dir, 'full.raw')} was modified (its modification time changed)`);
    expect(await readdir(dir)).not.toContain('out');

    expect((await chainform(dir, 'plan', 'm.yaml', '--out', 'plan.json')).exitCode).toBe(0);
    await writeFile(join(dir, 'm.yaml'), `${await readFile(join(dir, 'm.yaml'), 'utf8')}# edited\n`);
    const edited = await chainform(dir, 'apply', 'plan.json', '--yes');
    expect(edited.exitCode).toBe(1);
    expect(edited.stderr).toContain(`  - the manifest ${join(dir, 'm.yaml')} changed`);
    const shown = await chainform(dir, 'show', 'plan.json');
    expect(shown.stdout).toContain('It is stale');
    // A script can tell: only a plan `apply` would run exits 0.
    expect(shown.exitCode).toBe(1);
  });

  it('never runs commands edited into a saved plan: planning again must give the same steps', async () => {
    const { dir } = ws;
    expect((await chainform(dir, 'plan', 'm.yaml', '--out', 'plan.json')).exitCode).toBe(0);
    const saved = JSON.parse(await readFile(join(dir, 'plan.json'), 'utf8'));
    saved.plan.steps[0].commands[0].argv = ['touch', join(dir, 'pwned')];
    await writeFile(join(dir, 'plan.json'), JSON.stringify(saved));
    const result = await chainform(dir, 'apply', 'plan.json', '--yes');
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain('  - step base:convert would run differently now');
    expect(await readdir(dir)).not.toContain('pwned');
  });

  it('never overwrites a file that is not a saved plan, and reports a folder that does not exist', async () => {
    const { dir } = ws;
    const onManifest = await chainform(dir, 'plan', 'm.yaml', '--out', 'm.yaml');
    expect(onManifest.exitCode).toBe(1);
    expect(onManifest.stderr).toContain('error: m.yaml exists and is not a saved plan; choose another file');
    const noFolder = await chainform(dir, 'plan', 'm.yaml', '--out', 'nodir/plan.json');
    expect(noFolder.exitCode).toBe(1);
    expect(noFolder.stderr).toMatch(/^error: cannot write nodir\/plan\.json: ENOENT/m);
    expect(noFolder.stderr).not.toContain('internal error');
  });

  it('refuses a file that only claims to be a saved plan', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'fake.json'), '{"kind": "chainform-saved-plan", "formatVersion": 1}\n');
    const result = await chainform(dir, 'apply', 'fake.json', '--yes');
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain('fake.json is not a chainform saved plan: the file must have required property');
  });
});
