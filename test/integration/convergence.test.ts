// Convergence: random reshapes of one small starting layout, each planned and applied for real,
// then changed (options, sizes, images dropped) and applied again over the first one's outputs.
// A manifest chainform accepts must be reached in one apply: the next plan has nothing to do,
// every image presents what the manifest says (its source, or for an image reshaped in place
// its own content as it was), has its size and options, sits on the declared backing and passes
// qemu-img check, and no other file changed. A manifest it refuses must be refused with located
// diagnostics of the codes this layout can meet, apply must refuse it too, and nothing on disk
// may change. Cases come from a seeded PRNG: a failure prints
// the case's seed and manifest. CI runs the fixed master seed; CHAINFORM_CONVERGENCE_SEED and
// CHAINFORM_CONVERGENCE_CASES explore more.
import { lstat, mkdir, readdir, readlink, realpath, rename, symlink, writeFile } from 'node:fs/promises';
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
/** Where vm.qcow2's file lies in a case whose vm.qcow2 is a symlink (makeLayout). */
const VM_FILE = 'store/vm.qcow2';
const CASES = Number(process.env.CHAINFORM_CONVERGENCE_CASES ?? 24);

/**
 * The refusals this generator's manifests can rightly meet. Any other code fails the test, to be
 * looked at: a refusal of a manifest chainform could reach is a defect too.
 */
const EXPECTED_REFUSALS = new Set([
  'backing-larger',
  'needs-compat-1.1',
  'shrink-refused',
  // A second round may ask compat 0.10 of an output that keeps its data file (an image keeps
  // the data file it has when the manifest names none).
  'compat-downgrade-refused',
]);

/**
 * The starting layout: base.qcow2 and its identical copy base2.qcow2, alt.qcow2 (other content),
 * vm.qcow2 on base.qcow2 (data of its own and zeros over base data), other.qcow2 (standalone)
 * disk.raw, and snap.qcow2 with internal snapshots s0 and s1. The *.ref.raw files hold what vm
 * and each state of snap.qcow2 present, to check outputs against. With `vmLinked`, vm.qcow2 is a
 * symlink to store/vm.qcow2, whose relative backing name resolves only through the link.
 */
async function makeLayout(dir: string, vmLinked: boolean): Promise<void> {
  const at = (name: string) => join(dir, name);
  await qemuImg('create', '-q', '-f', 'qcow2', at('base.qcow2'), '8M');
  await qemuIo('qcow2', at('base.qcow2'), 'write -P 0x11 0 2M');
  await qemuImg('convert', '-f', 'qcow2', '-O', 'qcow2', at('base.qcow2'), at('base2.qcow2'));
  await qemuImg('create', '-q', '-f', 'qcow2', at('alt.qcow2'), '8M');
  await qemuIo('qcow2', at('alt.qcow2'), 'write -P 0x44 1M 1M');
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', at('vm.qcow2'));
  if (vmLinked) {
    await mkdir(at('store'));
    await rename(at('vm.qcow2'), at(VM_FILE));
    await symlink(VM_FILE, at('vm.qcow2'));
  }
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
  /** Its manifest fields other than options and size (path, format, from, backing). */
  fields: string[];
  /** Its options (one `key: value`, or empty) and declared size (`12M`, or empty). */
  options: string;
  declaredSize: string;
  /** For a copy: what it copies (a path of the layout) and whether it is a snapshot of it. */
  copies?: { path: string; snapshot: boolean };
  /** What it must present: a file and its format. */
  content: { path: string; format: string };
  /** The backing it must sit on: a file path (relative to the case folder), or none. */
  backing: string | null;
}

const MiB = 1024 * 1024;
/** Every image of the starting layout is 8 MiB. */
const START_SIZE = 8 * MiB;

const bytesOf = (size: string) => Number.parseInt(size, 10) * MiB;

/** Its line in the manifest. */
function yamlOf(image: Planned): string {
  const fields = [
    ...image.fields,
    image.options ? `options: { ${image.options} }` : '',
    image.declaredSize ? `size: ${image.declaredSize}` : '',
  ].filter(Boolean);
  return `  ${image.id}: { ${fields.join(', ')} }`;
}

/**
 * Its virtual size once applied: the declared one; else for a copy, its source's as qemu-img
 * shows it now (a snapshot's: the layout's), and for an image kept in place, the size it had.
 */
