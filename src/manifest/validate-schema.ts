// Stage 2a: check the manifest's shape against the JSON Schema and turn ajv errors into
// located, readable diagnostics.
import type { ErrorObject, ValidateFunction } from 'ajv/dist/2020.js';
import { type Diagnostic, error } from '../diagnostics/diagnostic.js';
import type { ManifestSource } from './load-manifest.js';
import { locate, locationOfSpan, spanOf } from './locate.js';
import type { Manifest } from './manifest.generated.js';
import { validate as generatedValidator } from './manifest-validator.generated.js';

/**
 * The manifest schema as ajv compiled it at build time (scripts/gen-from-schemas.mjs, with
 * allErrors and verbose: errors carry their parent schema, used for the "allowed keys here"
 * hint). Whether the schema is a valid JSON Schema is checked by a unit test.
 */
const validate = generatedValidator as ValidateFunction<Manifest>;

function pointerToPath(pointer: string): string[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function dotted(path: readonly string[]): string {
  return path.length === 0 ? 'the manifest' : path.join('.');
}

function valueAt(data: unknown, path: readonly string[]): unknown {
  let value: unknown = data;
  for (const segment of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[segment];
  }
  return value;
}

/** Longest value quoted in a message; longer ones are cut. */
const MAX_QUOTED = 60;

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  const text = typeof value === 'string' ? JSON.stringify(value) : String(value);
  const shown = text.length > MAX_QUOTED ? `${text.slice(0, MAX_QUOTED)}...` : text;
  return typeof value === 'string' ? `the string ${shown}` : `${typeof value} ${shown}`;
}

/** Schema keys a mapping at this schema location allows, for "unknown key" hints. */
function allowedKeys(parentSchema: unknown): string[] {
  const props = (parentSchema as { properties?: Record<string, unknown> } | undefined)?.properties;
  return props ? Object.keys(props) : [];
}

function toDiagnostic(source: ManifestSource, e: ErrorObject): Diagnostic {
  const path = pointerToPath(e.instancePath);
  const where = dotted(path);
  const value = valueAt(source.data, path);
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String((e.params as { additionalProperty: string }).additionalProperty);
      const allowed = allowedKeys(e.parentSchema);
      return error('unknown-key', `unknown key "${key}" in ${where}`, {
        location: locate(source, [...path, key], 'key'),
        hint: allowed.length ? `allowed keys here: ${allowed.join(', ')}` : undefined,
      });
    }
    case 'required': {
      const key = String((e.params as { missingProperty: string }).missingProperty);
      return error('missing-key', `${where} is missing the required key "${key}"`, {
        location: locate(source, path, path.length ? 'key' : 'value'),
      });
    }
    case 'propertyNames':
    case 'pattern':
    case 'maxLength':
      if (e.propertyName !== undefined || e.keyword === 'propertyNames') {
        const name = e.propertyName ?? String((e.params as { propertyName?: string }).propertyName);
        return error('invalid-image-id', `"${name}" is not a valid image id`, {
          location: locate(source, [...path, name], 'key'),
          hint: 'an id starts with a letter or digit, then letters, digits, "_", "." or "-" (at most 128)',
        });
      }
      return error('invalid-value', `${where} ${e.message ?? 'is not valid'}`, {
        location: locate(source, path),
      });
    case 'type':
      if (path.length === 0) {
        return error(
          'manifest-not-mapping',
          source.data === null || source.data === undefined
            ? 'the manifest is empty'
            : `the manifest must be a mapping with "version" and "images", not ${describeValue(value)}`,
          { location: locate(source, path), hint: 'start from examples/copies-to-overlays/manifest.yaml' },
        );
      }
      {
        const span = spanOf(source, path);
        // `snapshot: 1` is a number to YAML: the usual slip behind a string field's wrong type.
        // The hint quotes it as typed: `1.10` is 1.1 to YAML.
        const unquoted =
          span &&
          (e.params as { type: unknown }).type === 'string' &&
          (typeof value === 'number' || typeof value === 'boolean');
        return error(
          'wrong-type',
          `${where} must be ${(e.params as { type: string | string[] }).type}, not ${describeValue(value)}`,
          {
            location: locationOfSpan(source, span),
            ...(unquoted
              ? { hint: `to give it as text, put it in quotes: "${source.text.slice(span[0], span[1]).trim()}"` }
              : {}),
          },
        );
      }
    case 'enum': {
      const allowed = (e.params as { allowedValues: unknown[] }).allowedValues;
      return error(
        'invalid-value',
        `${where} is ${describeValue(value)}; it must be one of: ${allowed.map((v) => JSON.stringify(v)).join(', ')}`,
        { location: locate(source, path) },
      );
    }
    case 'minProperties':
      return error('invalid-value', `${where} must list at least one image`, { location: locate(source, path) });
    case 'minLength':
      return error('invalid-value', `${where} must not be empty`, { location: locate(source, path) });
    case 'const':
      return error(
        'invalid-value',
        `${where} must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}, not ${describeValue(value)}`,
        { location: locate(source, path) },
      );
    case 'anyOf': {
      // The schema's own description of the field says what it accepts.
      const accepted = (e.parentSchema as { description?: string } | undefined)?.description ?? 'is not valid';
      return error('invalid-value', `${where} is ${describeValue(value)}. ${accepted}`, {
        location: locate(source, path),
      });
    }
    default:
      return error('invalid-value', `${where} ${e.message ?? 'is not valid'}`, {
        location: locate(source, path),
      });
  }
}

