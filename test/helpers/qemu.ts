// Real qemu-img/qemu-io helpers for integration tests: small images in a temporary folder,
// checked with qemu-img compare / check / info / map. Nothing here is mocked.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

export const MiB = 1024 * 1024;
/** The `chainform` command as npm installs it (bin/chainform, which runs dist/cli.cjs). */
const CHAINFORM = new URL('../../bin/chainform', import.meta.url).pathname;

/** A fresh temporary folder; `cleanup` removes it. */
export async function tempFolder(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'chainform-test-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Runs qemu-img and fails the test on a non-zero exit. */
export async function qemuImg(...args: string[]): Promise<string> {
  const result = await execa('qemu-img', args, { cwd: '/' });
  return result.stdout;
}

/** Runs qemu-io commands (`write -P 0xaa 0 1M`, `write -z ...`) on an image. */
export async function qemuIo(format: string, file: string, ...commands: string[]): Promise<void> {
  await execa('qemu-io', ['-f', format, ...commands.flatMap((c) => ['-c', c]), file]);
}

/** `qemu-img compare` exit code: 0 identical, 1 different. */
export async function compareImages(a: string, formatA: string, b: string, formatB: string): Promise<number> {
  const result = await execa('qemu-img', ['compare', '-f', formatA, '-F', formatB, a, b], {
    reject: false,
  });
  return result.exitCode ?? -1;
}

/** `qemu-img check` exit code: 0 clean. */
export async function checkImage(file: string, format: string): Promise<number> {
  const result = await execa('qemu-img', ['check', '-q', '-f', format, file], { reject: false });
  return result.exitCode ?? -1;
}

/** `qemu-img info --output=json` of one image (not its chain). */
export async function imageInfo(file: string, format: string): Promise<Record<string, unknown>> {
  return JSON.parse(await qemuImg('info', '--output=json', '-U', '-f', format, file));
}

/** Bytes of guest data stored in the top layer itself (allocated data, not zero clusters). */
export async function topLayerDataBytes(file: string, format: string): Promise<number> {
  const rows = JSON.parse(await qemuImg('map', '--output=json', '-f', format, file)) as {
    length: number;
    depth: number;
    data: boolean;
  }[];
  return rows.filter((r) => r.depth === 0 && r.data).reduce((sum, r) => sum + r.length, 0);
}

async function sha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** sha256 of each file, to prove inputs are untouched. */
export async function checksums(files: string[]): Promise<Record<string, string>> {
  const entries = await Promise.all(files.map(async (f) => [f, await sha256(f)] as const));
  return Object.fromEntries(entries);
}

/** Runs the `chainform` command (the built CLI) without a terminal. */
export function chainform(cwd: string, ...args: string[]) {
  return chainformWithEnv(cwd, {}, ...args);
}

/** {@link chainform} with more environment variables (e.g. a PATH that logs qemu-img runs). */
export async function chainformWithEnv(cwd: string, env: Record<string, string>, ...args: string[]) {
  const result = await execa(CHAINFORM, ['--no-color', ...args], {
    cwd,
    reject: false,
    stdin: 'ignore',
    env,
  });
  return {
    exitCode: result.exitCode ?? -1,
    stdout: String(result.stdout),
    stderr: String(result.stderr),
  };
}

/**
 * A qcow2 chain in `dir`: `names[0]` is the base, each next one an overlay on the one before,
 * named relatively (`<name>.qcow2`). Returns the absolute paths, base first.
 */
export async function qcow2Chain(dir: string, names: readonly string[], size = '4M'): Promise<string[]> {
  const paths: string[] = [];
  for (const [i, name] of names.entries()) {
    const path = join(dir, `${name}.qcow2`);
    const below = i > 0 ? ['-b', `${names[i - 1]}.qcow2`, '-F', 'qcow2'] : [];
    await qemuImg('create', '-q', '-f', 'qcow2', ...below, path, ...(i > 0 ? [] : [size]));
    paths.push(path);
  }
  return paths;
}
