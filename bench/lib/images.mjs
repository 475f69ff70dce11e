// Input images of the benchmark scenarios (made with qemu-img/qemu-io) and checks on the outputs.
import { execa } from 'execa';

/** Cluster size of every image the scenarios make (qemu's default), and the unit of a change. */
export const CLUSTER = 65536;
export const MiB = 1024 * 1024;

/** Creates `path` of `sizeMiB` and writes all of it with byte `pattern` (no sparse region left). */
export async function filledImage(path, format, sizeMiB, pattern, createOptions = []) {
  await execa('qemu-img', ['create', '-q', '-f', format, ...createOptions, path, `${sizeMiB}M`]);
  await execa('qemu-io', ['-f', format, '-c', `write -P ${pattern} 0 ${sizeMiB}M`, path]);
}

/** Creates an empty qcow2 overlay `path` on `backing`. */
export async function emptyOverlay(path, backing, backingFormat, createOptions = []) {
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', ...createOptions, '-b', backing, '-F', backingFormat, path]);
}

/**
 * Rewrites `percent`% of the clusters of `path` with byte `pattern`: every n-th 64 KiB cluster
 * from cluster `first` (n = 100 / percent), so different `first`s give disjoint sets. Returns the
 * bytes changed.
 */
export async function scatterWrites(path, format, { sizeMiB, percent, first, pattern }) {
  const clusters = (sizeMiB * MiB) / CLUSTER;
  const every = Math.round(100 / percent);
  const commands = [];
  for (let c = first; c < clusters; c += every) commands.push('-c', `write -P ${pattern} ${c * CLUSTER} ${CLUSTER}`);
  await execa('qemu-io', ['-f', format, ...commands, path]);
  return (commands.length / 2) * CLUSTER;
}

/** Internal snapshot `tag` of a qcow2 image (7.2's `qemu-img snapshot` has no -f: --image-opts instead). */
export async function snapshot(image, tag) {
  await execa('qemu-img', ['snapshot', '-c', tag, '--image-opts', `driver=qcow2,file.filename=${image}`]);
}

/**
 * A qcow2 image, written all over, snapshot sn0; `percent`% of its clusters rewritten, snapshot
 * sn1; `percent`% more (another set). Its linear chain is image_sn0 (full) <- image_sn1 (delta)
 * <- image (delta). Returns the bytes changed before sn1 and after it.
 */
export async function imageWithSnapshots(image, sizeMiB, percent) {
  await filledImage(image, 'qcow2', sizeMiB, 0x11);
  await snapshot(image, 'sn0');
  const sn1 = await scatterWrites(image, 'qcow2', { sizeMiB, percent, first: 0, pattern: 0x22 });
  await snapshot(image, 'sn1');
  const active = await scatterWrites(image, 'qcow2', { sizeMiB, percent, first: 7, pattern: 0x33 });
  return { image_sn1: sn1, image: active };
}

/** Bytes of data an image stores itself (depth 0 of `qemu-img map`), not through its backing. */
export async function ownDataBytes(file, format = 'qcow2') {
  const { stdout } = await execa('qemu-img', ['map', '--output=json', '-f', format, file]);
  return JSON.parse(stdout)
    .filter((r) => r.depth === 0 && r.data)
    .reduce((sum, r) => sum + r.length, 0);
}

/** Throws unless `qemu-img compare` finds the guest-visible contents identical. */
export async function assertIdentical(a, aFormat, b, bFormat) {
  const same = await execa('qemu-img', ['compare', '-q', '-f', aFormat, '-F', bFormat, a, b], { reject: false });
  if (same.exitCode !== 0) {
    throw new Error(`${a} and ${b} differ (qemu-img compare exit ${same.exitCode}) ${same.stderr}`.trim());
  }
}

/** A manifest value as YAML: a JSON string is a valid YAML scalar, whatever the path holds. */
export const yamlString = (s) => JSON.stringify(s);
