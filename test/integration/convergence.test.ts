// Convergence: random reshapes of one small starting layout, each planned and applied for real.
// A manifest chainform accepts must be reached in one apply: the next plan has nothing to do,
// every image presents what the manifest says (its source, or for the image reshaped in place
// its own content as it was), sits on the declared backing and passes qemu-img check, and no
// file the manifest only reads changed. A manifest it refuses must be refused with a located
// diagnostic, and nothing on disk may change. Cases come from a seeded PRNG: a failure prints
// the case's seed and manifest. CI runs the fixed master seed; CHAINFORM_CONVERGENCE_SEED and
// CHAINFORM_CONVERGENCE_CASES explore more.
import { readdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { expect, it } from 'vitest';
import {
  chainform,
  checkImage,
  checksums,
  compareImages,
  imageInfo,
  qemuImg,
  qemuIo,
  tempFolder,
} from '../helpers/qemu.js';
import { mulberry32 } from '../helpers/random.js';

const MASTER_SEED = Number(process.env.CHAINFORM_CONVERGENCE_SEED ?? 0xc0de5eed);
const CASES = Number(process.env.CHAINFORM_CONVERGENCE_CASES ?? 24);

/** Files of the starting layout a manifest may only read, unless it reshapes them in place. */
const READ_ONLY = ['base.qcow2', 'base2.qcow2', 'alt.qcow2', 'other.qcow2', 'disk.raw', 'snap.qcow2', 'vm.qcow2'];

/**
 * The refusals this generator's manifests can rightly meet. Any other code fails the test, to be
 * looked at: a refusal of a manifest chainform could reach is a defect too.
 */
const EXPECTED_REFUSALS = new Set(['backing-larger', 'grow-needs-zero-clusters', 'needs-compat-1.1', 'shrink-refused']);

/**
 * The starting layout: base.qcow2 and its identical copy base2.qcow2, alt.qcow2 (other content),
 * vm.qcow2 on base.qcow2 (data of its own and zeros over base data), other.qcow2 (standalone)
 * disk.raw, and snap.qcow2 with internal snapshots s0 and s1. The *.ref.raw files hold what vm
 * and each state of snap.qcow2 present, to check outputs against.
 */
async function makeLayout(dir: string): Promise<void> {
  const at = (name: string) => join(dir, name);
  await qemuImg('create', '-q', '-f', 'qcow2', at('base.qcow2'), '8M');
  await qemuIo('qcow2', at('base.qcow2'), 'write -P 0x11 0 2M');
  await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', at('base.qcow2'), at('base2.qcow2'));
  await qemuImg('create', '-q', '-f', 'qcow2', at('alt.qcow2'), '8M');
  await qemuIo('qcow2', at('alt.qcow2'), 'write -P 0x44 1M 1M');
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', at('vm.qcow2'));
  await qemuIo('qcow2', at('vm.qcow2'), 'write -P 0x22 3M 512k', 'write -z 0 64k');
  await qemuImg('create', '-q', '-f', 'qcow2', at('other.qcow2'), '8M');
  await qemuIo('qcow2', at('other.qcow2'), 'write -P 0x33 5M 1M');
  await qemuImg('create', '-q', '-f', 'raw', at('disk.raw'), '8M');
  await qemuIo('raw', at('disk.raw'), 'write -P 0x55 2M 1M');
  await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', at('vm.qcow2'), at('vm.ref.raw'));
  await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', at('base.qcow2'), at('base.ref.raw'));
  await qemuImg('create', '-q', '-f', 'qcow2', at('snap.qcow2'), '8M');
  await qemuIo('qcow2', at('snap.qcow2'), 'write -P 0x71 0 1M');
  await qemuImg('snapshot', '-c', 's0', at('snap.qcow2'));
  await qemuIo('qcow2', at('snap.qcow2'), 'write -P 0x72 512k 1M', 'write -P 0x73 6M 64k');
  await qemuImg('snapshot', '-c', 's1', at('snap.qcow2'));
  await qemuIo('qcow2', at('snap.qcow2'), 'write -z 0 64k', 'write -P 0x74 7M 64k');
  for (const state of ['s0', 's1']) {
    const from = ['-l', `snapshot.name=${state}`, at('snap.qcow2')];
    await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', ...from, at(`${state}.ref.raw`));
  }
  await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', at('snap.qcow2'), at('snap.ref.raw'));
}

/** One image of a generated manifest, and what it must present once applied. */
interface Planned {
  id: string;
  path: string;
  format: 'qcow2' | 'raw';
  /** What it must present: a file and its format. */
  content: { path: string; format: string };
  /** The backing it must sit on: a file path (relative to the case folder), or none. */
  backing: string | null;
  /** Its virtual size once applied. */
  size: number;
  /** qcow2 facts `qemu-img info` must show once applied, as it names them. */
  facts: Record<string, unknown>;
  yaml: string;
}

const MiB = 1024 * 1024;
/** Every image of the starting layout is 8 MiB. */
const START_SIZE = 8 * MiB;

/** The `qemu-img info` facts that the options this generator uses ask for. */
function factsOf(options: string): Record<string, unknown> {
  if (options.startsWith('compat')) return { compat: '0.10' };
  if (options.startsWith('lazy_refcounts')) return { 'lazy-refcounts': true };
  if (options.startsWith('cluster_size')) return { cluster: 131072 };
  if (options.startsWith('data_file')) return { 'data-file': options.slice('data_file: '.length) };
  return {};
}

/** A random manifest over the starting layout. */
function generate(random: () => number): Planned[] {
  const pick = <T>(choices: readonly T[]): T => choices[Math.floor(random() * choices.length)] as T;
  const images: Planned[] = [];
  // Sometimes the base is reshaped in place too (vm.qcow2 sits on it).
  const base = random() < 0.3;
  if (base) {
    const options = pick(['', 'lazy_refcounts: true', 'compat: "0.10"']);
    const size = pick(['', '12M', '16M']);
    const fields = ['path: base.qcow2', options ? `options: { ${options} }` : '', size ? `size: ${size}` : ''];
    images.push({
      id: 'base',
      path: 'base.qcow2',
      format: 'qcow2',
      content: { path: 'base.ref.raw', format: 'raw' },
      backing: null,
      size: size ? Number.parseInt(size, 10) * MiB : START_SIZE,
      facts: factsOf(options),
      yaml: `  base: { ${fields.filter(Boolean).join(', ')} }`,
    });
  }
  if (random() < 0.8) {
    const backing = pick(['base.qcow2', 'base2.qcow2', 'alt.qcow2', null, ...(base ? ['base'] : [])] as const);
    const options = pick(['', 'compat: "0.10"', 'lazy_refcounts: true', 'cluster_size: 131072']);
    const size = pick(['', '', '12M', '16M']);
    const fields = [
      'path: vm.qcow2',
      backing === 'base' ? 'backing: base' : backing ? `backing: { path: ${backing}, format: qcow2 }` : '',
      options ? `options: { ${options} }` : '',
      size ? `size: ${size}` : '',
    ].filter(Boolean);
    images.push({
      id: 'vm',
      path: 'vm.qcow2',
      format: 'qcow2',
      // A new backing of other content is allowed: the image keeps presenting what it did.
      content: { path: 'vm.ref.raw', format: 'raw' },
      backing: backing === 'base' ? 'base.qcow2' : backing,
      size: size ? Number.parseInt(size, 10) * MiB : START_SIZE,
      facts: factsOf(options),
      yaml: `  vm: { ${fields.join(', ')} }`,
    });
  }
  const copies = Math.floor(random() * 4);
  for (let n = 1; n <= copies; n++) {
    const source = pick([
      { path: 'vm.qcow2', format: 'qcow2', content: 'vm.ref.raw' },
      { path: 'vm.qcow2', format: 'qcow2', content: 'vm.ref.raw' },
      { path: 'other.qcow2', format: 'qcow2' },
      { path: 'base.qcow2', format: 'qcow2', content: 'base.ref.raw' },
      { path: 'disk.raw', format: 'raw' },
      { path: 'snap.qcow2', format: 'qcow2', snapshot: 's0', content: 's0.ref.raw' },
      { path: 'snap.qcow2', format: 'qcow2', snapshot: 's1', content: 's1.ref.raw' },
      { path: 'snap.qcow2', format: 'qcow2', content: 'snap.ref.raw' },
    ]);
    const format = random() < 0.85 ? 'qcow2' : 'raw';
    const path = `out/c${n}.${format === 'raw' ? 'raw' : 'qcow2'}`;
    const earlier = images.filter((image) => image.format === 'qcow2');
    const backingChoice =
      format === 'raw' ? null : pick([null, null, { file: 'base2.qcow2' }, ...earlier.map((image) => ({ image }))]);
    const options =
      format === 'raw'
        ? ''
        : pick(['', '', 'cluster_size: 131072', 'compat: "0.10"', `data_file: out/c${n}.data`, 'lazy_refcounts: true']);
    const size = pick(['', '', '', '16M']);
    const backingYaml =
      backingChoice === null
        ? ''
        : 'file' in backingChoice
          ? `backing: { path: ${backingChoice.file}, format: qcow2 }`
          : `backing: ${backingChoice.image.id}`;
    const fields = [
      `path: ${path}`,
      `format: ${format}`,
      `from: { path: ${source.path}, format: ${source.format}${source.snapshot ? `, snapshot: ${source.snapshot}` : ''} }`,
      backingYaml,
      options ? `options: { ${options} }` : '',
      size ? `size: ${size}` : '',
    ].filter(Boolean);
    images.push({
      id: `c${n}`,
      path,
      format,
      content: source.content ? { path: source.content, format: 'raw' } : source,
      backing: backingChoice === null ? null : 'file' in backingChoice ? backingChoice.file : backingChoice.image.path,
      // A copy of an image the manifest grows (not of a snapshot) has its new size.
      size: size
        ? Number.parseInt(size, 10) * MiB
        : ((source.snapshot === undefined ? images.find((image) => image.path === source.path)?.size : undefined) ??
          START_SIZE),
      facts: factsOf(options),
      yaml: `  c${n}: { ${fields.join(', ')} }`,
    });
  }
  return images;
}

/** Every file under `dir`, relative to it, for checksums of a refused case. */
async function allFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath ?? e.path, e.name));
}

