// The `chainform` command (bin/chainform, the package's bin): it must find dist/cli.cjs through
// npm's bin symlink, by its own path and from folders with spaces, pass every argument through
// untouched, and start Node without NODE_EXTRA_CA_CERTS.
import { readFileSync, realpathSync } from 'node:fs';
import { chmod, mkdir, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempFolder } from '../helpers/qemu.js';

const LAUNCHER = new URL('../../bin/chainform', import.meta.url).pathname;
/** dist/cli.cjs as the launcher names it through a symlink: beside its own real folder. */
const CLI = `${realpathSync(dirname(LAUNCHER))}/../dist/cli.cjs`;

/** The package's own package.json: its bin entry and version. */
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));

let dir = '';
let cleanup: () => Promise<void> = async () => undefined;
beforeEach(async () => {
  ({ dir, cleanup } = await tempFolder());
});
afterEach(() => cleanup());

/** A symlink to the launcher in a folder with a space, as npm links a package's bin. */
async function linkedLauncher(): Promise<string> {
  const bin = join(dir, 'node modules', '.bin');
  await mkdir(bin, { recursive: true });
  await symlink(LAUNCHER, join(bin, 'chainform'));
  return join(bin, 'chainform');
}

describe('the chainform command', () => {
  it('is the package bin, and runs the built CLI through a symlink from a folder with a space', async () => {
    expect(pkg.bin.chainform).toBe('bin/chainform');
    const r = await execa(await linkedLauncher(), ['--version'], { cwd: dir, reject: false });
    expect(r).toMatchObject({ exitCode: 0, stdout: pkg.version });
  });

  it('runs as `bash chainform` from another folder, found on PATH with no folder in its name', async () => {
    const launcher = await linkedLauncher();
    const elsewhere = join(dir, 'elsewhere');
    await mkdir(elsewhere);
    const r = await execa('bash', ['chainform', '--version'], {
      cwd: elsewhere,
      env: { PATH: `${dirname(launcher)}:${process.env.PATH}` },
      reject: false,
    });
    expect(r).toMatchObject({ exitCode: 0, stdout: pkg.version });
  });

  it('runs as `sh chainform` in its own folder, that folder not on PATH', async () => {
    const launcher = await linkedLauncher();
    const r = await execa('sh', ['chainform', '--version'], { cwd: dirname(launcher), reject: false });
    expect(r).toMatchObject({ exitCode: 0, stdout: pkg.version });
  });

  it('execs the node on PATH with dist/cli.cjs and the arguments as given, NODE_EXTRA_CA_CERTS unset', async () => {
    // A stand-in `node` that reports what it was started with instead of running anything.
    const fakeBin = join(dir, 'fake bin');
    await mkdir(fakeBin);
    const fakeNode = join(fakeBin, 'node');
    await writeFile(
      fakeNode,
      // biome-ignore lint/suspicious/noTemplateCurlyInString: sh parameter expansions
      '#!/bin/sh\nprintf "%s\\n" "certs=${NODE_EXTRA_CA_CERTS-unset}" "other=${OTHER_VAR-unset}" "pid=$$"; for a in "$@"; do printf "arg=%s\\n" "$a"; done\n',
    );
    await chmod(fakeNode, 0o755);
    const launcher = await linkedLauncher();
    const args = ['apply', 'my manifest.yaml', '--', '-x', "it's", ''];
    const child = execa(launcher, args, {
      cwd: dir,
      env: {
        PATH: `${fakeBin}:/usr/bin:/bin`,
        NODE_EXTRA_CA_CERTS: '/etc/ssl/certs/ca-certificates.crt',
        OTHER_VAR: 'kept',
      },
      extendEnv: false,
    });
    const r = await child;
    expect(realpathSync(CLI)).toBe(realpathSync(new URL('../../dist/cli.cjs', import.meta.url).pathname));
    expect(r.stdout.split('\n')).toEqual([
      'certs=unset',
      'other=kept',
      // exec, not a child: the pid the caller started is node's (signals, the apply lock's owner).
      `pid=${child.pid}`,
      'arg=--',
      `arg=${CLI}`,
      ...args.map((a) => `arg=${a}`),
    ]);
  });

  it('runs by its own path, no symlink, from a copy of the package in a folder with a space', async () => {
    // A copy (not a link) of bin/ and dist/: the launcher must take its own folder as given.
    const copy = join(dir, 'my package');
    await mkdir(join(copy, 'bin'), { recursive: true });
    await symlink(realpathSync(new URL('../../dist', import.meta.url).pathname), join(copy, 'dist'));
    await writeFile(join(copy, 'bin', 'chainform'), readFileSync(LAUNCHER));
    await chmod(join(copy, 'bin', 'chainform'), 0o755);
    const r = await execa(join(copy, 'bin', 'chainform'), ['--version'], { cwd: dir, reject: false });
    expect(r).toMatchObject({ exitCode: 0, stdout: pkg.version });
    const relative = await execa('my package/bin/chainform', ['--version'], { cwd: dir, reject: false });
    expect(relative).toMatchObject({ exitCode: 0, stdout: pkg.version });
  });

  it('runs through a symlinked bin folder, also spelled with a `.` in it', async () => {
    // Node takes `..` in the path it is given by its spelling: bin/.. must be the real folder's.
    const linkedBin = join(dir, 'my bin');
    await symlink(dirname(LAUNCHER), linkedBin);
    for (const spelled of [join(linkedBin, 'chainform'), `${linkedBin}/./chainform`]) {
      const r = await execa(spelled, ['--version'], { cwd: dir, reject: false });
      expect(r, spelled).toMatchObject({ exitCode: 0, stdout: pkg.version });
    }
    const onPath = await execa('chainform', ['--version'], {
      cwd: dir,
      env: { PATH: `${linkedBin}:${process.env.PATH}` },
      reject: false,
    });
    expect(onPath).toMatchObject({ exitCode: 0, stdout: pkg.version });
  });

  it('ends quietly when its reader closes the pipe early (`| head -1`), with no internal error', async () => {
    // The help is written in one go; head takes a line and leaves, so most writes meet a closed pipe.
    for (let run = 0; run < 5; run++) {
      const r = await execa('bash', ['-c', 'set -o pipefail; "$0" graph --help | head -1', LAUNCHER], {
        reject: false,
      });
      expect(r).toMatchObject({ exitCode: 0, stderr: '' });
      expect(r.stdout).toMatch(/^Usage: chainform graph/);
    }
  });
});
