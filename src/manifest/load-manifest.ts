// Stage 1: read a manifest file and parse its YAML. The data is read by js-yaml where it reads it
// as `yaml` would (yaml-fast-path.ts); `yaml` reads the rest, names syntax errors, and gives the
// source ranges of diagnostics, parsing the text only when a location is first asked for.
import { readFileSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { type Document, isMap, isPair, isScalar, isSeq, parseDocument } from 'yaml';
import { type Diagnostic, error, type SourceLocation } from '../diagnostics/diagnostic.js';
import { locationOfOffsets, TextLines } from './locate.js';
import { readYamlFast } from './yaml-fast-path.js';

/** A parsed manifest file: its text, its YAML document (for locations) and its plain data. */
export interface ManifestSource {
  /** Absolute path of the manifest file. */
  file: string;
  text: string;
  /**
   * `yaml`'s document of `text`, for source ranges. A manifest read by the fast path is parsed
   * again by `yaml` on first access, which only a diagnostic's location needs.
   */
  readonly document: Document.Parsed;
  /** Offset -> line:column of `text`. */
  lines: TextLines;
  /** The document as plain data, not yet validated. */
  data: unknown;
}

/** The largest file read as a manifest: a 10,000-image manifest is about 0.5 MB. */
const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

/** Aliases a manifest may expand; more is treated as an alias bomb. */
const MAX_ALIAS_COUNT = 100;

/**
 * Ranges of keys that repeat an earlier key of the same mapping (scalar keys, compared as text),
 * in document order. A walk with its own stack (depth-first, each mapping before what it holds,
 * as yaml's visit goes): no recursion to overflow, and no visitor call per node.
 */
function duplicateKeys(document: Document.Parsed): [number, number][] {
  const found: [number, number][] = [];
  const pending: unknown[] = [document.contents];
  while (pending.length > 0) {
    const node = pending.pop();
    const children: unknown[] = [];
    if (isMap(node)) {
      const seen = new Set<string>();
      for (const pair of node.items) {
        children.push(pair.key, pair.value);
        if (!isScalar(pair.key)) continue;
        const key = String(pair.key.value);
        if (seen.has(key) && pair.key.range) found.push([pair.key.range[0], pair.key.range[1]]);
        seen.add(key);
      }
    } else if (isSeq(node)) {
      for (const item of node.items) children.push(item);
    } else if (isPair(node)) {
      children.push(node.key, node.value); // the items of a YAML 1.1 !!pairs or !!omap
    }
    for (let i = children.length - 1; i >= 0; i--) pending.push(children[i]);
  }
  return found;
}

/**
 * Runs `parse` with `process.env` swapped for a plain copy, restored afterwards. yaml's parser
 * reads `process.env.LOG_TOKENS` once per token, and each read of the real `process.env` asks
 * the C++ side: on a 10,000-image manifest that was a quarter of the parse (about 100 of
 * 400 ms). The parse is synchronous, so nothing else can see the copy.
 */
function withPlainEnv<T>(parse: () => T): T {
  const env = process.env;
  process.env = { ...env };
  try {
    return parse();
  } finally {
    process.env = env;
  }
}

/** The error for YAML nested deeper than the parser can follow. */
function tooDeep(file: string, location: SourceLocation = { file, line: 1, column: 1 }): Diagnostic {
  return error('yaml-too-deep', 'the YAML is nested too deeply to read', {
    location,
    hint: 'a manifest needs only a few levels of nesting: check for runaway "- " or "[" sequences',
  });
}

/** `yaml`'s document of `text`; throws RangeError when it is nested too deeply to follow. */
function parseWithYaml(text: string): Document.Parsed {
  // Duplicate keys are found by duplicateKeys: yaml's own check compares every pair of keys of a
  // mapping, which is quadratic in the 10,000 images a large manifest holds.
  // logLevel 'error': yaml would print a Node warning for a collection used as a key; the
  // schema check reports such a key, located, as an invalid id or unknown key.
  return withPlainEnv(() =>
    parseDocument(text, { uniqueKeys: false, prettyErrors: false, strict: true, logLevel: 'error' }),
  );
}

/** A source read by the fast path: its `yaml` document is parsed when first asked for. */
function lazySource(file: string, text: string, lines: TextLines, data: unknown): ManifestSource {
  let document: Document.Parsed | undefined;
  return {
    file,
    text,
    lines,
    data,
    get document() {
      document ??= parseWithYaml(text);
      return document;
    },
  };
}

/** The outcome of reading manifest text: its source, or its YAML errors, located. */
export type ParsedText = { ok: true; source: ManifestSource } | { ok: false; diagnostics: Diagnostic[] };

/** Parses manifest text; YAML syntax errors come back as located diagnostics. */
export function parseManifestText(file: string, text: string): ParsedText {
  const fast = readYamlFast(text);
  if (fast) return { ok: true, source: lazySource(file, text, new TextLines(text), fast.data) };
  return parseWithReference(file, text);
}

/**
 * Parses manifest text with `yaml` alone: the reference reading, which the fast path must agree
 * with wherever it takes a text.
 */
export function parseWithReference(file: string, text: string): ParsedText {
  const lines = new TextLines(text);
  let document: Document.Parsed;
  try {
    document = parseWithYaml(text);
  } catch (e) {
    // yaml's parser recurses per nesting level: thousands of levels overflow the stack.
    if (!(e instanceof RangeError)) throw e;
    return { ok: false, diagnostics: [tooDeep(file)] };
  }
  const diagnostics: Diagnostic[] = document.errors.map((e) =>
    /call stack/i.test(e.message)
      ? tooDeep(file, locationOfOffsets(file, lines, e.pos[0], e.pos[1]))
      : error('yaml-syntax', e.message.split('\n')[0] ?? e.message, {
          location: locationOfOffsets(file, lines, e.pos[0], e.pos[1]),
        }),
  );
  for (const range of duplicateKeys(document)) {
    diagnostics.push(
      error('yaml-syntax', 'Map keys must be unique', { location: locationOfOffsets(file, lines, range[0], range[1]) }),
    );
  }
  if (diagnostics.length > 0) return { ok: false, diagnostics };
  let data: unknown;
  try {
    data = document.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (e) {
    if (e instanceof RangeError) return { ok: false, diagnostics: [tooDeep(file)] };
    // yaml throws ReferenceError for alias bombs and unresolved aliases.
    const message = e instanceof Error ? e.message : String(e);
    return {
      ok: false,
      diagnostics: [
        error('yaml-aliases', `the YAML cannot be expanded: ${message}`, {
          location: { file, line: 1, column: 1 },
          hint: `use fewer YAML aliases (at most ${MAX_ALIAS_COUNT} expansions)`,
        }),
      ],
    };
  }
  return { ok: true, source: { file, text, document, lines, data } };
}

/**
 * Whether `file` is a manifest: short YAML text without NUL bytes whose document is a mapping
 * with `version` and `images` keys. What `import --force` may replace: never a disk image (a raw
 * one has no header to tell it by) or another file.
 */
export function looksLikeManifest(file: string): boolean {
  try {
    if (statSync(file).size > MAX_MANIFEST_BYTES) return false;
    const text = readFileSync(file, 'utf8');
    if (text.includes('\0')) return false;
    const doc = parseDocument(text);
    if (doc.errors.length > 0) return false;
    const data: unknown = doc.toJS();
    return typeof data === 'object' && data !== null && 'version' in data && 'images' in data;
  } catch {
    return false;
  }
}

/** Reads and parses a manifest file. A missing or unreadable file is a diagnostic. */
export async function loadManifestFile(file: string): Promise<ParsedText> {
  let text: string;
  try {
    // A disk image given where the manifest goes would otherwise be read whole into memory.
    const info = await stat(file);
    const size = info.size;
    // Reading a FIFO would wait for a writer, a device for ever.
    if (!info.isFile() && !info.isDirectory()) {
      return {
        ok: false,
        diagnostics: [error('manifest-unreadable', `cannot read manifest ${file}: it is not a regular file`)],
      };
    }
    if (size > MAX_MANIFEST_BYTES) {
      return {
        ok: false,
        diagnostics: [
          error('manifest-too-large', `${file} is not a manifest: it holds ${size} bytes`, {
            hint: `a manifest is a short YAML text (10,000 images take about 0.5 MB; at most ${MAX_MANIFEST_BYTES} bytes are read): check the path, this may be a disk image`,
          }),
        ],
      };
    }
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT'
        ? 'it does not exist'
        : code === 'EISDIR'
          ? 'it is a directory, not a manifest file'
          : (e as Error).message;
    return {
      ok: false,
      diagnostics: [error('manifest-unreadable', `cannot read manifest ${file}: ${reason}`)],
    };
  }
  const nul = text.indexOf('\0');
  if (nul >= 0) {
    return {
      ok: false,
      diagnostics: [
        error('manifest-not-yaml', `${file} is not a YAML manifest: it contains binary data (a NUL byte)`, {
          location: locationOfOffsets(file, new TextLines(text), nul, nul + 1),
        }),
      ],
    };
  }
  return parseManifestText(file, text);
}
