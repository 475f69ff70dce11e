// Fuzz: over a thousand mutated manifests (broken YAML, wrong types, unknown keys, huge numbers,
// deep nesting, alias bombs, odd strings and paths) go through loadManifest, validate and plan.
// None may throw or hang; every error points into the manifest (file:line:column); a plan is a
// plan; and nothing on disk changes. Mutations come from a seeded PRNG: a failure prints the
// case's seed, its mutation steps and the text, and the same seed makes the same text again.
import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadManifest, plan, validate } from '../../src/api.js';
import type { Diagnostic } from '../../src/diagnostics/diagnostic.js';
import { caseSeed, type Family, type Mutation, mutate, randomFrom } from '../helpers/mutate-manifest.js';
import { checksums, qemuImg, qemuIo, tempFolder } from '../helpers/qemu.js';
import { SEEDS } from '../helpers/seed-manifests.js';

/** Master seed; set CHAINFORM_FUZZ_SEED to explore other cases (the default is what CI runs). */
const MASTER_SEED = Number(process.env.CHAINFORM_FUZZ_SEED ?? 0x5eedc4a1);
/** Mutated manifests per run. */
const CASES = 1100;
/** Manifests in flight at once (each in its own file of the same folder). */
const PARALLEL = 4;
/** Longest any one call may take before it counts as a hang. */
const CALL_LIMIT_MS = 10_000;

/**
 * Families and their weights: byte edits and type errors are cheap and broad, so they come more
 * often; every family comes at least once per 22 cases.
 */
const SCHEDULE: readonly Family[] = [
  'bytes',
  'bytes',
  'bytes',
  'truncate',
  'tabs',
  'wrong-type',
  'wrong-type',
  'field-value',
  'field-value',
  'unknown-key',
  'missing-key',
  'huge-number',
  'deep-nesting',
  'alias-bomb',
  'aliases',
  'duplicate-key',
  'strings',
  'hostile-path',
  'hostile-path',
  'document',
  'binary',
  'combo',
];

/** Codes of errors about something other than the manifest's text, which cannot point into it. */
const OUTSIDE_THE_MANIFEST = new Set(['manifest-unreadable', 'ledger-unreadable']);

/** A stack frame as V8 prints it: never in what a user reads. */
const STACK_FRAME = /\n\s+at \S|\bat .+ \(.+:\d+:\d+\)/;

/** Words of JavaScript internals that should not reach a user (reported, not failed). */
const INTERNAL_TEXT =
  /TypeError|RangeError|ReferenceError|SyntaxError|Maximum call stack|Cannot read propert|is not a function|ERR_[A-Z_]{3,}|\[object Object\]|\bundefined\b/;

type Stage = 'loadManifest' | 'validate' | 'plan';

/** One broken property of one case, with all it takes to reproduce it. */
interface Failure {
  kind: 'threw' | 'hang' | 'bad-result' | 'stack-trace' | 'no-location' | 'bad-location' | 'bad-plan';
  /** The calls that broke it (loadManifest's problems show up in all three). */
  stages: Stage[];
  /** What the failures of one group share: the diagnostic code, or the error's first line. */
  what: string;
  index: number;
  seed: number;
  family: Family;
  base: string;
  steps: string[];
  detail: string;
  text: string;
}

/** A message that looks like JavaScript internals leaked into a diagnostic. */
interface Observation {
  stage: Stage;
  index: number;
  family: Family;
  code: string;
  message: string;
}

/** One fuzz case: its index and seed, the seed manifest it started from, and its mutation. */
interface Case {
  index: number;
  seed: number;
  base: string;
  mutation: Mutation;
}

/** Case `index` under {@link MASTER_SEED}; the same index always gives the same manifest. */
function makeCase(index: number): Case {
  const seed = caseSeed(MASTER_SEED, index);
  const rng = randomFrom(seed);
  const family = SCHEDULE[index % SCHEDULE.length] as Family;
  const base = rng.pick(Object.keys(SEEDS));
  return { index, seed, base, mutation: mutate(SEEDS[base] as string, family, rng) };
}

