// parseManifestText parses with process.env swapped for a plain copy (yaml reads it per token):
// the real environment must be back afterwards, also when the parser gives up.
import { describe, expect, it } from 'vitest';
import { parseManifestText } from '../../src/manifest/load-manifest.js';

describe('parseManifestText', () => {
  it('puts the real process.env back after a parse, and after a parse that overflows the stack', () => {
    const env = process.env;
    const parsed = parseManifestText('/m.yaml', 'version: 1\nimages:\n  a: { path: a.qcow2 }\n');
    expect(parsed.ok).toBe(true);
    expect(process.env).toBe(env);
    const tooDeep = parseManifestText('/m.yaml', `a:\n  ${'- '.repeat(3000)}x\n`);
    expect(tooDeep.ok || tooDeep.diagnostics.map((d) => d.code)).toEqual(['yaml-too-deep']);
    expect(process.env).toBe(env);
  });
});
