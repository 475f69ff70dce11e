// apply in a real pseudo-terminal (util-linux `script`): the live listr2 view shows each step's
// percentage from qemu-img -p and ends with the summary; a terminal that reports no width gets
// plain lines instead of one character per line.
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuIo } from '../helpers/qemu.js';
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

  it('stops on Ctrl-C as without a terminal: the summary, exit 130, no temporary file', async () => {
    const { dir } = ws;
    const big = join(dir, 'big.raw');
    await qemuImg('create', '-q', '-f', 'raw', big, '1G');
    await qemuIo('raw', big, 'write -P 0x07 0 768M');
    await writeFile(
      join(dir, 'big.yaml'),
      'version: 1\nimages:\n  big: { path: out/big.qcow2, from: { path: big.raw, format: raw } }\n',
    );
    const log = join(dir, 'terminal.log');
    const command = `stty cols 100 rows 30; node ${CLI} apply big.yaml --yes; echo EXIT=$?`;
    const run = execa('script', ['-qfec', command, log], { cwd: dir, stdin: 'ignore' });
    // Ctrl-C once the convert runs (the terminal sends SIGINT to node and its children alike;
    // listr2 used to exit the process on it, before chainform could stop and clean up).
    let node: number | undefined;
    for (let i = 0; i < 400 && node === undefined; i++) {
      const apply = await execa('pgrep', ['-f', `^node ${CLI} apply big.yaml`], { reject: false });
      const convert = await execa('pgrep', ['-f', `qemu-img convert .*${dir}`], { reject: false });
      if (apply.stdout && convert.stdout) node = Number(apply.stdout.split('\n')[0]);
      else await new Promise((r) => setTimeout(r, 25));
    }
    expect(node).toBeDefined();
    process.kill(node as number, 'SIGINT');
    await run;
    // biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI escape sequences are the point.
    const screen = (await readFile(log, 'utf8')).replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '');
    expect(screen).toContain('Apply interrupted: 0 done, 1 stopped, 0 not started.');
    expect(screen).toContain('EXIT=130');
    expect(screen).not.toContain('internal error');
    expect(await readdir(join(dir, 'out'))).toEqual([]);
  });

  it('falls back to plain lines when the terminal reports no width', async () => {
    const screen = await inTerminal(ws.dir, `stty cols 0; node ${CLI} apply m.yaml --yes`);
    expect(screen).toContain('started  base:convert');
    expect(screen).toMatch(/done {5}vm:diff \(\d+\.\ds, [\d.]+ KiB on disk\)/);
    expect(screen).toContain('Apply complete: 2 steps done');
  });
});
