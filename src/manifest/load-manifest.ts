// Stage 1: read a manifest file and parse its YAML, keeping the document for error locations.
import { readFile } from 'node:fs/promises';
import { type Document, LineCounter, parseDocument } from 'yaml';
import { type Diagnostic, error } from '../diagnostics/diagnostic.js';
import { locationOfOffsets } from './locate.js';

/** A parsed manifest file: its text, its YAML document (for locations) and its plain data. */
export interface ManifestSource {
  /** Absolute path of the manifest file. */
  file: string;
  text: string;
  document: Document.Parsed;
  lineCounter: LineCounter;
  /** The document as plain data, not yet validated. */
  data: unknown;
}

/** Aliases a manifest may expand; more is treated as an alias bomb. */
const MAX_ALIAS_COUNT = 100;

/** Parses manifest text; YAML syntax errors come back as located diagnostics. */
export function parseManifestText(
  file: string,
  text: string,
): { ok: true; source: ManifestSource } | { ok: false; diagnostics: Diagnostic[] } {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, {
    lineCounter,
    uniqueKeys: true,
    prettyErrors: false,
    strict: true,
  });
  const diagnostics: Diagnostic[] = document.errors.map((e) =>
    error('yaml-syntax', e.message.split('\n')[0] ?? e.message, {
      location: locationOfOffsets(file, lineCounter, e.pos[0], e.pos[1]),
    }),
  );
  if (diagnostics.length > 0) return { ok: false, diagnostics };
  let data: unknown;
  try {
    data = document.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (e) {
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
  return { ok: true, source: { file, text, document, lineCounter, data } };
}

/** Reads and parses a manifest file. A missing or unreadable file is a diagnostic. */
export async function loadManifestFile(
  file: string,
): Promise<{ ok: true; source: ManifestSource } | { ok: false; diagnostics: Diagnostic[] }> {
  let text: string;
  try {
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
  if (text.includes('\0')) {
    return {
      ok: false,
      diagnostics: [error('manifest-not-yaml', `${file} is not a YAML manifest: it contains binary data`)],
    };
  }
  return parseManifestText(file, text);
}
