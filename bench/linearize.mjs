// Benchmark: linearising internal snapshots. A qcow2 image (default 1 GiB, fully written) gets
// snapshot sn0, then CHANGE% of its clusters rewritten, snapshot sn1, CHANGE% more: the linear
// chain is image_sn0 (full) <- image_sn1 (delta) <- image (delta).
// Compared: chainform (`import --linearize` + `apply`) against the internal-snapshot RFC's
// two-step procedure (full exports with `convert -l`, then overlay + safe rebase per delta).
// Bytes written are the kernel's block-output count of each run and its children (GNU time %O,
// 512-byte units), wall time from GNU time too. Usage:
//   npm run bench:linearize -- [--size-mib 1024] [--change 5] [--runs 3]
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    change: { type: 'string', default: '5' },
    runs: { type: 'string', default: '3' },
  },
});
const sizeMiB = Number(values['size-mib']);
const changePercent = Number(values.change);
const runs = Number(values.runs);
const cli = new URL('../dist/cli.js', import.meta.url).pathname;
const CLUSTER = 65536;
const MiB = 1024 * 1024;

/** Runs a shell script under GNU time; returns wall seconds and bytes written (incl. children). */
async function measured(script, cwd) {
  const result = await execa('/usr/bin/time', ['-f', '%e %O', 'bash', '-euc', script], { cwd, reject: false });
  if (result.exitCode !== 0) throw new Error(`failed: ${script}\n${result.stderr}`);
  const [seconds, blocks] = result.stderr.trim().split('\n').at(-1).split(' ').map(Number);
  return { seconds, bytes: blocks * 512 };
}

/** qemu-io commands rewriting every n-th cluster, starting at cluster `first`. */
function scatteredWrites(pattern, first) {
  const clusters = (sizeMiB * MiB) / CLUSTER;
  const every = Math.round(100 / changePercent);
  const commands = [];
  for (let c = first; c < clusters; c += every) commands.push('-c', `write -P ${pattern} ${c * CLUSTER} ${CLUSTER}`);
  return commands;
}