/** The call's value, or "hang" when it has not settled after `ms` (a rejection passes through). */
async function bounded<T>(promise: Promise<T>, ms: number): Promise<T | 'hang'> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<'hang'>((done) => {
    timer = setTimeout(() => done('hang'), ms);
  });
  try {
    return await Promise.race([promise, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** Why a location is not a place in the manifest, or undefined when it is one. */
function badLocation(
  location: NonNullable<Diagnostic['location']>,
  file: string,
  lines: readonly number[],
): string | undefined {
  if (location.file !== file) return `points into ${location.file}, not the manifest`;
  const { line, column } = location;
  if (!Number.isInteger(line) || line < 1 || line > lines.length) return `line ${line} of ${lines.length}`;
  const length = lines[line - 1] ?? 0;
  if (!Number.isInteger(column) || column < 1 || column > length + 1) {
    return `column ${column} on line ${line} of ${length} chars`;
  }
  return undefined;
}

/** Sanity of a plan object: plain data with steps and argv of strings, finite byte counts. */
function badPlan(value: unknown): string | undefined {
  const p = value as {
    formatVersion?: unknown;
    images?: unknown;
    steps?: { id?: unknown; commands?: { argv?: unknown }[]; expectedWriteBytes?: unknown }[];
  };
  if (p?.formatVersion !== 1) return `formatVersion ${String(p?.formatVersion)}`;
  if (!Array.isArray(p.images) || !Array.isArray(p.steps)) return 'images or steps is not a list';
  try {
    JSON.stringify(p);
  } catch (e) {
    return `not JSON-serialisable: ${(e as Error).message}`;
  }
  for (const step of p.steps) {
    if (typeof step.id !== 'string') return 'a step without an id';
    const bytes = step.expectedWriteBytes;
    if (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes < 0) {
      return `step ${step.id}: expectedWriteBytes ${String(bytes)}`;
    }
    for (const command of step.commands ?? []) {
      const argv = command.argv;
      if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== 'string')) {
        return `step ${step.id}: argv ${JSON.stringify(argv)}`;
      }
      const odd = argv.find((a: string) => /^(NaN|Infinity|-Infinity|undefined|null)$|\[object /.test(a));
      if (odd !== undefined) return `step ${step.id}: argv has ${JSON.stringify(odd)}: ${argv.join(' ')}`;
    }
  }
  return undefined;
}

/** Names, kinds, sizes, times and sha256 of everything under `root`, except the given files. */
async function snapshotTree(root: string, skip: ReadonlySet<string>): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const path = join(dir, entry.name);
      if (skip.has(path)) continue;
      const s = await lstat(path, { bigint: true });
      const kind = entry.isDirectory() ? 'dir' : entry.isFile() ? 'file' : 'other';
      const sha = entry.isFile()
        ? createHash('sha256')
            .update(await readFile(path))
            .digest('hex')
        : '-';
      out[path.slice(root.length)] =
        `${kind} mode=${s.mode} size=${s.size} mtime=${s.mtimeNs} ctime=${s.ctimeNs} links=${s.nlink} sha256=${sha}`;
      if (entry.isDirectory()) await walk(path);
    }
  };
  const top = await lstat(root, { bigint: true });
  out['.'] = `dir mode=${top.mode} mtime=${top.mtimeNs} ctime=${top.ctimeNs}`;
  await walk(root);
  return out;
}

/** The text as chainform reads it back (invalid UTF-8 becomes U+FFFD). */
function asRead(mutation: Mutation): string {
  return Buffer.from(mutation.text, mutation.encoding).toString('utf8');
}

/** A readable excerpt of a (possibly huge, possibly binary) manifest for a failure report. */
function excerpt(text: string): string {
  const shown =
    text.length > 1500 ? `${text.slice(0, 1200)}\n[... ${text.length - 1500} chars ...]\n${text.slice(-300)}` : text;
  return JSON.stringify(shown).slice(1, -1).replace(/\\n/g, '\n    ').replace(/^/, '    ');
}

