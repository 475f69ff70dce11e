// `chainform graph`: the chains on disk before and after an apply, and the desired ones, as
// Mermaid and DOT, on real images.
import { describe, expect, it } from 'vitest';
import { chainform } from '../helpers/qemu.js';
import { templateAndCopy } from '../helpers/template-copy.js';
import { useWorkspace } from '../helpers/workspace.js';

describe('graph', () => {
  const ws = useWorkspace(async (dir) => {
    const { template, copy } = await templateAndCopy(dir, 'out');
    return [template, copy];
  });

  it('draws the current chains before and after apply, and the desired ones', async () => {
    const { dir } = ws;
    const before = await chainform(dir, 'graph', 'm.yaml');
    expect(before.exitCode, before.stderr).toBe(0);
    expect(before.stdout).toBe(
      'flowchart BT\n  n0["template.raw<br/>raw, 4.0 MiB"]\n  n1["full.raw<br/>raw, 4.0 MiB"]',
    );

    const desired = await chainform(dir, 'graph', 'm.yaml', '--desired', '--format', 'dot');
    expect(desired.stdout).toContain(`"${dir}/out/vm.qcow2" -> "${dir}/out/base.qcow2";`);
    expect(desired.stdout).toMatch(/label="vm: out\/vm\.qcow2\\nqcow2, writes ~[\d.]+ [KM]iB"/);

    expect((await chainform(dir, 'apply', 'm.yaml', '--yes')).exitCode).toBe(0);
    const after = await chainform(dir, 'graph', 'm.yaml', '--current');
    expect(after.stdout).toContain('["base: out/base.qcow2<br/>qcow2, ');
    expect(after.stdout).toMatch(/ {2}n\d --> n\d$/);
    expect(after.stdout.split('-->')).toHaveLength(2);
  });

  it('refuses --current with --desired', async () => {
    const r = await chainform(ws.dir, 'graph', 'm.yaml', '--current', '--desired');
    expect(r).toMatchObject({ exitCode: 1, stderr: 'error: choose one of --current and --desired' });
  });
});