async function sizeOf(dir: string, image: Planned, sizeBefore: ReadonlyMap<string, number>): Promise<number> {
  if (image.declaredSize) return bytesOf(image.declaredSize);
  if (!image.copies) return sizeBefore.get(image.path) ?? START_SIZE;
  if (image.copies.snapshot) return START_SIZE;
  const format = image.copies.path.endsWith('.raw') ? 'raw' : 'qcow2';
  return Number((await imageInfo(join(dir, image.copies.path), format))['virtual-size']);
}

/** The `qemu-img info` facts that the options this generator uses ask for. */
function factsOf(options: string): Record<string, unknown> {
  if (options.startsWith('compat')) return { compat: '0.10' };
  if (options.startsWith('lazy_refcounts')) return { 'lazy-refcounts': true };
  if (options.startsWith('cluster_size')) return { cluster: 131072 };
  if (options.startsWith('data_file')) return { 'data-file': options.slice('data_file: '.length) };
  return {};
}

type Random = () => number;
const pickWith =
  (random: Random) =>
  <T>(choices: readonly T[]): T =>
    choices[Math.floor(random() * choices.length)] as T;

const IN_PLACE_OPTIONS = ['', 'compat: "0.10"', 'lazy_refcounts: true', 'cluster_size: 131072'];
const COPY_OPTIONS = (n: string) => [
  '',
  '',
  'cluster_size: 131072',
  'compat: "0.10"',
  `data_file: out/${n}.data`,
  'lazy_refcounts: true',
];

/** A random manifest over the starting layout. */
function generate(random: Random): Planned[] {
  const pick = pickWith(random);
  const images: Planned[] = [];
  // Sometimes the base is reshaped in place too (vm.qcow2 sits on it).
  const base = random() < 0.3;
  if (base) {
    images.push({
      id: 'base',
      path: 'base.qcow2',
      format: 'qcow2',
      fields: ['path: base.qcow2'],
      options: pick(['', 'lazy_refcounts: true', 'compat: "0.10"']),
      declaredSize: pick(['', '12M', '16M']),
      content: { path: 'base.ref.raw', format: 'raw' },
      backing: null,
    });
  }
  if (random() < 0.8) {
    const backing = pick(['base.qcow2', 'base2.qcow2', 'alt.qcow2', null, ...(base ? ['base'] : [])] as const);
    images.push({
      id: 'vm',
      path: 'vm.qcow2',
      format: 'qcow2',
      fields: [
        'path: vm.qcow2',
        backing === 'base' ? 'backing: base' : backing ? `backing: { path: ${backing}, format: qcow2 }` : '',
      ].filter(Boolean),
      options: pick(IN_PLACE_OPTIONS),
      declaredSize: pick(['', '', '12M', '16M']),
      // A new backing of other content is allowed: the image keeps presenting what it did.
      content: { path: 'vm.ref.raw', format: 'raw' },
      backing: backing === 'base' ? 'base.qcow2' : backing,
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
    // A file backing may be one the manifest also reshapes (base.qcow2, vm.qcow2).
    const files = ['base2.qcow2', 'base2.qcow2', 'base.qcow2', 'vm.qcow2'].map((file) => ({ file }));
    const backingChoice =
      format === 'raw' ? null : pick([null, null, pick(files), ...earlier.map((image) => ({ image }))]);
    const backingYaml =
      backingChoice === null
        ? ''
        : 'file' in backingChoice
          ? `backing: { path: ${backingChoice.file}, format: qcow2 }`
          : `backing: ${backingChoice.image.id}`;
    const snapshot = 'snapshot' in source ? `, snapshot: ${source.snapshot}` : '';
    images.push({
      id: `c${n}`,
      path,
      format,
      fields: [
        `path: ${path}`,
        `format: ${format}`,
        `from: { path: ${source.path}, format: ${source.format}${snapshot} }`,
        backingYaml,
      ].filter(Boolean),
      options: format === 'raw' ? '' : pick(COPY_OPTIONS(`c${n}`)),
      declaredSize: pick(['', '', '', '16M']),
      copies: { path: source.path, snapshot: 'snapshot' in source },
      content: 'content' in source && source.content ? { path: source.content, format: 'raw' } : source,
      backing: backingChoice === null ? null : 'file' in backingChoice ? backingChoice.file : backingChoice.image.path,
    });
  }
  return images;
}

/**
 * The manifest of a second apply over the first one's result: each image kept, changed (other
 * options, or grown to 16M) or dropped (when no image left is backed by it).
 */
function nextRound(previous: readonly Planned[], random: Random): Planned[] {
  const pick = pickWith(random);
  const kept: Planned[] = [];
  for (const image of previous) {
    const r = random();
    const backsOthers = previous.some((other) => other.fields.includes(`backing: ${image.id}`));
    if (r < 0.15 && !backsOthers) continue;
    if (r < 0.5) {
      const options = image.format === 'raw' ? '' : pick(image.copies ? COPY_OPTIONS(image.id) : IN_PLACE_OPTIONS);
      const grow = random() < 0.4 && image.declaredSize !== '16M';
      kept.push({ ...image, options, declaredSize: grow ? '16M' : image.declaredSize });
      continue;
    }
    kept.push(image);
  }
  return kept;
}

/** Every file under `dir`, relative to it, for checksums of a refused case. */
async function allFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath ?? e.path, e.name));
}

