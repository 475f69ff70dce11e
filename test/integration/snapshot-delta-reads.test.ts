// Snapshot deltas cost a read of the source's cluster tables (128 MiB per state of a 1 TiB
// disk), so they are read only for the links a plan builds, never for links in sync. The tables
// reader is wrapped here to count every read the process makes, inspection included.
import { rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { plan } from '../../src/api.js';
import { chainform } from '../helpers/qemu.js';
import { linearManifest, makeRfcChain } from '../helpers/rfc-chain.js';
import { useWorkspace } from '../helpers/workspace.js';

/** Every clusterDelta call of this process: "file: from -> to". */
const tableReads = vi.hoisted((): string[] => []);

vi.mock('../../src/inspect/qcow2-delta.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/inspect/qcow2-delta.js')>();
  return {
    ...real,
    clusterDelta: (...args: Parameters<typeof real.clusterDelta>) => {
      const [path, fromId, toId] = args;
      tableReads.push(`${basename(path)}: ${fromId} -> ${toId}`);
      return real.clusterDelta(...args);
    },
  };
});

const ws = useWorkspace(makeRfcChain);

/** The plan's step ids and the table reads planning it made. */
async function planned(dir: string) {
  tableReads.length = 0;
  const result = await plan(join(dir, 'manifest.yaml'));
  if (!result.ok) throw new Error(JSON.stringify(result.diagnostics));
  return { steps: result.plan.steps.map((s) => s.id), reads: [...tableReads] };
}

describe('snapshot deltas: cluster tables read only for links being built', () => {
  beforeEach(async () => {
    await writeFile(join(ws.dir, 'manifest.yaml'), linearManifest('export'));
  });

  it('reads each linked pair once for a first build, none once in sync, and only the rebuilt link after', async () => {
    const { dir } = ws;
    const first = await planned(dir);
    const deltaSteps = first.steps.filter((id) => id.endsWith(':delta'));
    expect(deltaSteps.length).toBeGreaterThan(1);
    // One read per link copied as a delta, each pair of states once.
    expect(first.reads.length).toBe(deltaSteps.length);
    expect(new Set(first.reads).size).toBe(first.reads.length);

    const applied = await chainform(dir, 'apply', 'manifest.yaml', '--yes', '--quiet');
    expect(applied.exitCode, applied.stdout + applied.stderr).toBe(0);
    expect(await planned(dir)).toEqual({ steps: [], reads: [] });

    // One link gone: only its pair is read.
    await rm(join(dir, 'export/imageC.qcow2'));
    const again = await planned(dir);
    expect(again.steps).toEqual(['imageC:delta']);
    expect(again.reads).toHaveLength(1);
    expect(again.reads[0]).toMatch(/^imageC\.qcow2: \S+ -> null$/);
  });
});
