// Where a manifest element sits (line and column) comes from a second reading of the YAML with
// positions, made only when a diagnostic is printed: a plan without diagnostics must not make it
// (it costs as much as the plan of a small manifest). Rewrites once did, for their warnings' sake.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { plan } from '../../src/api.js';
import { qcow2Chain, qemuIo, tempFolder } from '../helpers/qemu.js';

const calls = vi.hoisted(() => ({ parseDocument: 0 }));
vi.mock('yaml', async (importOriginal) => {
  const actual = await importOriginal<typeof import('yaml')>();
  return {
    ...actual,
    parseDocument: (...args: Parameters<typeof actual.parseDocument>) => {
      calls.parseDocument++;
      return actual.parseDocument(...args);
    },
  };
});

let dir = '';
let cleanup: () => Promise<void> = async () => undefined;
beforeEach(async () => {
  ({ dir, cleanup } = await tempFolder());
  calls.parseDocument = 0;
});
afterEach(() => cleanup());

it('plans copies and rewrites in place without reading the manifest again for positions', async () => {
  await qcow2Chain(dir, ['base', 'disk']);
  await qemuIo('qcow2', join(dir, 'disk.qcow2'), 'write -P 0x0d 0 1M');
  await qcow2Chain(dir, ['solo']);
  await writeFile(
    join(dir, 'm.yaml'),
    [
      'version: 1',
      'images:',
      '  copy: { path: out/copy.qcow2, from: { path: disk.qcow2, format: qcow2 }, backing: { path: base.qcow2, format: qcow2 }, options: { compat: "1.1" } }',
      '  solo: { path: solo.qcow2, options: { cluster_size: 131072 } }',
      '',
    ].join('\n'),
  );
  const planned = await plan(join(dir, 'm.yaml'));
  expect(planned.ok && planned.plan.steps.map((step) => step.kind)).toEqual(['convert-keep-backing', 'convert']);
  expect(planned.ok && planned.warnings).toEqual([]);
  expect(calls.parseDocument).toBe(0);
});
