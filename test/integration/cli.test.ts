// The CLI as a user meets it: exit codes, diagnostics, refusals, dry runs and failures.

import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { apply, plan } from '../../src/api.js';
import { type CommandRunner, ExecaRunner } from '../../src/qemu/runner.js';
import { chainform, chainformWithEnv, compareImages, qemuImg, qemuIo } from '../helpers/qemu.js';
import { useWorkspace } from '../helpers/workspace.js';

const ws = useWorkspace(async (dir) => {
  await mkdir(join(dir, 'in'));
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'in/base.raw'), '16M');
  await qemuIo('raw', join(dir, 'in/base.raw'), 'write -P 0x01 0 8M');
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'in/copy.raw'), '16M');
  await qemuIo('raw', join(dir, 'in/copy.raw'), 'write -P 0x01 0 8M', 'write -P 0x02 1M 64k');
  await writeFile(
    join(dir, 'manifest.yaml'),
    `version: 1
images:
  base:
    path: out/base.qcow2
    from: { path: in/base.raw, format: raw }
  copy:
    path: out/copy.qcow2
    from: { path: in/copy.raw, format: raw }
    backing: base
`,
  );
  return [join(dir, 'in/base.raw'), join(dir, 'in/copy.raw')];
});

describe('chainform CLI', () => {
  it('validate: exit 0 and a one-line summary for a good manifest', async () => {
    const { dir } = ws;
    const r = await chainform(dir, 'validate', 'manifest.yaml');
    expect(r).toMatchObject({ exitCode: 0, stdout: 'manifest.yaml: valid (2 images)' });
  });

  it('validate: exit 1 with file:line:column, a code frame and no stack trace', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'bad.yaml'), 'version: 1\nimages:\n  a:\n    path: a.qcow2\n    backing: ghost\n');
    const r = await chainform(dir, 'validate', 'bad.yaml');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      'bad.yaml:5:14: error: image "a" is backed by "ghost", which is not an image of this manifest [unknown-backing]',
    );
    expect(r.stderr).toContain('> 5 |     backing: ghost');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('validate: a missing manifest file is a clear error', async () => {
    const { dir } = ws;
    const r = await chainform(dir, 'validate', 'nope.yaml');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('cannot read manifest');
    expect(r.stderr).toContain('does not exist');
  });

  it('validate: files that are not manifests get one clear line, never a dump', async () => {
    const { dir } = ws;
    await writeFile(join(dir, 'empty.yaml'), '');
    await writeFile(join(dir, 'binary.yaml'), Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]));
    await mkdir(join(dir, 'folder.yaml'));
    const list = Array.from({ length: 40 }, (_, i) => `  img${i}: { path: [${i}] }`).join('\n');
    await writeFile(join(dir, 'many.yaml'), `version: 1\nimages:\n${list}\n`);
    const expectations: [string, string][] = [
      ['empty.yaml', 'error: the manifest is empty [manifest-not-mapping]'],
      ['binary.yaml', 'is not a YAML manifest: it contains binary data'],
      ['folder.yaml', 'it is a directory, not a manifest file'],
      ['many.yaml', '... and 20 more problems not shown.'],
    ];
    for (const [file, message] of expectations) {
      const r = await chainform(dir, 'validate', file);
      expect(r.exitCode, file).toBe(1);
      expect(r.stderr, file).toContain(message);
      expect(r.stderr, file).not.toMatch(/\n\s+at /);
    }
  });

  it('plan: a base that does not exist is named at its line', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'nobase.yaml'),
      'version: 1\nimages:\n  b:\n    path: out/b.qcow2\n    from: { path: in/copy.raw, format: raw }\n    backing: { path: in/nobase.qcow2, format: qcow2 }\n',
    );
    const r = await chainform(dir, 'plan', 'nobase.yaml');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('nobase.yaml:6:14: error: the backing of "b" does not exist');
  });

  it('--version prints the package version', async () => {
    const { dir } = ws;
    const r = await chainform(dir, '--version');
    expect(r).toMatchObject({ exitCode: 0, stdout: '0.1.0' });
  });

  it('plan: --detailed-exitcode gives 2 with changes; --json has the documented shape', async () => {
    const { dir } = ws;
    const r = await chainform(dir, 'plan', 'manifest.yaml', '--detailed-exitcode');
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toContain('Plan: 2 to create, 0 unchanged; 2 steps');
    const json = JSON.parse((await chainform(dir, 'plan', 'manifest.yaml', '--json')).stdout);
    expect(json.kind).toBe('chainform-plan');
    expect(json.formatVersion).toBe(1);
    expect(json.steps.map((s: { id: string; dependsOn: string[] }) => [s.id, s.dependsOn])).toEqual([
      ['base:convert', []],
      ['copy:diff', ['base:convert']],
    ]);
    expect(existsSync(join(dir, 'out'))).toBe(false);
  });

  it('plan: an inspection failure names the file and the declared format', async () => {
    const { dir } = ws;
    await writeFile(
      join(dir, 'wrong.yaml'),
      'version: 1\nimages:\n  a: { path: out/a.qcow2, from: { path: in/base.raw, format: qcow2 } }\n',
    );
    const r = await chainform(dir, 'plan', 'wrong.yaml');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/wrong\.yaml:3:\d+: error: cannot read .*in\/base\.raw as qcow2/);
  });

  it('apply: without a terminal it needs --yes, and changes nothing', async () => {
    const { dir } = ws;
    const r = await chainform(dir, 'apply', 'manifest.yaml');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('apply needs --yes when not run on a terminal');
    expect(existsSync(join(dir, 'out'))).toBe(false);
  });

  it('apply --output json: one JSON object per line, from the plan to the summary', async () => {
    const { dir } = ws;
    const r = await chainform(dir, 'apply', 'manifest.yaml', '--yes', '--output', 'json');
    expect(r.exitCode, r.stderr).toBe(0);
    const records = r.stdout.split('\n').map((line) => JSON.parse(line) as { type: string; step?: string });
    expect(records[0]!.type).toBe('plan');
    expect(records.at(-1)).toMatchObject({ type: 'summary', ok: true, done: ['base:convert', 'copy:diff'] });
    const lifecycle = records.filter((e) => ['step-started', 'step-finished'].includes(e.type));
    expect(lifecycle.map((e) => `${e.type} ${e.step}`)).toEqual([
      'step-started base:convert',
      'step-finished base:convert',
      'step-started copy:diff',
      'step-finished copy:diff',
    ]);
    expect(records.some((e) => e.type === 'step-progress')).toBe(true);
  });

  it('apply --dry-run --output json stays JSON and still closes with a summary', async () => {
    const r = await chainform(ws.dir, 'apply', 'manifest.yaml', '--dry-run', '--output', 'json');
    const records = r.stdout.split('\n').map((line) => JSON.parse(line) as { type: string; dryRun?: boolean });
    expect(records.map((e) => e.type)).toEqual(['plan', 'summary']);
    expect(records[1]!.dryRun).toBe(true);
  });

  it('apply --quiet prints only the closing summary', async () => {
    const { dir } = ws;
    const r = await chainform(dir, 'apply', 'manifest.yaml', '--yes', '--quiet');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Apply complete: 2 steps done in \d+\.\ds\.$/);
  });

  it('apply --quiet runs no qemu-img measure when even the worst case fits; a shown plan is measured', async () => {
    const { dir } = ws;
    // qemu-img found first on PATH: logs its subcommand, then runs the real one.
    const bin = join(dir, 'bin');
    await mkdir(bin);
    const log = join(dir, 'qemu-img.log');
    const real = (await execa('sh', ['-c', 'command -v qemu-img'])).stdout;
    await writeFile(join(bin, 'qemu-img'), `#!/bin/sh\necho "$1" >> '${log}'\nexec '${real}' "$@"\n`, { mode: 0o755 });
    const env = { PATH: `${bin}:${process.env.PATH}` };
    const subcommands = async () => (await readFile(log, 'utf8')).trim().split('\n');

    const quiet = await chainformWithEnv(dir, env, 'apply', 'manifest.yaml', '--yes', '--quiet');
    expect(quiet.exitCode, quiet.stderr).toBe(0);
    expect(await subcommands()).toContain('convert');
    expect(await subcommands()).not.toContain('measure');
    expect(await compareImages(join(dir, 'out/copy.qcow2'), 'qcow2', join(dir, 'in/copy.raw'), 'raw')).toBe(0);

    await rm(join(dir, 'out'), { recursive: true });
    await rm(log);
    const shown = await chainformWithEnv(dir, env, 'apply', 'manifest.yaml', '--yes');
    expect(shown.exitCode, shown.stderr).toBe(0);
    expect(await subcommands()).toContain('measure');
  });

  it('a disk image or a binary file given as the manifest or saved plan is refused in a few lines', async () => {
    const { dir } = ws;
    const image = join(dir, 'disk.raw');
    await qemuImg('create', '-q', '-f', 'raw', image, '2G'); // sparse
    const qcow2 = join(dir, 'disk.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', qcow2, '64M');
    for (const file of [image, qcow2]) {
      for (const command of ['validate', 'plan', 'apply', 'show']) {
        const r = await chainform(dir, command, file);
        expect(r.exitCode, `${command} ${file}`).toBe(1);
        expect(r.stdout.length + r.stderr.length, `${command} ${file}`).toBeLessThan(1000);
        // biome-ignore lint/suspicious/noControlCharactersInRegex: control bytes are what is kept out.
        expect(r.stderr).not.toMatch(/^\s+at |[\u0000-\u0008\u000b-\u001f\u007f]/m);
      }
    }
    const r = await chainform(dir, 'validate', image);
    expect(r.stderr).toMatch(/is not a manifest: it holds 2147483648 bytes \[manifest-too-large\]/);
  });

  it('apply --dry-run prints the commands and writes nothing', async () => {
    const { dir } = ws;
    const r = await chainform(dir, 'apply', 'manifest.yaml', '--dry-run');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('$ qemu-img convert -p -f raw -O qcow2');
    expect(r.stdout).toContain('Dry run: nothing was changed.');
    expect(existsSync(join(dir, 'out'))).toBe(false);
    expect(existsSync(join(dir, '.chainform'))).toBe(false);
  });

  it('apply: a failing step removes its temporary file, starts nothing more, and says so', async () => {
    const { dir } = ws;
    // Real qemu-img throughout, except that the safe rebase of `copy` is made to fail.
    const real = new ExecaRunner();
    const failing: CommandRunner = {
      run: (argv, options) =>
        argv[1] === 'rebase'
          ? Promise.resolve({ exitCode: 1, stdout: '', stderr: 'qemu-img: injected failure\n' })
          : real.run(argv, options),
    };
    const planned = await plan(join(dir, 'manifest.yaml'));
    if (!planned.ok) throw new Error('plan failed');
    const summary = await apply(planned, { runner: failing });
    expect(summary.ok).toBe(false);
    expect(summary.done).toEqual(['base:convert']);
    expect(summary.failed.map((f) => [f.stepId, f.message])).toEqual([
      ['copy:diff', 'qemu-img rebase failed (exit 1): injected failure'],
    ]);
    expect((await readdir(join(dir, 'out'))).sort()).toEqual(['base.qcow2']);
    // A later, healthy run completes from there and plans only the missing image.
    const resumed = await chainform(dir, 'apply', 'manifest.yaml', '--yes');
    expect(resumed.exitCode).toBe(0);
    expect(resumed.stdout).toContain('= base');
    expect(await compareImages(join(dir, 'out/copy.qcow2'), 'qcow2', join(dir, 'in/copy.raw'), 'raw')).toBe(0);
  });

  it('apply: the summary of a failed step quotes its command as plan does, so it can be pasted', async () => {
    const { dir } = ws;
    // qemu-img found first on PATH: its rebase fails, everything else is the real one.
    const bin = join(dir, 'bin');
    await mkdir(bin);
    const real = (await execa('sh', ['-c', 'command -v qemu-img'])).stdout;
    await writeFile(
      join(bin, 'qemu-img'),
      `#!/bin/sh\nif [ "$1" = rebase ]; then echo 'qemu-img: injected failure' >&2; exit 1; fi\nexec '${real}' "$@"\n`,
      { mode: 0o755 },
    );
    // Outputs in a folder whose name needs quoting.
    const spaced = join(dir, 'my vms');
    await mkdir(spaced);
    const manifest = (await readFile(join(dir, 'manifest.yaml'), 'utf8')).replaceAll('in/', '../in/');
    await writeFile(join(spaced, 'manifest.yaml'), manifest);
    const r = await chainformWithEnv(spaced, { PATH: `${bin}:${process.env.PATH}` }, 'apply', 'manifest.yaml', '--yes');
    expect(r.exitCode).toBe(1);
    const command = r.stdout.split('\n').find((line) => line.startsWith('    command: '));
    expect(command).toContain(
      `'driver=qcow2,file.filename=${join(spaced, 'out/.copy.qcow2.chainform-tmp')},detect-zeroes=on'`,
    );
    expect(command).toMatch(/^ {4}command: qemu-img rebase /);
  });

  it('--help lists the commands, and each command has examples', async () => {
    const { dir } = ws;
    const top = await chainform(dir, '--help');
    expect(top.exitCode).toBe(0);
    for (const command of ['validate', 'plan', 'apply']) expect(top.stdout).toContain(command);
    const applyHelp = await chainform(dir, 'apply', '--help');
    expect(applyHelp.stdout).toContain('chainform apply manifest.yaml --yes --jobs 4');
  });

  it('rejects a bad --jobs value with a usage error', async () => {
    const { dir } = ws;
    const r = await chainform(dir, 'apply', 'manifest.yaml', '--jobs', 'lots');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('expected a whole number from 1 to 64');
  });
});
