// Scenario: the fixed cost of a chainform command, split into its parts. A one-image plan is
// timed next to Node's own start, `chainform --version` (Node plus loading the command's bundle),
// `validate` (plus reading and checking the manifest) and the qemu-img processes the plan runs,
// run alone from sh. Every run is a fresh process; the variants take turns, in a rotated order
// per round, so a slow moment of the machine falls on all of them alike. This is the floor
// under the apply-overhead figures: what chainform spends around the qemu-img work of any job.
// chainform runs as a user runs it, through bin/chainform, which starts Node without
// NODE_EXTRA_CA_CERTS (Node parses that file at every start); Node's start is timed both with
// the environment as it is and without that variable, and the parts are taken against the latter.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { emptyOverlay, filledImage, scatterWrites } from '../lib/images.mjs';
import { convertKeepingBacking } from '../lib/manifests.mjs';
import { shellLine } from '../lib/shell.mjs';
import { processMilliseconds, spread } from '../lib/stats.mjs';

export const name = 'startup';
export const title = "Start-up: the fixed cost of a command, next to Node's start and the plan's qemu-img work";

/** Small inputs: the cost measured here does not depend on the image size. */
const SIZE_MIB = 64;
/** Rounds at least, whatever --runs says: each variant takes a few hundred milliseconds. */
const MIN_ROUNDS = 15;
/** Node's start as bin/chainform starts it. */
const NODE_FLOOR = 'node -e 0, NODE_EXTRA_CA_CERTS unset';

export async function run({ runs, cli, chainform, workdir, log }) {
  const base = join(workdir, 'base.qcow2');
  const disk = join(workdir, 'disk.qcow2');
  log(`making a ${SIZE_MIB} MiB qcow2 base and an overlay`);
  await filledImage(base, 'qcow2', SIZE_MIB, 0x11);
  await emptyOverlay(disk, base, 'qcow2', ['-o', 'compat=0.10']);
  await scatterWrites(disk, 'qcow2', { sizeMiB: SIZE_MIB, percent: 10, first: 0, pattern: 0x22 });
  const dir = join(workdir, 'job');
  await mkdir(dir);
  await writeFile(join(dir, 'm.yaml'), convertKeepingBacking({ disk, base, options: '{ compat: "1.1" }' }));
  // The qemu-img processes `plan` runs: one chain probe, and the measure of its convert step.
  const planned = JSON.parse((await execa(process.execPath, [cli, 'plan', 'm.yaml', '--json'], { cwd: dir })).stdout);
  const measures = planned.steps.filter((s) => s.measure).map((s) => s.measure);
  const { chainInfoCommand } = await import(pathToFileURL(join(dirname(cli), 'qemu', 'commands.js')).href);
  const probe = chainInfoCommand(disk, 'qcow2');
  const qemuWork = [probe, ...measures].map(shellLine).join(' >/dev/null && ');

  const caCerts = process.env.NODE_EXTRA_CA_CERTS;
  const variants = {
    'node -e 0': [process.execPath, '-e', '0'],
    [NODE_FLOOR]: ['env', '-u', 'NODE_EXTRA_CA_CERTS', process.execPath, '-e', '0'],
    'chainform --version': [chainform, '--version'],
    'chainform validate (1 image)': [chainform, 'validate', 'm.yaml'],
    'chainform plan (1 image, 1 convert)': [chainform, 'plan', 'm.yaml'],
    "the plan's qemu-img processes, from sh": ['sh', '-c', `${qemuWork} >/dev/null`],
  };
  const names = Object.keys(variants);
  const samples = Object.fromEntries(names.map((n) => [n, []]));
  const rounds = Math.max(runs, MIN_ROUNDS);
  log(`${rounds} rounds of ${names.length} variants`);
  for (let r = 0; r < rounds; r++) {
    const order = [...names.slice(r % names.length), ...names.slice(0, r % names.length)];
    for (const variant of order) samples[variant].push(await processMilliseconds(variants[variant], dir));
  }

  // Differences are taken within each round (the variants ran back to back), then summarised.
  const perRound = (f) => spread(samples['node -e 0'].map((_, r) => f((variant) => samples[variant][r])));
  const parts = {
    extraCaCerts: perRound((at) => at('node -e 0') - at(NODE_FLOOR)),
    bundleLoad: perRound((at) => at('chainform --version') - at(NODE_FLOOR)),
    manifestRead: perRound((at) => at('chainform validate (1 image)') - at('chainform --version')),
    planOwn: perRound(
      (at) => at('chainform plan (1 image, 1 convert)') - at(NODE_FLOOR) - at("the plan's qemu-img processes, from sh"),
    ),
  };
  const ms = (s) => `${s.median.toFixed(0)} ms (${s.min.toFixed(0)} to ${s.max.toFixed(0)})`;
  const rows = names.map((variant) => ({
    variant,
    wallSeconds: spread(samples[variant].map((m) => m / 1000)),
    wallDigits: 3,
  }));
  return {
    rows,
    notes: [
      `${rounds} rounds; each variant a fresh process, timed spawn to exit; the parts below are differences within a round, median (min to max)`,
      caCerts
        ? `NODE_EXTRA_CA_CERTS is set here (${caCerts}): Node's start with it, minus without it: ${ms(parts.extraCaCerts)}; bin/chainform unsets it`
        : 'NODE_EXTRA_CA_CERTS is not set here: both node -e 0 rows start Node alike',
      `loading the bundle (--version minus node -e 0 without NODE_EXTRA_CA_CERTS; the launcher's sh and readlink included): ${ms(parts.bundleLoad)}`,
      `reading and checking a one-image manifest (validate minus --version): ${ms(parts.manifestRead)}`,
      `chainform's own time in plan (plan minus node -e 0 without NODE_EXTRA_CA_CERTS, minus the qemu-img processes; loading the bundle included): ${ms(parts.planOwn)}`,
      `qemu-img work: ${[probe, ...measures].map((argv) => argv.slice(0, 2).join(' ')).join(', ')}`,
    ],
    raw: { samplesMs: samples, partsMs: parts, qemuWork },
  };
}