/** Failures grouped by kind and what they share. */
function groupFailures(failures: readonly Failure[]): Map<string, Failure[]> {
  const groups = new Map<string, Failure[]>();
  for (const f of failures) {
    const key = `${f.kind}: ${f.what}`;
    groups.set(key, [...(groups.get(key) ?? []), f]);
  }
  return groups;
}

/** Every group with two reproducible examples: seed, steps, detail and the manifest text. */
function report(failures: readonly Failure[]): string {
  const groups = groupFailures(failures);
  const parts = [
    `${failures.length} broken properties in ${groups.size} groups. Rebuild a case with makeCase(index) ` +
      `(master seed ${MASTER_SEED}; CHAINFORM_FUZZ_SEED changes it).`,
  ];
  for (const [key, group] of groups) {
    parts.push(`\n== ${key} (${group.length} cases)`);
    for (const f of group.slice(0, 2)) {
      parts.push(
        `case ${f.index} (seed ${f.seed}) ${f.family} on "${f.base}": ${f.steps.join('; ')}\n` +
          `  in ${f.stages.join(', ')}: ${f.detail}\n  manifest (${f.text.length} chars):\n${excerpt(f.text)}`,
      );
    }
  }
  return parts.join('\n');
}

/** A group key from an error's first line: paths, quoted names and numbers masked. */
function gist(line: string): string {
  return line
    .replace(/'[^']*'/g, "'...'")
    .replace(/\/\S+/g, '/...')
    .replace(/\d+/g, 'N')
    .slice(0, 120);
}

