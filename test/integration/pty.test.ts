// apply in a real pseudo-terminal (util-linux `script`): the live listr2 view shows each step's
// percentage from qemu-img -p and ends with the summary; a terminal that reports no width gets
// plain lines instead of one character per line.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { templateAndCopy } from '../helpers/template-copy.js';
import { useWorkspace } from '../helpers/workspace.js';

const CLI = new URL('../../dist/cli.js', import.meta.url).pathname;

/** Runs `command` in a pseudo-terminal in `dir`; returns what the terminal received, ANSI stripped. */
async function inTerminal(dir: string, command: string): Promise<string> {
  const log = join(dir, 'terminal.log');
  await execa('script', ['-qfec', command, log], { cwd: dir, stdin: 'ignore' });
  // biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI escape sequences are the point.
  return (await readFile(log, 'utf8')).replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '');
}

describe('apply on a terminal', () => {
  const ws = useWorkspace(async (dir) => {
    const { template, copy } = await templateAndCopy(dir, 'out');
    return [template, copy];
  });

  it('shows live percentages per step and ends with the summary', async () => {
    const screen = await inTerminal(ws.dir, `stty cols 100 rows 30; node ${CLI} apply m.yaml --yes`);
    expect(screen).toMatch(/vm:diff: \d+% of ~[\d.]+ MiB/);
    expect(screen).toMatch(/vm:diff: done in \d+\.\ds/);
    expect(screen).toMatch(/Apply complete: 2 steps done in \d+\.\ds\.\s*$/m);
  });

  it('falls back to plain lines when the terminal reports no width', async () => {
    const screen = await inTerminal(ws.dir, `stty cols 0; node ${CLI} apply m.yaml --yes`);
    expect(screen).toContain('started  base:convert');
    expect(screen).toMatch(/done {5}vm:diff \(\d+\.\ds, [\d.]+ KiB on disk\)/);
    expect(screen).toContain('Apply complete: 2 steps done');
  });
});
