// Manifests the benchmark scenarios write (YAML text).
import { yamlString } from './images.mjs';

/**
 * One image, out/disk.qcow2, converted from the overlay `disk` with `options`, keeping its
 * backing `base` (both qcow2): chainform plans it as one `qemu-img convert -B` of the top layer.
 */
export function convertKeepingBacking({ disk, base, options }) {
  return `version: 1
images:
  disk:
    path: out/disk.qcow2
    from: { path: ${yamlString(disk)}, format: qcow2 }
    backing: { path: ${yamlString(base)}, format: qcow2 }
    options: ${options}
`;
}