/** What is wrong with the applied case in `dir`, as readable lines (empty: nothing). */
async function problemsAfterApply(
  dir: string,
  images: readonly Planned[],
  sizeBefore: ReadonlyMap<string, number>,
): Promise<string[]> {
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
    const size = await sizeOf(dir, image, sizeBefore);
    if (info['virtual-size'] !== size)
      problems.push(`${image.id} is ${String(info['virtual-size'])} bytes, not ${size}`);
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
      for (const [fact, want] of Object.entries(factsOf(image.options))) {
        const have = fact === 'data-file' && typeof shown[fact] === 'string' ? relative(dir, shown[fact]) : shown[fact];
        if (have !== want) problems.push(`${image.id} has ${fact} ${String(have)}, not ${String(want)}`);
      }
    }
  }
  const left = (await allFiles(dir)).filter((file) => file.includes('.chainform-tmp'));
  if (left.length > 0) problems.push(`temporary files left: ${left.join(', ')}`);
  // A rewrite of an image whose path is a symlink replaces the file the link names, never the link.
  const link = await lstat(join(dir, 'vm.qcow2')).catch(() => undefined);
  if (link?.isSymbolicLink() === false && (await lstat(join(dir, VM_FILE)).catch(() => undefined)))
    problems.push('vm.qcow2 was a symlink and is now a file');
  if (link?.isSymbolicLink() && (await readlink(join(dir, 'vm.qcow2'))) !== VM_FILE)
    problems.push('the vm.qcow2 symlink was changed');
  return problems;
}

/** How one round ended, and what went wrong in it. */
interface Round {
  outcome: 'applied' | 'refused';
  problems: string[];
}

/**
 * Plans and applies `images` in `dir`. A refused manifest must be refused with located errors of
 * expected codes, by apply too, and nothing may change; an applied one is checked by
 * problemsAfterApply, and every file of the folder that is not one of its images (or their
 * data files, or the state folder) must be as it was.
 */