/**
 * Ajv reports every failed branch of an `anyOf`. Where the value is a mapping, the mapping
 * branch's own errors are the useful ones (the other branches only say "wrong type");
 * otherwise one summary line says what is accepted. Branches are matched by instance path
 * because a `$ref` inside a branch hides it from the schema path.
 */
function pruneAnyOf(source: ManifestSource, errors: readonly ErrorObject[]): ErrorObject[] {
  const anyOfs = errors.filter((e) => e.keyword === 'anyOf');
  return errors.filter((e) => {
    for (const anyOf of anyOfs) {
      const at = anyOf.instancePath;
      const inside = e !== anyOf && (e.instancePath === at || e.instancePath.startsWith(`${at}/`));
      const value = valueAt(source.data, pointerToPath(at));
      const isMapping = value !== null && typeof value === 'object' && !Array.isArray(value);
      if (e === anyOf && isMapping) return false;
      if (inside && (!isMapping || (e.keyword === 'type' && e.instancePath === at))) return false;
    }
    return true;
  });
}

/** Schema errors reported at most; a last diagnostic counts the rest. */
const MAX_SCHEMA_DIAGNOSTICS = 50;

/** Validates parsed data against the manifest schema. */
export function validateSchema(
  source: ManifestSource,
): { ok: true; manifest: Manifest } | { ok: false; diagnostics: Diagnostic[] } {
  if (validate(source.data)) return { ok: true, manifest: source.data };
  const errors = pruneAnyOf(source, validate.errors ?? []);
  // propertyNames failures come twice (the inner keyword and the wrapper); keep one per name.
  const seen = new Set<string>();
  const diagnostics: Diagnostic[] = [];
  // Locating an error scans its mapping: thousands of errors would take quadratic time, and no
  // one reads past the first few (the CLI prints 20).
  for (const [index, e] of errors.entries()) {
    if (diagnostics.length >= MAX_SCHEMA_DIAGNOSTICS) {
      diagnostics.push(
        error('more-schema-errors', `${errors.length - index} more schema errors are not shown`, {
          location: locate(source, []),
        }),
      );
      break;
    }
    const d = toDiagnostic(source, e);
    const key = `${d.code}|${d.message}|${d.location?.line}:${d.location?.column}`;
    if (seen.has(key)) continue;
    seen.add(key);
    diagnostics.push(d);
  }
  return { ok: false, diagnostics };
}