describe('fuzzing manifests through loadManifest, validate and plan', () => {
  let root = '';
  let dir = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let inputs: string[] = [];
  const slots = Array.from({ length: PARALLEL }, (_, i) => `fuzz-${i}.yaml`);

  beforeAll(async () => {
    const folder = await tempFolder();
    cleanup = folder.cleanup;
    root = folder.dir;
    // The manifests live one level down, so that "../" paths still land in the temp folder.
    dir = join(root, 'm');
    await mkdir(join(dir, 'in'), { recursive: true });
    const at = (name: string) => join(dir, name);
    await qemuImg('create', '-q', '-f', 'raw', at('in/tpl.raw'), '4M');
    await qemuIo('raw', at('in/tpl.raw'), 'write -P 0x11 0 2M');
    await qemuImg('create', '-q', '-f', 'raw', at('in/web.raw'), '4M');
    await qemuIo('raw', at('in/web.raw'), 'write -P 0x11 0 2M', 'write -P 0x22 1M 64k');
    await qemuImg('create', '-q', '-f', 'qcow2', at('base.qcow2'), '4M');
    await qemuIo('qcow2', at('base.qcow2'), 'write -P 0x33 0 1M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', at('vm.qcow2'));
    await qemuIo('qcow2', at('vm.qcow2'), 'write -P 0x44 512k 128k');
    await qemuImg('create', '-q', '-f', 'qcow2', at('snap.qcow2'), '4M');
    await qemuIo('qcow2', at('snap.qcow2'), 'write -P 0x55 0 256k');
    await qemuImg('snapshot', '-c', 'sn0', at('snap.qcow2'));
    await qemuIo('qcow2', at('snap.qcow2'), 'write -P 0x66 1M 64k');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=1.1', at('inplace.qcow2'), '4M');
    await qemuImg('create', '-q', '-f', 'raw', join(root, 'outside.raw'), '1M');
    inputs = ['in/tpl.raw', 'in/web.raw', 'base.qcow2', 'vm.qcow2', 'snap.qcow2', 'inplace.qcow2'].map(at);
    inputs.push(join(root, 'outside.raw'));
    // Manifest files exist before the disk is snapshotted: rewriting them changes no folder.
    for (const slot of slots) await writeFile(at(slot), '');
    for (const [name, text] of Object.entries(SEEDS)) await writeFile(at(`seed-${name}.yaml`), text);
  });

  afterAll(async () => {
    await cleanup();
  });

  it('starts from seed manifests that validate and plan', async () => {
    for (const name of Object.keys(SEEDS)) {
      const file = join(dir, `seed-${name}.yaml`);
      const validated = await validate(file);
      expect(validated.ok ? [] : validated.diagnostics, name).toEqual([]);
      const planned = await plan(file);
      expect(planned.ok ? [] : planned.diagnostics, name).toEqual([]);
      if (planned.ok) {
        expect(badPlan(planned.plan), name).toBeUndefined();
        expect(planned.plan.steps.length, name).toBeGreaterThan(0);
      }
    }
  });

  it(`throws ${CASES} mutated manifests at them: no throw, no hang, every error located, nothing written`, async () => {
    const skip = new Set(slots.map((s) => join(dir, s)));
    const treeBefore = await snapshotTree(root, skip);
    const sumsBefore = await checksums(inputs);

    const failures: Failure[] = [];
    const observations: Observation[] = [];
    const codes = new Map<string, number>();
    const outcomes = { loadOk: 0, validateOk: 0, planOk: 0 };
    const slowest: Record<Stage, { ms: number; index: number }> = {
      loadManifest: { ms: 0, index: -1 },
      validate: { ms: 0, index: -1 },
      plan: { ms: 0, index: -1 },
    };
    let fuzzed = 0;

    const runCase = async (c: Case, file: string): Promise<void> => {
      const { mutation } = c;
      await writeFile(file, mutation.text, { encoding: mutation.encoding });
      fuzzed++;
      // Line lengths as yaml's LineCounter counts them: lines end at "\n" only.
      const lines = asRead(mutation)
        .split('\n')
        .map((line) => line.length);
      // One failure per case and kind of problem; later stages that repeat it are added to it.
      const seen = new Map<string, Failure>();
      const fail = (kind: Failure['kind'], stage: Stage, what: string, detail: string) => {
        const key = `${kind}|${what}`;
        const known = seen.get(key);
        if (known) {
          if (!known.stages.includes(stage)) known.stages.push(stage);
          return;
        }
        const failure: Failure = {
          kind,
          stages: [stage],
          what,
          index: c.index,
          seed: c.seed,
          family: mutation.family,
          base: c.base,
          steps: mutation.steps,
          detail,
          text: mutation.text,
        };
        seen.set(key, failure);
        failures.push(failure);
      };
      const stages: [Stage, (f: string) => Promise<unknown>][] = [
        ['loadManifest', loadManifest],
        ['validate', validate],
        ['plan', plan],
      ];
      for (const [stage, call] of stages) {
        const started = performance.now();
        let result: unknown;
        try {
          result = await bounded(call(file), CALL_LIMIT_MS);
        } catch (e) {
          const stack = e instanceof Error ? (e.stack ?? e.message) : String(e);
          fail('threw', stage, gist(stack.split('\n')[0] ?? ''), stack.split('\n').slice(0, 8).join('\n    '));
          continue;
        }
        const ms = performance.now() - started;
        if (ms > slowest[stage].ms) slowest[stage] = { ms, index: c.index };
        if (result === 'hang') {
          fail('hang', stage, 'no answer', `no answer within ${CALL_LIMIT_MS} ms`);
          continue;
        }
        const r = result as {
          ok?: unknown;
          diagnostics?: Diagnostic[];
          plan?: unknown;
          manifest?: { images?: unknown };
        };
        if (r.ok === true) {
          if (stage !== 'plan' && !(Array.isArray(r.manifest?.images) && r.manifest.images.length > 0)) {
            fail('bad-result', stage, 'ok without images', 'ok, but the manifest has no list of images');
          }
          if (stage === 'loadManifest') outcomes.loadOk++;
          if (stage === 'validate') outcomes.validateOk++;
          if (stage === 'plan') {
            outcomes.planOk++;
            const bad = badPlan(r.plan);
            if (bad) fail('bad-plan', stage, gist(bad), bad);
          }
          continue;
        }
        if (r.ok !== false || !Array.isArray(r.diagnostics) || !r.diagnostics.some((d) => d.severity === 'error')) {
          fail('bad-result', stage, 'no error', `not ok, but no error diagnostic: ${JSON.stringify(r).slice(0, 300)}`);
          continue;
        }
        for (const d of r.diagnostics) {
          const words = [d.message, d.hint ?? '', ...(d.related ?? []).map((x) => x.message)].join('\n');
          if (STACK_FRAME.test(words)) fail('stack-trace', stage, d.code, `[${d.code}] ${words.slice(0, 500)}`);
          if (INTERNAL_TEXT.test(words)) {
            observations.push({ stage, index: c.index, family: mutation.family, code: d.code, message: d.message });
          }
          if (d.severity !== 'error') continue;
          codes.set(d.code, (codes.get(d.code) ?? 0) + 1);
          if (!d.location) {
            if (!OUTSIDE_THE_MANIFEST.has(d.code)) {
              fail('no-location', stage, d.code, `[${d.code}] ${d.message.slice(0, 300)}`);
            }
            continue;
          }
          const bad = badLocation(d.location, file, lines);
          if (bad) {
            const what = `${d.code}: ${bad.replace(/\d+/g, 'N')}`;
            fail(
              'bad-location',
              stage,
              what,
              `[${d.code}] ${JSON.stringify(d.location)} ${bad}: ${d.message.slice(0, 200)}`,
            );
          }
        }
      }
    };

    // PARALLEL workers, each with its own manifest file, take cases in index order.
    let next = 0;
    await Promise.all(
      slots.map(async (slot) => {
        const file = join(dir, slot);
        while (next < CASES) {
          const c = makeCase(next++);
          await runCase(c, file);
        }
      }),
    );

    const summary = [
      `fuzzed ${fuzzed} manifests (master seed ${MASTER_SEED}): loadManifest ok ${outcomes.loadOk}, validate ok ${outcomes.validateOk}, plan ok ${outcomes.planOk}`,
      `slowest: ${Object.entries(slowest)
        .map(([stage, s]) => `${stage} ${Math.round(s.ms)} ms (case ${s.index})`)
        .join(', ')}`,
      `error codes: ${[...codes.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([code, n]) => `${code} ${n}`)
        .join(', ')}`,
    ];
    const leaked = new Map<string, Observation>();
    for (const o of observations) leaked.set(`${o.stage} ${o.code} ${o.message.replace(/\d+/g, 'N').slice(0, 80)}`, o);
    for (const [key, o] of leaked)
      summary.push(`internal words in a diagnostic: ${key} (case ${o.index}, ${o.family})`);
    console.info(summary.join('\n'));

    // Soft: every property is checked and reported, also when an earlier one fails.
    expect.soft(fuzzed, 'manifests fuzzed').toBeGreaterThanOrEqual(1000);
    expect.soft(await snapshotTree(root, skip), 'nothing under the temp folder changed').toEqual(treeBefore);
    expect.soft(await checksums(inputs), 'the input images are unchanged').toEqual(sumsBefore);
    // The families reached what they aim at: YAML errors, alias limits, schema errors, plans.
    for (const code of ['yaml-syntax', 'yaml-aliases', 'unknown-key', 'missing-key', 'wrong-type', 'invalid-value']) {
      expect.soft(codes.get(code) ?? 0, `${code} never seen`).toBeGreaterThan(0);
    }
    expect.soft(outcomes.planOk, 'no mutated manifest reached a plan').toBeGreaterThan(0);
    if (failures.length > 0) console.error(report(failures));
    // One line per group here; the full report, with seeds and manifests, is printed above.
    expect(
      [...groupFailures(failures)].map(
        ([key, group]) => `${key} (${group.length} cases, e.g. case ${group[0]?.index})`,
      ),
    ).toEqual([]);
  }, 120_000);
});
