// The fast path (js-yaml) must read every manifest it takes exactly as the reference reading
// (`yaml`, parseWithReference) does, and leave everything else to the reference: a manifest the
// reference refuses is never accepted, and accepted data is deep-equal, number types and
// signed zeros included. Checked on chosen cases, on thousands of mutated manifests (the fuzz
// test's seeded mutations, every family) and on short texts glued from YAML syntax, each case
// reproducible from its seed.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseManifestText, parseWithReference } from '../../src/manifest/load-manifest.js';
import { readYamlFast } from '../../src/manifest/yaml-fast-path.js';
import { caseSeed, FAMILIES, mutate, randomFrom } from '../helpers/mutate-manifest.js';
import { SEEDS } from '../helpers/seed-manifests.js';

/** Master seed; set CHAINFORM_FUZZ_SEED to explore other cases (the default is what CI runs). */
const MASTER_SEED = Number(process.env.CHAINFORM_FUZZ_SEED ?? 0x7a31f00d);
/** Mutated manifests compared per run; CHAINFORM_FUZZ_CASES explores more. */
const CASES = Number(process.env.CHAINFORM_FUZZ_CASES ?? 3000);

/** Soup cases compared per run; CHAINFORM_FUZZ_CASES scales them too. */
const SOUP_CASES = Math.round(CASES * 3);

/**
 * Pieces of YAML syntax a short text is glued from: the corners where the two readers were found
 * to disagree (tabs, markers, block scalar headers, escapes, quotes, sequence and key indicators,
 * odd line ends and spaces) among plain words and numbers.
 */
const SOUP = [
  'a',
  'b',
  'k',
  'x',
  '1',
  '0',
  '.',
  'e',
  '-',
  '+',
  '_',
  ':',
  ': ',
  ' ',
  '  ',
  '\n',
  '\n',
  '\n  ',
  '\n ',
  '\n    ',
  '\t',
  '"',
  "'",
  '[',
  ']',
  '{',
  '}',
  ',',
  '#',
  ' #',
  '|',
  '>',
  '|-',
  '>+',
  '|2',
  '?',
  '? ',
  '\\',
  '\\n',
  '\\x41',
  '\\u00e9',
  '\\U0001F600',
  '\\U00110000',
  '\\ ',
  '\\\n',
  '- ',
  '-',
  '~',
  'null',
  'true',
  '.inf',
  '0x1f',
  '0o7',
  '1e5',
  '1e400',
  '---',
  '...',
  '\r\n',
  '\r',
  '\u0085',
  '\u2028',
  '\u00a0',
  '\ufeff',
  'é',
  '<<',
  '__proto__',
  '!',
  '&',
  '*',
  '%',
  '@',
  '`',
];

/** The data as text that tells apart what deep equality may not: -0, NaN, Infinity, number vs string. */
function exact(data: unknown): string {
  return JSON.stringify(data, (_key, value: unknown) => {
    if (typeof value === 'number' && (Object.is(value, -0) || !Number.isFinite(value)))
      return `<number ${value === 0 ? '-0' : value}>`;
    return value;
  });
}

/** The reference reading of `text`: its data, or undefined when it refuses the text. */
function reference(text: string): { data: unknown } | undefined {
  const read = parseWithReference('/m.yaml', text);
  return read.ok ? { data: read.source.data } : undefined;
}

/**
 * How the fast path reads `text` against the reference: declined (left to the reference), or
 * taken, with what is wrong when the reference refuses the text or reads other data.
 */
function compare(text: string): { taken: false } | { taken: true; problem?: string } {
  const fast = readYamlFast(text);
  if (!fast) return { taken: false };
  const slow = reference(text);
  if (!slow) return { taken: true, problem: `fast ${exact(fast.data).slice(0, 200)} / the reference refuses it` };
  if (exact(fast.data) === exact(slow.data)) return { taken: true };
  return {
    taken: true,
    problem: `fast ${exact(fast.data).slice(0, 200)} / reference ${exact(slow.data).slice(0, 200)}`,
  };
}