async function runRound(dir: string, images: readonly Planned[], jobs: string[]): Promise<Round> {
  const problems: string[] = [];
  await writeFile(join(dir, 'm.yaml'), `version: 1\nimages:\n${images.map(yamlOf).join('\n')}\n`);
  const files = (await allFiles(dir)).filter((file) => !file.includes('/.chainform/'));
  const everything = await checksums(files);
  const sizeBefore = new Map<string, number>();
  for (const image of images.filter((i) => !i.copies)) {
    sizeBefore.set(image.path, Number((await imageInfo(join(dir, image.path), image.format))['virtual-size']));
  }
  const planned = await chainform(dir, 'plan', 'm.yaml');
  const afterPlan = await checksums(files);
  if (JSON.stringify(afterPlan) !== JSON.stringify(everything)) problems.push('plan changed files');
  if (planned.exitCode !== 0) {
    const errors = planned.stderr.split('\n').filter((line) => /^(\S+:\d+:\d+: )?error: /.test(line));
    if (planned.exitCode !== 1 || errors.length === 0)
      problems.push(`plan failed (exit ${planned.exitCode}):\n${planned.stderr}`);
    for (const line of errors) {
      const code = /^m\.yaml:\d+:\d+: error: .* \[([a-z0-9.-]+)\]$/.exec(line)?.[1];
      if (code === undefined) problems.push(`an error without a location or code: ${line}`);
      else if (!EXPECTED_REFUSALS.has(code))
        problems.push(`refused with ${code}, which this layout should not meet:\n${line}`);
    }
    if (/internal error|\n\s+at /.test(planned.stderr)) problems.push(`plan crashed:\n${planned.stderr}`);
    // apply must refuse the same way, and write nothing (its state folder included).
    const state = await checksums(await allFiles(dir));
    const applied = await chainform(dir, 'apply', 'm.yaml', '--yes');
    if (applied.exitCode !== 1) problems.push(`apply of a refused manifest exited ${applied.exitCode}`);
    if (JSON.stringify(await checksums(await allFiles(dir))) !== JSON.stringify(state))
      problems.push('a refused apply changed files');
    return { outcome: 'refused', problems };
  }
  const applied = await chainform(dir, 'apply', 'm.yaml', '--yes', ...jobs);
  if (applied.exitCode !== 0) {
    problems.push(`apply failed (exit ${applied.exitCode}):\n${applied.stdout}${applied.stderr}`);
    return { outcome: 'applied', problems };
  }
  problems.push(...(await problemsAfterApply(dir, images, sizeBefore)));
  // An image's file is the one its path names, through a symlink too.
  const named = images.flatMap((image) => [image.path, `out/${image.id}.data`]).map((path) => join(dir, path));
  const ours = new Set([...named, ...(await Promise.all(named.map((path) => realpath(path).catch(() => path))))]);
  const untouched = files.filter((file) => !ours.has(file) && file !== join(dir, 'm.yaml'));
  const after = await checksums(untouched);
  for (const file of untouched) {
    if (after[file] !== everything[file])
      problems.push(`${relative(dir, file)} changed, but no image of the manifest is it`);
  }
  return { outcome: 'applied', problems };
}

it(
  `reaches every accepted manifest in one apply, then a changed one in one more, and refuses the others cleanly (${CASES} seeded cases)`,
  async () => {
    const failures: string[] = [];
    const outcomes = { applied: 0, refused: 0, secondApplied: 0 };
    for (let n = 0; n < CASES; n++) {
      const seed = (MASTER_SEED + n * 0x9e3779b9) >>> 0;
      const random = mulberry32(seed);
      const images = generate(random);
      if (images.length === 0) continue;
      const { dir, cleanup } = await tempFolder();
      try {
        // Every other case has vm.qcow2 behind a symlink (by the seed: the cases stay as they were).
        await makeLayout(dir, (seed & 1) === 1);
        const jobs = [[], ['--jobs', '1'], ['--jobs', '4']][n % 3] as string[];
        const first = await runRound(dir, images, jobs);
        const manifest = (round: readonly Planned[]) => round.map(yamlOf).join('\n');
        for (const problem of first.problems)
          failures.push(`case ${n} (seed ${seed}): ${problem}\n${manifest(images)}`);
        outcomes[first.outcome]++;
        if (first.outcome !== 'applied' || first.problems.length > 0) continue;
        // A second apply over the first one's outputs, with some images changed or dropped.
        const next = nextRound(images, random);
        if (next.length === 0) continue;
        const second = await runRound(dir, next, jobs);
        for (const problem of second.problems)
          failures.push(
            `case ${n} (seed ${seed}), second apply: ${problem}\nfirst:\n${manifest(images)}\nthen:\n${manifest(next)}`,
          );
        if (second.outcome === 'applied') outcomes.secondApplied++;
      } finally {
        await cleanup();
      }
    }
    expect(failures, failures.join('\n\n')).toEqual([]);
    // The generator must keep exercising every outcome, or the test stops testing one of them
    // (over enough cases: a handful may all end one way).
    if (CASES < 20) return;
    expect(outcomes.applied, JSON.stringify(outcomes)).toBeGreaterThan(CASES / 3);
    expect(outcomes.secondApplied, JSON.stringify(outcomes)).toBeGreaterThan(CASES / 4);
    expect(outcomes.refused, JSON.stringify(outcomes)).toBeGreaterThan(0);
  },
  20 * 60_000,
);
