// The fast reading of a manifest's YAML. The `yaml` library (load-manifest.ts) is the reference
// reader: its errors and source ranges make the located diagnostics. It takes 0.3-0.9 s to read
// a manifest of 10,000 images, a third of a plan's time, where js-yaml 5 takes 35-110 ms. So a
// manifest is first read by js-yaml, with the YAML 1.2 core schema as `yaml` applies it, and taken
// as read only when it holds nothing the two libraries read differently: one document with no
// markers or directives; no tags, anchors or aliases; no null or overlong mapping key; block
// mapping keys each at the start of a line, in line; every scalar on one line, none of them a
// block scalar; no tab, byte order mark or `\U` escape, and no line ended by a carriage return
// alone. Everything else, and whatever js-yaml refuses, is read by `yaml` as before: those forms
// are where the two were found to disagree (a review fed both libraries 1.5 million generated
// texts), and a manifest has no need of them. test/manifest/yaml-fast-path.test.ts holds the two
// readings together on mutated manifests and on texts glued from YAML syntax.
import {
  COLLECTION_STYLE,
  CORE_SCHEMA,
  constructFromEvents,
  EVENT_ID,
  type Event,
  floatCoreTag,
  getScalarValue,
  NOT_RESOLVED,
  parseEvents,
  SCALAR_STYLE,
} from 'js-yaml';

/** The core schema's plain null forms (a mapping key in one of them is read differently). */
const NULL_FORMS = new Set(['', '~', 'null', 'Null', 'NULL']);

/** Core schema number forms: `yaml` reads one too large for a double as ±Infinity. */
const INT_FORM = /^[-+]?[0-9]+$/;
const OCTAL_FORM = /^0o[0-7]+$/;
const HEX_FORM = /^0x[0-9a-fA-F]+$/;
const FLOAT_FORM = /^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$/;

/**
 * js-yaml's core float tag, also resolving the number forms it leaves as text because their value
 * overflows a double (`1e400`, a 400-digit integer): `yaml` reads those as ±Infinity, and so must
 * this reading. Both are then refused by the schema as numbers, not as strings.
 */
const floatAsYamlReadsIt: typeof floatCoreTag = {
  ...floatCoreTag,
  resolve(source, isExplicit, tagName) {
    const value = floatCoreTag.resolve(source, isExplicit, tagName);
    if (value !== NOT_RESOLVED) return value;
    if (OCTAL_FORM.test(source)) return Number.parseInt(source.slice(2), 8);
    if (HEX_FORM.test(source)) return Number.parseInt(source.slice(2), 16);
    if (INT_FORM.test(source)) return Number.parseInt(source, 10);
    if (FLOAT_FORM.test(source)) return Number.parseFloat(source);
    return NOT_RESOLVED;
  },
};

const SCHEMA = CORE_SCHEMA.withTags(floatAsYamlReadsIt);

/**
 * Text the fast path leaves to `yaml`: a tab anywhere (as indentation `yaml` refuses it, js-yaml
 * reads on), a carriage return not followed by a line feed (js-yaml ends a line there, `yaml`
 * does not), a document marker at the start of a line (`---`, `...`: js-yaml read
 * `a\n...\n...` as one document, `yaml` as two), a byte order mark (js-yaml read `\ufeff- a`,
 * which `yaml` refuses), and a `\U` escape (js-yaml turns one past U+10FFFF into other
 * characters, `yaml` refuses it).
 */
const DECLINED_TEXT = /\t|\r(?!\n)|^ *(?:---|\.\.\.)|\uFEFF|\\U/m;

/** The longest implicit mapping key YAML allows; js-yaml reads longer ones. */
const MAX_IMPLICIT_KEY = 1024;

/** Where the token of a node starts: a quoted scalar's value starts after its quote. */
function tokenStart(
  event: Exclude<Event, { type: typeof EVENT_ID.DOCUMENT | typeof EVENT_ID.ALIAS | typeof EVENT_ID.POP }>,
): number {
  if (event.type !== EVENT_ID.SCALAR) return event.start;
  const quoted = event.style === SCALAR_STYLE.SINGLE_QUOTED || event.style === SCALAR_STYLE.DOUBLE_QUOTED;
  return quoted ? event.valueStart - 1 : event.valueStart;
}