/** Every manifest shipped with chainform: the ready-made plans and the examples' manifests. */
function shippedManifests(): Record<string, string> {
  const found: Record<string, string> = {};
  for (const name of readdirSync('plans'))
    if (name.endsWith('.yaml')) found[`plans/${name}`] = readFileSync(join('plans', name), 'utf8');
  for (const example of readdirSync('examples', { withFileTypes: true })) {
    if (!example.isDirectory()) continue;
    for (const name of readdirSync(join('examples', example.name))) {
      if (name.endsWith('.yaml'))
        found[`examples/${example.name}/${name}`] = readFileSync(join('examples', example.name, name), 'utf8');
    }
  }
  return found;
}

describe('readYamlFast', () => {
  it('reads every shipped and seed manifest, as the reference reads it', () => {
    const manifests = { ...shippedManifests(), ...SEEDS };
    expect(Object.keys(manifests).length).toBeGreaterThan(8);
    for (const [name, text] of Object.entries(manifests)) expect(compare(text), name).toEqual({ taken: true });
  });

  it('reads core schema scalars as yaml does, numbers too large for a double included', () => {
    const text = [
      'a: 0o17',
      'b: 0x1F',
      'c: 1e400',
      'd: -1e400',
      `e: ${'9'.repeat(400)}`,
      'f: .inf',
      'g: -.Inf',
      'h: .nan',
      'i: -0',
      'j: 1_000',
      'k: 0b11',
      'l: yes',
      'm: ~',
      'n: 2001-12-14',
      'o: "1"',
      'p: +12',
      'q: 1.',
      'r: .5e-3',
      '',
    ].join('\n');
    const fast = readYamlFast(text);
    expect(fast).toBeDefined();
    expect(exact(fast?.data)).toBe(exact(reference(text)?.data));
    expect(fast?.data).toMatchObject({ a: 15, b: 31, c: Number.POSITIVE_INFINITY, j: '1_000', k: '0b11', l: 'yes' });
  });

  it('reads the YAML forms a manifest may use as the reference does', () => {
    const forms = {
      'quoted scalars with escapes': 'a: "dq \\t \\u00e9 \\x41 \\/ \\N \\_ \\L \\P"\nb: \'sq \'\' x\'\nc: ""\n',
      'flow collections over lines': 'a: { b: 1,\n  c: [x, y,\n   z], "d": e }\nb: [ ]\nc: {}\nd: [a: 1, b]\n',
      'CRLF line ends': 'a: 1\r\nb:\r\n  c: 2\r\n',
      comments: '# c\na: 1 # c\nb: # c\n  c: 2\n# end',
      'non-ASCII text': 'a: é\nb: "\\u00e9 \\ud83d\\ude00"\nc: 😀\n"k é": v\n',
      'NEL and U+2028 inside a scalar': 'a: x\u0085y\nb: x\u2028y\n',
      'nested sequences': '- a\n- - b\n  - c\n- d: e\n  f: g\n',
      'empty values': 'a:\nb: \nc: ""\nd: {x: }\n',
      'deeper indentation': 'a:\n    b: 1\n    c:\n      - 1\n      -   2\n',
    };
    for (const [what, text] of Object.entries(forms)) expect(compare(text), what).toEqual({ taken: true });
  });

  it('leaves to the reference what the two could read differently, or what js-yaml refuses', () => {
    const declined = {
      'a null key': 'version: 1\n~: x\n',
      'an empty key': 'version: 1\n: x\n',
      'an alias': 'a: &x 1\nb: *x\n',
      'an anchor alone': 'a: &x 1\n',
      'a tag': 'a: !!str 1\n',
      'a local tag': 'a: !disk x\n',
      'a directive': '%YAML 1.2\n---\na: 1\n',
      'two documents': 'a: 1\n---\nb: 2\n',
      'no document': '# nothing\n',
      'a duplicate key': 'a: 1\na: 2\n',
      'a key repeated as a number and as text': '1: a\n"1": b\n',
      'a syntax error': 'a: [1\n',
      'lines ended by a carriage return alone': 'a: 1\rb: 2\r',
      'a tab': 'a:\t1\n',
      'a tab in a quoted scalar': 'a: "x\ty"\n',
      'a document start marker': '---\na: 1\n',
      'a document end marker': 'a: 1\n...\n',
      'a byte order mark past the start': 'a: 1\n\ufeff}\n',
      'a literal block scalar': 'a: |\n  l1\n',
      'a folded block scalar on one line': 'a: >-\n  f1\n',
      'a plain scalar over two lines': 'a: one\n  two\n',
      'a double-quoted scalar over two lines': 'a: "one\n  two"\n',
      'an escaped line break': '"\\\n\n"\n',
      'a collection as a key': '[a, b]: x\n',
      'explicit keys': '? a\n: 1\n? b\n: 2\n',
      'a key past a sequence item on its line': 'a:\n- "x" y: 1\n',
      'a key out of line': 'a: 1\n b: 2\n',
      'a key over 1024 characters': `${'k'.repeat(1025)}: v\n`,
      'a \\U escape': 'a: "\\U00110000"\n',
      'a byte order mark before a sequence': '\ufeff- a\n',
      'nesting past 100 levels': `a: ${'['.repeat(150)}${']'.repeat(150)}\n`,
    };
    for (const [what, text] of Object.entries(declined)) expect(readYamlFast(text), what).toBeUndefined();
  });

  it('takes a manifest it accepts whole, with its yaml document parsed only when a location is asked for', () => {
    const parsed = parseManifestText('/m.yaml', 'version: 1\nimages:\n  a: { path: a.qcow2 }\n');
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.source.data).toEqual({ version: 1, images: { a: { path: 'a.qcow2' } } });
    expect(parsed.source.document.errors).toEqual([]);
    expect(parsed.source.document.toJS()).toEqual(parsed.source.data);
  });

  it(`agrees with the reference on ${CASES} mutated manifests of every family`, () => {
    const seeds = { ...SEEDS, ...shippedManifests() };
    const names = Object.keys(seeds);
    const disagreements: string[] = [];
    let taken = 0;
    for (let index = 0; index < CASES; index++) {
      const seed = caseSeed(MASTER_SEED, index);
      const rng = randomFrom(seed);
      const family = FAMILIES[index % FAMILIES.length] as (typeof FAMILIES)[number];
      const base = rng.pick(names);
      const mutation = mutate(seeds[base] as string, family, rng);
      // What the loader reads from the file the fuzz test would write.
      const text = Buffer.from(mutation.text, mutation.encoding).toString('utf8');
      const read = compare(text);
      if (!read.taken) continue;
      taken++;
      if (read.problem)
        disagreements.push(`case ${index} (seed ${seed}, ${family} of ${base}): ${read.problem}\n${text}`);
    }
    expect(disagreements.slice(0, 5)).toEqual([]);
    // Not vacuous: a good share of the mutated manifests take the fast path, and some do not.
    expect(taken).toBeGreaterThan(CASES / 4);
    expect(taken).toBeLessThan(CASES);
  });

  it(`agrees with the reference on ${SOUP_CASES} short texts glued from YAML syntax`, () => {
    const rng = randomFrom(MASTER_SEED ^ 0x50a9);
    const disagreements: string[] = [];
    let taken = 0;
    for (let index = 0; index < SOUP_CASES; index++) {
      let text = '';
      for (let piece = 1 + rng.int(25); piece > 0; piece--) text += rng.pick(SOUP);
      const read = compare(text);
      if (!read.taken) continue;
      taken++;
      if (read.problem) disagreements.push(`${JSON.stringify(text)}: ${read.problem}`);
    }
    expect(disagreements.slice(0, 5)).toEqual([]);
    expect(taken).toBeGreaterThan(SOUP_CASES / 50);
  });
});
