// Deterministic hostile edits of manifest text for the fuzz test: a seeded PRNG (mulberry32) and
// families of mutations (bytes, YAML structure, wrong types, huge numbers, deep nesting, alias
// bombs, duplicate keys, odd strings and paths). The same seed always gives the same text.
import {
  isMap,
  isPair,
  isScalar,
  isSeq,
  type Node,
  type Pair,
  parseDocument,
  Scalar,
  type YAMLMap,
  type YAMLSeq,
} from 'yaml';
import type { Value } from './hostile-values.js';
import {
  BY_FIELD,
  IDS,
  NUMBERS,
  PATHS,
  Raw,
  raw,
  SIZES,
  STRINGS,
  UNKNOWN_KEYS,
  WRONG_TYPES,
} from './hostile-values.js';
import { mulberry32 } from './random.js';

/** A seeded source of randomness; never Math.random, so every case can be reproduced. */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [0, n). */
  int(n: number): number;
  pick<T>(items: readonly T[]): T;
  chance(p: number): boolean;
}

/** A {@link Random} on mulberry32. */
export function randomFrom(seed: number): Random {
  const next = mulberry32(seed);
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    pick: <T>(items: readonly T[]): T => {
      if (items.length === 0) throw new Error('pick from an empty list');
      return items[int(items.length)] as T;
    },
    chance: (p) => next() < p,
  };
}