/** What is wrong with the applied case in `dir`, as readable lines (empty: nothing). */
async function problemsAfterApply(dir: string, images: readonly Planned[]): Promise<string[]> {
  const problems: string[] = [];
  const again = await chainform(dir, 'plan', 'm.yaml', '--detailed-exitcode');
  if (again.exitCode !== 0)
    problems.push(`the next plan is not empty (exit ${again.exitCode}):\n${again.stdout}${again.stderr}`);
  for (const image of images) {
    const path = join(dir, image.path);
    const content = join(dir, image.content.path);
    const compared = await compareImages(path, image.format, content, image.content.format);
    if (compared !== 0) problems.push(`${image.id} does not present ${image.content.path} (compare exit ${compared})`);
    const info = await imageInfo(path, image.format);
    if (info['virtual-size'] !== image.size)
      problems.push(`${image.id} is ${String(info['virtual-size'])} bytes, not ${image.size}`);
    if (image.format === 'qcow2') {
      const checked = await checkImage(path, 'qcow2');
      if (checked !== 0) problems.push(`${image.id} fails qemu-img check (exit ${checked})`);
      const backing = info['full-backing-filename'];
      const found = typeof backing === 'string' ? relative(dir, backing) : null;
      if (found !== image.backing)
        problems.push(`${image.id} sits on ${found ?? 'nothing'}, not ${image.backing ?? 'nothing'}`);
      const shown: Record<string, unknown> = {
        ...(info['format-specific'] as { data: Record<string, unknown> }).data,
        cluster: info['cluster-size'],
      };
      for (const [fact, want] of Object.entries(image.facts)) {
        const have = fact === 'data-file' && typeof shown[fact] === 'string' ? relative(dir, shown[fact]) : shown[fact];
        if (have !== want) problems.push(`${image.id} has ${fact} ${String(have)}, not ${String(want)}`);
      }
    }
  }
  const left = (await allFiles(dir)).filter((file) => file.includes('.chainform-tmp'));
  if (left.length > 0) problems.push(`temporary files left: ${left.join(', ')}`);
  return problems;
}