/** The offset where the line holding `position` starts. */
function lineStartOf(text: string, position: number): number {
  return text.lastIndexOf('\n', position - 1) + 1;
}

/**
 * Whether the event stream holds only what js-yaml and `yaml` read alike (see the file comment).
 * Mapping keys are told apart by position: in a mapping, every even-numbered child is a key.
 * Every key of a block mapping after its first must begin its line at the mapping's column, as
 * YAML requires: js-yaml took the `y` of `a:\n- "x" y: 1` as a key of the outer mapping, where
 * `yaml` refuses the line.
 */
function readsAlike(text: string, events: readonly Event[]): boolean {
  /**
   * Per open collection: whether it is a mapping, how many children it has had so far, and for
   * a block mapping the column its keys stand at.
   */
  const open: { mapping: boolean; children: number; keyColumn?: number }[] = [];
  let documents = 0;
  for (const event of events) {
    switch (event.type) {
      case EVENT_ID.DOCUMENT:
        documents++;
        if (documents > 1 || event.directives.length > 0) return false;
        continue;
      case EVENT_ID.POP:
        open.pop();
        continue;
      case EVENT_ID.ALIAS:
        return false;
      case EVENT_ID.SEQUENCE:
      case EVENT_ID.MAPPING:
      case EVENT_ID.SCALAR: {
        if (event.tagStart !== -1 || event.anchorStart !== -1) return false;
        const parent = open.at(-1);
        const isKey = parent?.mapping === true && parent.children % 2 === 0;
        if (isKey && parent.keyColumn !== undefined && parent.children > 0) {
          const start = tokenStart(event);
          const lineStart = lineStartOf(text, start);
          if (start - lineStart !== parent.keyColumn || text.slice(lineStart, start).trim() !== '') return false;
        }
        if (parent) parent.children++;
        if (event.type !== EVENT_ID.SCALAR) {
          const block = event.type === EVENT_ID.MAPPING && event.style === COLLECTION_STYLE.BLOCK;
          const keyColumn = block ? event.start - lineStartOf(text, event.start) : undefined;
          open.push({ mapping: event.type === EVENT_ID.MAPPING, children: 0, keyColumn });
          continue;
        }
        if (isKey && event.valueEnd - event.valueStart > MAX_IMPLICIT_KEY) return false;
        // Block scalars and scalars folded over lines: their whitespace rules are where the two
        // read differently (`|2` over a line of spaces, an escaped line break in double quotes).
        if (event.style === SCALAR_STYLE.LITERAL_BLOCK || event.style === SCALAR_STYLE.FOLDED_BLOCK) return false;
        const lineEnd = text.indexOf('\n', event.valueStart);
        if (lineEnd !== -1 && lineEnd < event.valueEnd) return false;
        if (isKey && event.style === SCALAR_STYLE.PLAIN && NULL_FORMS.has(getScalarValue(text, event))) return false;
        continue;
      }
      default: {
        const unknown: never = event;
        return unknown;
      }
    }
  }
  return documents === 1;
}

/**
 * The plain data of `text` read by js-yaml, or undefined when it must be read by `yaml` instead:
 * js-yaml refused it (a syntax error, nesting past 100 levels, a duplicate key, an empty text),
 * or it holds something the two could read differently.
 */
export function readYamlFast(text: string): { data: unknown } | undefined {
  if (DECLINED_TEXT.test(text)) return undefined;
  try {
    const events = parseEvents(text, {});
    if (!readsAlike(text, events)) return undefined;
    const [data] = constructFromEvents(events, { source: text, schema: SCHEMA, maxAliases: 0 });
    return { data };
  } catch {
    // js-yaml's own messages are not shown: the `yaml` reading names the error and its place.
    return undefined;
  }
}
