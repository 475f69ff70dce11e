// Inputs of the copies-to-overlays scenarios: a raw template, full copies of it with scattered
// changes, and the manifest that turns the copies into thin qcow2 overlays on the template.
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { assertIdentical, filledImage, ownDataBytes, scatterWrites, yamlString } from './images.mjs';

/**
 * A raw template written all over, and `count` full copies of it, each with `percent`% of its
 * clusters rewritten (scattered 64 KiB writes, each its own byte and, while count <= 100/percent,
 * its own clusters). Returns the paths and the bytes changed in each copy.
 */
export async function makeCopies(dir, { sizeMiB, percent, count }) {
  await mkdir(dir, { recursive: true });
  const template = join(dir, 'template.raw');
  await filledImage(template, 'raw', sizeMiB, 0x5a);
  const copies = [];
  const every = Math.round(100 / percent);
  for (let i = 0; i < count; i++) {
    const path = join(dir, `vm${i + 1}.raw`);
    await copyFile(template, path);
    const first = Math.floor((i * every) / count);
    const changed = await scatterWrites(path, 'raw', { sizeMiB, percent, first, pattern: 0x70 + i });
    copies.push({ id: `vm${i + 1}`, path, changed });
  }
  return { template, copies };
}

/** The manifest: every copy becomes out/<id>.qcow2, a thin overlay on the template as it is. */
export function overlaysManifest({ template, copies }) {
  const lines = ['version: 1', 'defaults:', '  format: qcow2', '  options: { cluster_size: 65536, compat: "1.1" }'];
  lines.push('images:');
  for (const c of copies) {
    lines.push(`  ${c.id}:`, `    path: out/${c.id}.qcow2`, `    from: { path: ${yamlString(c.path)}, format: raw }`);
    lines.push(`    backing: { path: ${yamlString(template)}, format: raw }`);
  }
  return `${lines.join('\n')}\n`;
}

/** The overlays under `dir`/out: identical to their copies (throws if not), and the data each stores. */
export async function checkOverlays(dir, copies) {
  const stored = {};
  for (const c of copies) {
    const out = join(dir, 'out', `${c.id}.qcow2`);
    await assertIdentical(out, 'qcow2', c.path, 'raw');
    stored[c.id] = await ownDataBytes(out);
  }
  return stored;
}
