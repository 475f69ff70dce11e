// Golden tests for what people read: every command's --help, the diagnostics of a broken
// manifest, and the plan of a fixed scenario. Output is taken without colour and with the
// temporary folder and free-space figures normalised. To accept a deliberate change, run
// `UPDATE_GOLDEN=1 npx vitest run test/cli/golden.test.ts` and review the diff in git.
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chainform } from '../helpers/qemu.js';
import { templateAndCopy } from '../helpers/template-copy.js';
import { useWorkspace } from '../helpers/workspace.js';

const GOLDEN = new URL('./golden/', import.meta.url).pathname;

async function expectGolden(name: string, actual: string): Promise<void> {
  const file = join(GOLDEN, `${name}.txt`);
  if (process.env.UPDATE_GOLDEN) await writeFile(file, actual);
  expect(existsSync(file), `${file} is missing: run with UPDATE_GOLDEN=1 and review it`).toBe(true);
  expect(actual).toBe(await readFile(file, 'utf8'));
}

/** The temporary folder as <dir>, and free-space figures, which change from run to run. */
function normalise(text: string, dir: string): string {
  return `${text.replaceAll(dir, '<dir>').replace(/Free space in (.*?): [\d.]+ \w+;/g, 'Free space in $1: <free>;')}\n`;
}

describe('golden output', () => {
  const ws = useWorkspace(async (dir) => {
    const { template, copy } = await templateAndCopy(dir, 'out');
    return [template, copy];
  });

  for (const command of ['', 'validate', 'plan', 'apply', 'status', 'graph', 'show', 'import']) {
    it(`--help${command ? ` of ${command}` : ''}`, async () => {
      const r = await chainform(ws.dir, ...(command ? [command] : []), '--help');
      expect(r.exitCode).toBe(0);
      await expectGolden(`help-${command || 'chainform'}`, normalise(r.stdout, ws.dir));
    });
  }

  it('diagnostics of a broken manifest', async () => {
    await writeFile(
      join(ws.dir, 'bad.yaml'),
      [
        'version: 1',
        'images:',
        '  web:',
        '    path: out/web.qcow2',
        '    from: { path: full.raw }',
        '    backing: ghost',
        '    colour: blue',
        '',
      ].join('\n'),
    );
    const r = await chainform(ws.dir, 'validate', 'bad.yaml');
    expect(r.exitCode).toBe(1);
    await expectGolden('diagnostics-bad-manifest', normalise(r.stderr, ws.dir));
  });

  it('the plan of the copies-to-overlays scenario', async () => {
    const r = await chainform(ws.dir, 'plan', 'm.yaml');
    expect(r.exitCode, r.stderr).toBe(0);
    await expectGolden('plan-copies-to-overlays', normalise(r.stdout, ws.dir));
  });
});