/** The seed of case `index` under `master`: distinct, stable, and printable on failure. */
export function caseSeed(master: number, index: number): number {
  let h = (master ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** One mutated manifest: the family that made it, and the text to write. */
export interface Mutation {
  family: Family;
  /** What was done, for the failure report. */
  steps: string[];
  text: string;
  /**
   * How to write `text`: latin1 turns chars 0x80-0xff into single bytes, i.e. invalid UTF-8.
   * Always utf8 unless the family is about raw bytes.
   */
  encoding: 'utf8' | 'latin1';
}

/** The families of mutations, each a different way a manifest can be broken. */
export const FAMILIES = [
  'bytes',
  'truncate',
  'tabs',
  'wrong-type',
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
  'document',
  'binary',
  'combo',
] as const;

/** A family of mutations. */
export type Family = (typeof FAMILIES)[number];

/** A path into the document: a mapping key or a sequence index, per level. */
interface Slot {
  collection: YAMLMap | YAMLSeq;
  index: number;
  /** The key of the pair (for maps), for field-specific values. */
  key: string | undefined;
  depth: number;
}

/** Every pair of every mapping and every item of every sequence, depth first. */
function slotsOf(node: unknown, depth = 0, out: Slot[] = []): Slot[] {
  if (isMap(node)) {
    node.items.forEach((pair, index) => {
      const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
      out.push({ collection: node, index, key, depth });
      slotsOf(pair.value, depth + 1, out);
    });
  } else if (isSeq(node)) {
    node.items.forEach((item, index) => {
      out.push({ collection: node, index, key: undefined, depth });
      slotsOf(item, depth + 1, out);
    });
  }
  return out;
}

/** Every mapping of the document, where unknown keys can go. */
function mapsOf(node: unknown, out: YAMLMap[] = []): YAMLMap[] {
  if (isMap(node)) {
    out.push(node);
    for (const pair of node.items) mapsOf(pair.value, out);
  } else if (isSeq(node)) {
    for (const item of node.items) mapsOf(item, out);
  }
  return out;
}

/** Builds a document edit session on one seed: values are placed, then printed with raws. */
class Editor {
  readonly doc;
  private readonly raws: string[] = [];

  constructor(text: string) {
    this.doc = parseDocument(text);
  }

  /** A node for `value`; a Raw becomes a unique plain placeholder replaced when printing. */
  node(value: Value): Node {
    if (value instanceof Raw) {
      this.raws.push(value.text);
      return new Scalar(`RAWPLACEHOLDER${this.raws.length - 1}X`);
    }
    return this.doc.createNode(value) as Node;
  }

  slots(): Slot[] {
    return slotsOf(this.doc.contents);
  }

  maps(): YAMLMap[] {
    return mapsOf(this.doc.contents);
  }

  set(slot: Slot, value: Value): void {
    if (isMap(slot.collection)) {
      const pair = slot.collection.items[slot.index] as Pair;
      pair.value = this.node(value);
    } else {
      slot.collection.items[slot.index] = this.node(value);
    }
  }

  remove(slot: Slot): void {
    slot.collection.items.splice(slot.index, 1);
  }

  print(): string {
    let text = this.doc.toString({ lineWidth: 0 });
    this.raws.forEach((r, i) => {
      text = text.replace(`RAWPLACEHOLDER${i}X`, () => r);
    });
    return text;
  }
}

/** A short description of a value for the mutation steps. */
function show(value: Value): string {
  if (value instanceof Raw) return `raw ${JSON.stringify(value.text.slice(0, 40))}`;
  const json = JSON.stringify(value) ?? String(value);
  return json.length > 40 ? `${json.slice(0, 40)}... (${json.length} chars)` : json;
}

/** Characters a byte edit inserts: YAML indicators, whitespace, line breaks, non-ASCII. */
const PALETTE = [
  ' ',
  '\t',
  '\n',
  '\r',
  ':',
  '-',
  '?',
  ',',
  '[',
  ']',
  '{',
  '}',
  '#',
  '&',
  '*',
  '!',
  '|',
  '>',
  "'",
  '"',
  '%',
  '@',
  '`',
  '\\',
  '0',
  '9',
  'a',
  'Z',
  '.',
  '/',
  '~',
  'é',
  '\u2028',
  '\u00a0',
  '\ufeff',
  '💾',
  ': ',
  '- ',
  '\n  ',
  '\n- ',
];

/** One character-level edit: delete, insert, replace, swap, duplicate, re-indent or move a line. */
function byteEdit(text: string, rng: Random, steps: string[]): string {
  const at = rng.int(text.length + 1);
  switch (rng.int(7)) {
    case 0: {
      const len = 1 + rng.int(rng.chance(0.2) ? 40 : 4);
      steps.push(`delete ${len} at ${at}`);
      return text.slice(0, at) + text.slice(at + len);
    }
    case 1: {
      const insert = rng.pick(PALETTE);
      steps.push(`insert ${JSON.stringify(insert)} at ${at}`);
      return text.slice(0, at) + insert + text.slice(at);
    }
    case 2: {
      const replace = rng.pick(PALETTE);
      steps.push(`replace at ${at} with ${JSON.stringify(replace)}`);
      return text.slice(0, at) + replace + text.slice(at + 1);
    }
    case 3: {
      steps.push(`swap at ${at}`);
      return text.slice(0, at) + text.charAt(at + 1) + text.charAt(at) + text.slice(at + 2);
    }
    case 4: {
      const len = 1 + rng.int(30);
      steps.push(`duplicate ${len} at ${at}`);
      return text.slice(0, at + len) + text.slice(at, at + len) + text.slice(at + len);
    }
    case 5: {
      const lines = text.split('\n');
      const i = rng.int(lines.length);
      const shift = rng.pick([' ', '  ', '   ', '']);
      steps.push(`indent line ${i + 1} by ${JSON.stringify(shift)}`);
      lines[i] = rng.chance(0.5) ? shift + (lines[i] ?? '') : (lines[i] ?? '').replace(/^ {1,3}/, '');
      return lines.join('\n');
    }
    default: {
      const lines = text.split('\n');
      const i = rng.int(lines.length);
      const j = rng.int(lines.length);
      steps.push(`swap lines ${i + 1} and ${j + 1}`);
      const a = lines[i] ?? '';
      lines[i] = lines[j] ?? '';
      lines[j] = a;
      return lines.join('\n');
    }
  }
}

/** One edit of the parsed seed (a value, a key, a removal), printed back as YAML. */
function structural(seed: string, rng: Random, steps: string[], family: Family): string {
  const editor = new Editor(seed);
  const slots = editor.slots();
  const slot = rng.pick(slots);
  const where = `${slot.key ?? `[${slot.index}]`} (depth ${slot.depth})`;
  switch (family) {
    case 'wrong-type': {
      const value = rng.pick(WRONG_TYPES);
      steps.push(`set ${where} to ${show(value)}`);
      editor.set(slot, value);
      break;
    }
    case 'field-value': {
      const fielded = slots.filter((s) => s.key !== undefined && BY_FIELD[s.key]);
      const target = fielded.length ? rng.pick(fielded) : slot;
      const value = rng.pick(BY_FIELD[target.key ?? ''] ?? WRONG_TYPES);
      steps.push(`set ${target.key} (depth ${target.depth}) to ${show(value)}`);
      editor.set(target, value);
      break;
    }
    case 'huge-number': {
      const numeric = slots.filter((s) => ['size', 'cluster_size', 'refcount_bits', 'version'].includes(s.key ?? ''));
      const target = numeric.length && rng.chance(0.8) ? rng.pick(numeric) : slot;
      const value = rng.pick(target.key === 'size' ? SIZES : NUMBERS);
      steps.push(`set ${target.key ?? target.index} to ${show(value)}`);
      editor.set(target, value);
      break;
    }
    case 'strings': {
      const value = rng.pick(STRINGS);
      steps.push(`set ${where} to ${show(value)}`);
      editor.set(slot, value);
      break;
    }
    case 'hostile-path': {
      const pathSlots = slots.filter((s) => s.key === 'path' || s.key === 'data_file');
      const target = pathSlots.length ? rng.pick(pathSlots) : slot;
      const value = rng.pick(PATHS);
      steps.push(`set ${target.key} (depth ${target.depth}) to ${show(value)}`);
      editor.set(target, value);
      break;
    }
    case 'unknown-key': {
      const map = rng.pick(editor.maps());
      const key = rng.pick(UNKNOWN_KEYS);
      const value = rng.pick([...WRONG_TYPES.slice(0, 14), 'out/x.qcow2']);
      steps.push(`add key ${show(key)}: ${show(value)}`);
      map.items.push(editor.doc.createPair(editor.node(key), editor.node(value)));
      if (rng.chance(0.3)) {
        // An id that breaks the image-id pattern, in place of a real one.
        const images = editor.doc.get('images');
        if (isMap(images) && images.items.length > 0) {
          const pair = rng.pick(images.items);
          const id = rng.pick(IDS);
          steps.push(`rename an image to ${show(id)}`);
          if (isPair(pair)) pair.key = editor.node(id);
        }
      }
      break;
    }
    case 'missing-key': {
      const count = 1 + rng.int(3);
      for (let i = 0; i < count; i++) {
        const current = editor.slots();
        if (current.length === 0) break;
        const target = rng.pick(current);
        steps.push(`remove ${target.key ?? `[${target.index}]`} (depth ${target.depth})`);
        editor.remove(target);
      }
      break;
    }
    default:
      throw new Error(`not a structural family: ${family}`);
  }
  return editor.print();
}

/** `depth` levels of nesting of one kind, in flow style on one line, or as block lines. */
function deepNesting(seed: string, rng: Random, steps: string[]): string {
  const depth = rng.pick([1000, 1500, 3000, 5000, 20_000]);
  const editor = new Editor(seed);
  let nest: string;
  let slot: Slot;
  if (rng.chance(0.25)) {
    // Block styles under a top-level key (indent 0), so that their indentation is right.
    slot = rng.pick(editor.slots().filter((s) => s.depth === 0));
    if (rng.chance(0.5) && depth <= 1500) {
      // a:\n  a:\n   a: ... one more space per level.
      nest = `\n${Array.from({ length: depth }, (_, i) => `${' '.repeat(i + 1)}a:`).join('\n')} 1`;
      steps.push(`block mappings nested ${depth} deep`);
    } else {
      // Block sequences nest on one line: "- - - - x".
      nest = `\n  ${'- '.repeat(depth)}x`;
      steps.push(`block sequences nested ${depth} deep`);
    }
  } else {
    slot = rng.pick(editor.slots());
    const kind = rng.int(6);
    const shapes: [string, string][] = [
      ['[', ']'],
      ['{a: ', '}'],
      ['[{a: ', '}]'],
      ['{a: [', ']}'],
      ['[', ''],
      ['{', '}'],
    ];
    const [open, close] = shapes[kind] ?? ['[', ']'];
    const inner = open.includes('a: ') ? '1' : '';
    // The last shape leaves one level unclosed.
    const closing = kind === 5 ? Math.max(0, depth - 1) : depth;
    nest = `${open.repeat(depth)}${inner}${close.repeat(closing)}`;
    steps.push(`${JSON.stringify(open)} nested ${depth} deep`);
  }
  steps.push(`at ${slot.key ?? slot.index}`);
  editor.set(slot, raw(nest));
  return editor.print();
}

/** Billion laughs and relatives: anchors whose aliases expand exponentially. */
function aliasBomb(seed: string, rng: Random, steps: string[]): string {
  const width = rng.pick([2, 9, 10, 30]);
  const levels = rng.pick([5, 9, 12]);
  const names = 'abcdefghijklmnop'.slice(0, levels).split('');
  const mapping = rng.chance(0.3);
  const lines = names.map((name, i) => {
    const prev = names[i - 1];
    if (mapping) {
      const entries = Array.from({ length: width }, (_, k) => `k${k}: ${prev ? `*${prev}` : '"lol"'}`);
      return `${name}: &${name} {${entries.join(', ')}}`;
    }
    const items = Array.from({ length: width }, () => (prev ? `*${prev}` : '"lol"'));
    return `${name}: &${name} [${items.join(', ')}]`;
  });
  const top = names.at(-1) ?? 'a';
  steps.push(`${mapping ? 'mapping' : 'list'} bomb ${width}^${levels}`);
  const where = rng.int(4);
  if (where === 0) {
    // The bomb's keys are unknown keys of the manifest; it is expanded all the same.
    return `${lines.join('\n')}\n${seed}`;
  }
  if (where === 1) {
    return `${lines.map((l) => `x-${l}`).join('\n')}\nversion: 1\nimages: *${top}\n`;
  }
  if (where === 2) {
    return `defs: ${'\n'}${lines.map((l) => `  ${l}`).join('\n')}\n${seed.replace(/path: [^\n,}]+/, `path: *${top}`)}`;
  }
  return seed.replace(/^images:/m, `defaults:\n  options:\n${lines.map((l) => `    ${l}`).join('\n')}\nimages:`);
}

/** Aliases that are not bombs: undefined, forward, recursive, used as keys, at the limit. */
function aliases(seed: string, rng: Random, steps: string[]): string {
  const choice = rng.int(9);
  steps.push(`alias case ${choice}`);
  switch (choice) {
    case 0:
      return seed.replace(/path: [^\n,}]+/, 'path: *nowhere');
    case 1:
      return `a: &a [*a]\n${seed}`;
    case 2:
      return seed.replace(/^images:/m, 'images: &imgs').concat('extra: *imgs\n');
    case 3: {
      // Exactly at, and just past, the alias limit, with a 100k string each time.
      const n = rng.pick([99, 100, 101, 150]);
      const uses = Array.from({ length: n }, (_, i) => `  i${i}: { path: *s }`).join('\n');
      return `s: &s "${'y'.repeat(100_000)}"\nversion: 1\nimages:\n${uses}\n`;
    }
    case 4:
      return seed
        .replace(/format: (\w+)/, 'format: &f $1')
        .replace(/(format: \w+)([^&]*?)format: \w+/s, '$1$2format: *f');
    case 5:
      return `${seed}x: &k path\n*k : y\n`;
    case 6:
      return seed.replace(/^ {2}(\w+):\n/m, '  $1: &img\n').concat('  copy: *img\n');
    case 7:
      return seed.replace(/^version: 1/m, 'version: &v 1\nagain: *v');
    default:
      return `${seed}merged:\n  <<: *nowhere\n`;
  }
}

/** The same key twice in one mapping, in block and flow style and with other quoting. */
function duplicateKey(seed: string, rng: Random, steps: string[]): string {
  const lines = seed.split('\n');
  const keyed = lines.map((line, i) => ({ line, i })).filter(({ line }) => /^\s*[\w$]+:/.test(line));
  const choice = rng.int(5);
  steps.push(`duplicate case ${choice}`);
  if (choice === 0 && keyed.length) {
    const { line, i } = rng.pick(keyed);
    lines.splice(i + 1, 0, line.replace(/^(\s*)([\w$]+):.*$/, '$1$2: dup'));
    return lines.join('\n');
  }
  if (choice === 1) return `${seed}${seed.replace(/^#.*\n/gm, '')}`;
  if (choice === 2) return seed.replace(/\bpath:/, '"path": a.qcow2\n    path:');
  if (choice === 3) return seed.replace(/\{ *path:/, '{ path: dup.qcow2, path:');
  return `${seed}version: 1\n`;
}

/** Whole-document oddities: empty, several documents, directives, BOM, line ends, wrong root. */
function document(seed: string, rng: Random, steps: string[]): string {
  const choices: [string, () => string][] = [
    ['empty', () => ''],
    ['blank', () => ' \n\n\t\n'],
    ['comment only', () => '# nothing here\n'],
    ['start marker', () => '---\n'],
    ['end marker', () => '...\n'],
    ['two documents', () => `${seed}---\n${seed}`],
    ['two empty documents', () => '---\n---\n'],
    ['literal block', () => '--- |\n  version: 1\n'],
    ['YAML 1.1 directive', () => `%YAML 1.1\n---\n${seed}`],
    ['YAML 2.0 directive', () => `%YAML 2.0\n---\n${seed}`],
    ['TAG directive', () => `%TAG !e! tag:example.com,2000:\n---\n${seed}`],
    ['directive without document', () => `%YAML 1.2\n${seed}`],
    ['BOM', () => `\ufeff${seed}`],
    ['two BOMs', () => `\ufeff\ufeff${seed}`],
    ['CRLF', () => seed.replace(/\n/g, '\r\n')],
    ['CR only', () => seed.replace(/\n/g, '\r')],
    ['NEL', () => seed.replace(/\n/g, '\u0085')],
    ['U+2028', () => seed.replace(/\n/g, '\u2028')],
    ['no final newline', () => seed.trimEnd()],
    ['null', () => 'null\n'],
    ['list', () => '- version: 1\n'],
    ['empty list', () => '[]\n'],
    ['empty map', () => '{}\n'],
    ['number', () => '42\n'],
    ['string', () => '"version: 1"\n'],
    ['binary tag', () => '!!binary AAAA\n'],
    ['set', () => '!!set {version, images}\n'],
    ['omap', () => '!!omap [version: 1]\n'],
    ['tagged root', () => `!manifest\n${seed}`],
    ['complex key root', () => `? version\n: 1\n? [images]\n: x\n`],
    ['flow', () => '{version: 1, images: {a: {path: out/a.qcow2, from: {path: in/tpl.raw, format: raw}}}}'],
    ['unclosed flow', () => '{version: 1, images: {a: {path: out/a.qcow2'],
    ['version only', () => 'version: 1\n'],
    ['images empty', () => 'version: 1\nimages: {}\n'],
    ['images null', () => 'version: 1\nimages:\n'],
    ['long comment', () => `# ${'c'.repeat(100_000)}\n${seed}`],
    ['long line', () => `${seed}x: ${'y'.repeat(200_000)}\n`],
    ['many keys', () => `${seed}${Array.from({ length: 1500 }, (_, i) => `k${i}: ${i}`).join('\n')}\n`],
    [
      'many images',
      () =>
        `version: 1\nimages:\n${Array.from({ length: 20 }, (_, i) => `  i${i}: { path: out/i${i}.qcow2, from: { path: in/tpl.raw, format: raw } }`).join('\n')}\n`,
    ],
    ['indented by one', () => seed.replace(/^/gm, ' ')],
    ['indented with tabs', () => seed.replace(/^( +)/gm, (m) => '\t'.repeat(m.length / 2))],
    ['reserved indicator', () => `@${seed}`],
    ['JSON', () => JSON.stringify(parseDocument(seed).toJS())],
    ['JSON with comments', () => `${JSON.stringify(parseDocument(seed).toJS(), null, 2)} // trailing`],
  ];
  const [name, make] = rng.pick(choices);
  steps.push(name);
  return make();
}

/** Control bytes and lone high bytes (written as invalid UTF-8 half of the time). */
function binary(seed: string, rng: Random, steps: string[]): { text: string; encoding: 'utf8' | 'latin1' } {
  const bytes = ['\0', '\x01', '\x07', '\x08', '\x0b', '\x0c', '\x1b', '\x7f', '\x80', '\xff', '\xc3', '\xfe'];
  let text = seed;
  const count = 1 + rng.int(3);
  for (let i = 0; i < count; i++) {
    const at = rng.int(text.length + 1);
    const b = rng.pick(bytes);
    steps.push(`byte 0x${b.charCodeAt(0).toString(16).padStart(2, '0')} at ${at}`);
    text = text.slice(0, at) + b + text.slice(at);
  }
  // latin1 writes 0x80-0xff as lone bytes: invalid UTF-8 on disk.
  return { text, encoding: rng.chance(0.5) ? 'latin1' : 'utf8' };
}

/** One mutation of `seed` in `family`, fully determined by `rng`. */
export function mutate(seed: string, family: Family, rng: Random): Mutation {
  const steps: string[] = [];
  let text: string;
  let encoding: Mutation['encoding'] = 'utf8';
  switch (family) {
    case 'bytes': {
      text = seed;
      const count = 1 + rng.int(4);
      for (let i = 0; i < count; i++) text = byteEdit(text, rng, steps);
      break;
    }
    case 'truncate': {
      const at = rng.int(seed.length);
      steps.push(`truncate at ${at}`);
      text = seed.slice(0, at);
      break;
    }
    case 'tabs': {
      const lines = seed.split('\n');
      const count = 1 + rng.int(3);
      for (let i = 0; i < count; i++) {
        const n = rng.int(lines.length);
        steps.push(`tab on line ${n + 1}`);
        const line = lines[n] ?? '';
        lines[n] = rng.chance(0.5) ? line.replace(/^ {1,2}/, '\t') : line.replace(': ', ':\t');
      }
      text = lines.join('\n');
      break;
    }
    case 'wrong-type':
    case 'field-value':
    case 'huge-number':
    case 'strings':
    case 'hostile-path':
    case 'unknown-key':
    case 'missing-key':
      text = structural(seed, rng, steps, family);
      break;
    case 'deep-nesting':
      text = deepNesting(seed, rng, steps);
      break;
    case 'alias-bomb':
      text = aliasBomb(seed, rng, steps);
      break;
    case 'aliases':
      text = aliases(seed, rng, steps);
      break;
    case 'duplicate-key':
      text = duplicateKey(seed, rng, steps);
      break;
    case 'document':
      text = document(seed, rng, steps);
      break;
    case 'binary':
      ({ text, encoding } = binary(seed, rng, steps));
      break;
    case 'combo': {
      const first = rng.pick(['wrong-type', 'field-value', 'unknown-key', 'missing-key', 'hostile-path'] as const);
      steps.push(first);
      text = structural(seed, rng, steps, first);
      text = byteEdit(text, rng, steps);
      break;
    }
    default: {
      const unreachable: never = family;
      throw new Error(`unknown family ${String(unreachable)}`);
    }
  }
  return { family, steps, text, encoding };
}
