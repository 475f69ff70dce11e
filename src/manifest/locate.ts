// Maps a path inside the manifest data (e.g. ['images', 'web', 'backing']) to a line:column span.
import { isMap, isPair, isScalar, isSeq, type Node, type Pair } from 'yaml';
import type { SourceLocation } from '../diagnostics/diagnostic.js';
import type { ManifestSource } from './load-manifest.js';

/**
 * Line starts of a text, for offset -> line:column. Computed from the text itself: yaml's own
 * LineCounter only learns the line breaks its lexer reports, and misses those inside a token
 * that error recovery swallowed, which shifted every later location by a line.
 */
export class TextLines {
  private readonly starts: number[] = [0];

  constructor(text: string) {
    for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) this.starts.push(i + 1);
  }

  /** 1-based line and column of a character offset. */
  position(offset: number): { line: number; column: number } {
    let low = 0;
    let high = this.starts.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if ((this.starts[mid] ?? 0) <= offset) low = mid;
      else high = mid - 1;
    }
    return { line: low + 1, column: offset - (this.starts[low] ?? 0) + 1 };
  }
}

/** A span from character offsets, as 1-based line/column. */
export function locationOfOffsets(file: string, lines: TextLines, start: number, end: number): SourceLocation {
  const from = lines.position(start);
  const to = lines.position(Math.max(start, end));
  return { file, line: from.line, column: from.column, endLine: to.line, endColumn: to.column };
}

/** Each mapping's pairs by key, built on first lookup: a manifest can hold 10,000 images. */
const pairIndex = new WeakMap<object, Map<string, Pair<Node, Node | null>>>();

function pairWithKey(node: Node, key: string | number): Pair<Node, Node | null> | undefined {
  if (!isMap(node)) return undefined;
  let index = pairIndex.get(node);
  if (!index) {
    index = new Map();
    for (const item of node.items) {
      if (isPair(item) && isScalar(item.key) && !index.has(String(item.key.value))) {
        index.set(String(item.key.value), item as Pair<Node, Node | null>);
      }
    }
    pairIndex.set(node, index);
  }
  return index.get(String(key));
}

/**
 * The character offsets where `path` is written. With `at: 'key'` the span is the mapping key
 * itself (for "unknown key" errors); otherwise the value. A path that does not exist gives its
 * nearest existing ancestor; undefined only when the document has no content at all.
 */
export function spanOf(
  source: ManifestSource,
  path: readonly (string | number)[],
  at: 'key' | 'value' = 'value',
): [number, number] | undefined {
  let node: Node | null | undefined = source.document.contents as Node | null;
  let best: [number, number] | undefined = node?.range ? [node.range[0], node.range[1]] : undefined;
  for (const [index, segment] of path.entries()) {
    if (!node) break;
    const last = index === path.length - 1;
    if (isSeq(node) && typeof segment === 'number') {
      node = node.items[segment] as Node | undefined;
    } else {
      const pair = pairWithKey(node, segment);
      if (!pair) break;
      const keyNode = pair.key as Node;
      if (last && at === 'key' && keyNode.range) {
        best = [keyNode.range[0], keyNode.range[1]];
        break;
      }
      node = pair.value;
      if (!node && keyNode.range) best = [keyNode.range[0], keyNode.range[1]];
    }
    if (node?.range) best = [node.range[0], node.range[1]];
  }
  return best;
}

/** The line:column span of {@link spanOf}; the file's start when there is none. */
export function locationOfSpan(source: ManifestSource, span: [number, number] | undefined): SourceLocation {
  if (!span) return { file: source.file, line: 1, column: 1 };
  return locationOfOffsets(source.file, source.lines, span[0], span[1]);
}

/**
 * Finds where `path` is written (see {@link spanOf}), so that every diagnostic has a location.
 */
export function locate(
  source: ManifestSource,
  path: readonly (string | number)[],
  at: 'key' | 'value' = 'value',
): SourceLocation {
  return locationOfSpan(source, spanOf(source, path, at));
}