async function makeImage(dir) {
  const image = join(dir, 'image.qcow2');
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', image, `${sizeMiB}M`]);
  await execa('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x11 0 ${sizeMiB}M`, image]);
  await execa('qemu-img', ['snapshot', '-c', 'sn0', '--image-opts', `driver=qcow2,file.filename=${image}`]);
  await execa('qemu-io', ['-f', 'qcow2', ...scatteredWrites(0x22, 0), image]);
  await execa('qemu-img', ['snapshot', '-c', 'sn1', '--image-opts', `driver=qcow2,file.filename=${image}`]);
  await execa('qemu-io', ['-f', 'qcow2', ...scatteredWrites(0x33, 7), image]);
  return image;
}

async function ownDataBytes(file) {
  const { stdout } = await execa('qemu-img', ['map', '--output=json', '-f', 'qcow2', file]);
  return JSON.parse(stdout)
    .filter((r) => r.depth === 0 && r.data)
    .reduce((sum, r) => sum + r.length, 0);
}

const chainformRun = `node ${cli} import --linearize --out-dir out image.qcow2 -f qcow2 -o linear.yaml 2>/dev/null
node ${cli} apply linear.yaml --yes >/dev/null`;

// The RFC's two-step procedure: export every state in full, then turn each export after the
// first into a delta with the qemu-img diff emulation (overlay on it + safe rebase).
const twoStepRun = `mkdir -p naive
qemu-img convert -f qcow2 -l snapshot.name=sn0 -O qcow2 image.qcow2 naive/image_sn0.qcow2
qemu-img convert -f qcow2 -l snapshot.name=sn1 -O qcow2 image.qcow2 naive/full_sn1.qcow2
qemu-img convert -f qcow2 -O qcow2 image.qcow2 naive/full_active.qcow2
qemu-img create -q -f qcow2 -b full_sn1.qcow2 -F qcow2 naive/image_sn1.qcow2
qemu-img rebase -f qcow2 -b image_sn0.qcow2 -F qcow2 naive/image_sn1.qcow2
qemu-img create -q -f qcow2 -b full_active.qcow2 -F qcow2 naive/image.qcow2
qemu-img rebase -f qcow2 -b image_sn1.qcow2 -F qcow2 naive/image.qcow2
rm naive/full_sn1.qcow2 naive/full_active.qcow2`;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const results = { chainform: [], twoStep: [], deltaData: {} };
/** Bytes on disk of a file (its allocated blocks). */
const onDisk = async (file) => (await stat(file)).blocks * 512;
const changedBytes = Math.ceil((sizeMiB * MiB) / CLUSTER / Math.round(100 / changePercent)) * CLUSTER;
for (let run = 0; run < runs; run++) {
  const dir = await mkdtemp(join(tmpdir(), 'chainform-bench-'));
  try {
    await makeImage(dir);
    await execa('sync');
    // The bottom link is a full copy in both procedures; what differs is the delta links.
    const twoStep = await measured(twoStepRun, dir);
    results.twoStep.push({
      ...twoStep,
      deltaLinkBytes: twoStep.bytes - (await onDisk(join(dir, 'naive/image_sn0.qcow2'))),
    });
    await execa('sync');
    const chainform = await measured(chainformRun, dir);
    results.chainform.push({
      ...chainform,
      deltaLinkBytes: chainform.bytes - (await onDisk(join(dir, 'out/image_sn0.qcow2'))),
    });
    for (const link of ['image_sn1', 'image']) {
      results.deltaData[link] = await ownDataBytes(join(dir, 'out', `${link}.qcow2`));
    }
    const same = await execa(
      'qemu-img',
      ['compare', '-f', 'qcow2', '-F', 'qcow2', join(dir, 'out/image.qcow2'), join(dir, 'naive/image.qcow2')],
      { reject: false },
    );
    if (same.exitCode !== 0) throw new Error('chainform and the two-step procedure disagree on the result');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const row = (name, rs) => {
  const mib = rs.map((r) => r.bytes / MiB);
  const secs = rs.map((r) => r.seconds);
  return `${name.padEnd(12)} written ${median(mib).toFixed(1).padStart(8)} MiB (${Math.min(...mib).toFixed(1)}-${Math.max(...mib).toFixed(1)})   wall ${median(secs).toFixed(2).padStart(6)} s (${Math.min(...secs).toFixed(2)}-${Math.max(...secs).toFixed(2)})`;
};
const summary = {
  scenario: { sizeMiB, changePercent, runs, changedBytesPerSnapshot: changedBytes },
  ...results,
  ratios: {
    deltaLinkBytesWritten:
      median(results.twoStep.map((r) => r.deltaLinkBytes)) / median(results.chainform.map((r) => r.deltaLinkBytes)),
    bytesWritten: median(results.twoStep.map((r) => r.bytes)) / median(results.chainform.map((r) => r.bytes)),
    wallTime: median(results.twoStep.map((r) => r.seconds)) / median(results.chainform.map((r) => r.seconds)),
  },
};
console.log(
  `linearise: ${sizeMiB} MiB image, ${changePercent}% of clusters changed per snapshot, ${runs} runs (median, min-max)`,
);
console.log(row('two-step', results.twoStep));
console.log(row('chainform', results.chainform));
console.log(
  `ratio        bytes written ${summary.ratios.bytesWritten.toFixed(1)}x fewer, wall time ${summary.ratios.wallTime.toFixed(1)}x faster`,
);
for (const [name, rs] of [
  ['two-step', results.twoStep],
  ['chainform', results.chainform],
]) {
  console.log(
    `${name.padEnd(12)} wrote ${(median(rs.map((r) => r.deltaLinkBytes)) / MiB / 2).toFixed(1)} MiB per delta link (total minus the bottom full copy, over 2 links)`,
  );
}
console.log(`ratio        delta links: ${summary.ratios.deltaLinkBytesWritten.toFixed(1)}x fewer bytes written`);
for (const [link, bytes] of Object.entries(results.deltaData)) {
  console.log(
    `delta link ${link}: stores ${(bytes / MiB).toFixed(1)} MiB of data for ${(changedBytes / MiB).toFixed(1)} MiB changed (${(bytes / changedBytes).toFixed(2)}x)`,
  );
}
await mkdir('bench-results', { recursive: true });
await writeFile('bench-results/linearize.json', `${JSON.stringify(summary, null, 2)}\n`);