it(
  `reaches every accepted manifest in one apply, and refuses the others cleanly (${CASES} seeded cases)`,
  async () => {
    const failures: string[] = [];
    const outcomes = { applied: 0, refused: 0 };
    for (let n = 0; n < CASES; n++) {
      const seed = (MASTER_SEED + n * 0x9e3779b9) >>> 0;
      const images = generate(mulberry32(seed));
      if (images.length === 0) continue;
      const manifest = `version: 1\nimages:\n${images.map((image) => image.yaml).join('\n')}\n`;
      const { dir, cleanup } = await tempFolder();
      try {
        await makeLayout(dir);
        await writeFile(join(dir, 'm.yaml'), manifest);
        const onlyRead = READ_ONLY.filter((name) => !images.some((image) => image.path === name));
        const readOnly = await checksums(onlyRead.map((name) => join(dir, name)));
        const report = (what: string) => failures.push(`case ${n} (seed ${seed}): ${what}\n${manifest}`);
        const everything = await checksums(await allFiles(dir));
        const planned = await chainform(dir, 'plan', 'm.yaml');
        if (planned.exitCode !== 0) {
          outcomes.refused++;
          const errors = planned.stderr.split('\n').filter((line) => / error: /.test(line));
          if (planned.exitCode !== 1 || errors.length === 0)
            report(`plan failed (exit ${planned.exitCode}):\n${planned.stderr}`);
          for (const line of errors) {
            const code = /^m\.yaml:\d+:\d+: error: .* \[([a-z0-9.-]+)\]$/.exec(line)?.[1];
            if (code === undefined) report(`an error without a location or code: ${line}`);
            else if (!EXPECTED_REFUSALS.has(code))
              report(`refused with ${code}, which this layout should not meet:\n${line}`);
          }
          if (/internal error|\n\s+at /.test(planned.stderr)) report(`plan crashed:\n${planned.stderr}`);
          // apply must refuse the same way, and write nothing (its state folder included).
          const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
          if (applied.exitCode !== 1) report(`apply of a refused manifest exited ${applied.exitCode}`);
          const after = await checksums(await allFiles(dir));
          if (JSON.stringify(after) !== JSON.stringify(everything)) report('a refused apply changed files');
          continue;
        }
        const jobs = [[], ['--jobs', '1'], ['--jobs', '4']][n % 3] as string[];
        const applied = await chainform(dir, 'apply', 'm.yaml', '--yes', ...jobs);
        if (applied.exitCode !== 0) {
          report(`apply failed (exit ${applied.exitCode}):\n${applied.stdout}${applied.stderr}`);
          continue;
        }
        outcomes.applied++;
        for (const problem of await problemsAfterApply(dir, images)) report(problem);
        const after = await checksums(onlyRead.map((name) => join(dir, name)));
        if (JSON.stringify(after) !== JSON.stringify(readOnly)) report('a file the manifest only reads changed');
      } finally {
        await cleanup();
      }
    }
    expect(failures, failures.join('\n\n')).toEqual([]);
    // The generator must keep exercising both outcomes, or the test stops testing one of them.
    expect(outcomes.applied, JSON.stringify(outcomes)).toBeGreaterThan(CASES / 3);
    expect(outcomes.refused, JSON.stringify(outcomes)).toBeGreaterThan(0);
  },
  20 * 60_000,
);
